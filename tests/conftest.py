"""Pytest fixtures: a `cluster` of real nodes per test (or per module), checked for leftovers.

The helpers themselves live in tests/harness.py (the benchmarks use them too).
"""
from __future__ import annotations

import pytest

from tests.harness import *  # noqa: F401,F403 — the helpers tests import from here
from tests.harness import Cluster, small_disk
from tests.slurm_cluster import slurm  # noqa: F401 — the session's Slurm cluster, for the tests that need it


def pytest_collection_modifyitems(config, items):
    """With pytest-xdist (`make test` runs two workers, `--dist loadgroup`), a module's tests stay in
    one worker, in order (some share a module's cluster), and every test of the one Slurm cluster
    in the same worker."""
    for item in items:
        group = "slurm" if "slurm" in getattr(item, "fixturenames", ()) else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def cluster(tmp_path):
    nodes = Cluster(tmp_path)
    yield nodes
    leaked = nodes.close()
    assert not leaked, f"processes left behind by {leaked}"


@pytest.fixture
def eight_mb_disk(tmp_path):
    """A small disk (tmpfs; mounting needs root: skipped otherwise, failed under CI)."""
    with small_disk(tmp_path / "small-disk", 8) as disk:
        yield disk


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory):
    """One cluster shared by a module's tests, for tests that only read or are refused."""
    nodes = Cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    leaked = nodes.close()
    assert not leaked, f"processes left behind by {leaked}"
