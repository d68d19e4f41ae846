"""Pytest fixtures: a `cluster` of real nodes per test (or per module), checked for leftovers.

Tests import their helpers from tests/harness.py (the benchmarks use them too), never from here.
"""
from __future__ import annotations

import pytest

from tests.harness import Cluster, bind_server_database, bind_node_database, small_disk
from tests.slurm_cluster import slurm  # noqa: F401 — the session's Slurm cluster, for the tests that need it


#: Fixtures that start real server, executor or Slurm processes.
NODE_FIXTURES = {"cluster", "module_cluster", "slurm"}


def pytest_configure(config):
    config.addinivalue_line("markers", "processes: starts real processes (nodes, Slurm, PostgreSQL, "
                                       "bubblewrap); `make test-fast` leaves these out")
    config.addinivalue_line("markers", "slow: starts no process but takes seconds (zips of gigabytes or "
                                       "tens of thousands of files); `make test-fast` leaves these out")


def pytest_collection_modifyitems(config, items):
    """A test that starts processes is marked `processes`: through the node fixtures, or because
    its module says so (`pytestmark`)."""
    for item in items:
        if NODE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.processes)


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist (`make test` runs two workers), a module's tests stay in one worker, in
    order (some share a module's cluster), and so do all the modules that use the one Slurm cluster
    (a module's teardown cancels its Slurm jobs). xdist's own `loadgroup` cannot do it under pytest 9
    (it renames node ids, which pytest 9 no longer reads back)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "slurm" if "slurm" in module else module

        def _assign_work_unit(self, node) -> None:
            # NOTE: the Slurm modules take the longest (a job over its time limit alone waits a
            # minute): first, so that they do not run alone at the end.
            if "slurm" in self.workqueue:
                self.workqueue.move_to_end("slurm", last=False)
            super()._assign_work_unit(node)

    return ByModule(config, log)


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


# --- the databases, on temporary SQLite files (Pony binds each `db` once per test process) -------

@pytest.fixture(scope="session")
def database_file(tmp_path_factory) -> str:
    """The server's entities (storage.models) bound to this test process's temp SQLite file."""
    return bind_server_database(str(tmp_path_factory.mktemp("server-db") / "orchestrator.sqlite"))


@pytest.fixture
def clean_database(database_file) -> str:
    """The server's tables, emptied for this test."""
    from pony.orm import db_session, delete

    from storage.models import Executor, Job, JobChange, TesTag, TesTask, Usage, UsageCharge, WebhookDelivery
    with db_session:
        delete(t for t in TesTask)
        delete(t for t in TesTag)
        delete(u for u in Usage)
        delete(c for c in UsageCharge)
        delete(d for d in WebhookDelivery)
        delete(c for c in JobChange)
        delete(j for j in Job)
        delete(e for e in Executor)
    return database_file


@pytest.fixture(scope="session")
def node_database_file(tmp_path_factory) -> str:
    """An executor node's task table (storage.node.models) bound to a temp SQLite file."""
    return bind_node_database(str(tmp_path_factory.mktemp("node-db") / "executor.sqlite"))


@pytest.fixture
def clean_node_database(node_database_file) -> str:
    """The node's task table, emptied for this test."""
    from pony.orm import db_session, delete

    from storage.node.models import Task
    with db_session:
        delete(t for t in Task)
    return node_database_file
