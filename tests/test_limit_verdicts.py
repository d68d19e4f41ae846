"""Which limit a job ran into, from what was measured; and the rlimits that hold a job where the node
has no cgroups, run for real as an unprivileged user. No server or executor processes."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from actors.node.job_limits import MB, Usage, folder_bytes, verdict
from actors.node.sandbox import FILE_TOO_LARGE_EXIT, Wrapping, environment
from conf.settings import ClientConfig

CONFIG = ClientConfig(max_memory_mb=64, max_processes=32, max_output_mb=5, max_open_files=32)


@pytest.mark.parametrize("usage, words", [
    (Usage(137, oom_kills=1, refused_forks=0), "memory limit exceeded (max_memory_mb = 64)"),
    (Usage(0, oom_kills=2, refused_forks=0), "memory limit exceeded"),  # a killed child, the script went on
    (Usage(0, oom_kills=0, refused_forks=0, output_bytes=6 * MB), "output limit exceeded (max_output_mb = 5)"),
    (Usage(FILE_TOO_LARGE_EXIT, oom_kills=0, refused_forks=0), "output limit exceeded"),
    (Usage(2, oom_kills=0, refused_forks=3), "process limit reached (max_processes = 32)"),
    (Usage(2, stderr_tail="sh: 1: Cannot fork"), "process limit reached"),          # rlimits: taken at its word
    (Usage(1, stderr_tail="x: Too many open files"), "open-file limit reached (max_open_files = 32 per process)"),
    (Usage(1, stderr_tail="tail: memory exhausted\nMemoryError"), "memory limit reached (max_memory_mb = 64 per"),
    (Usage(9, disk_full=True, output_bytes=30 * MB), "the node's disk for jobs filled up"),
    (Usage(1, ended_on_full_disk=True, output_bytes=3 * MB), "the node's disk for jobs was full when the job ended"),
])
def test_a_job_over_a_limit_gets_a_reason_naming_the_limit(usage, words):
    assert words in verdict(CONFIG, usage)


@pytest.mark.parametrize("usage", [
    Usage(0, oom_kills=0, refused_forks=0, output_bytes=5 * MB),     # at the limit, not over it
    Usage(0, oom_kills=0, refused_forks=4),                          # a refused fork it survived
    Usage(1, oom_kills=0, refused_forks=0, stderr_tail="Cannot allocate memory"),  # the cgroup says no OOM
    Usage(0, stderr_tail="Too many open files"),                     # it coped and exited 0
    Usage(1, stderr_tail="plain failure"),
    Usage(0, ended_on_full_disk=True),                               # it succeeded all the same
])
def test_a_job_within_its_limits_gets_no_limit_reason(usage):
    assert verdict(CONFIG, usage) is None


def test_a_node_without_a_memory_limit_names_the_nodes_share(tmp_path):
    assert "the node's memory for jobs" in verdict(replace(CONFIG, max_memory_mb=None), Usage(137, oom_kills=1))


def test_a_folders_size_counts_regular_files_and_never_follows_links(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b").write_bytes(b"y" * 24)
    (tmp_path / "link").symlink_to("/usr/bin")
    os.mkfifo(tmp_path / "fifo")
    with open(tmp_path / "sparse", "wb") as handle:
        handle.truncate(10 * MB)  # what its zip would hold

    assert folder_bytes(str(tmp_path)) == 1024 + 10 * MB


@pytest.fixture
def nobodys_folder():
    """A job folder user nobody owns and can reach (pytest's own temporary folders are private)."""
    parent = Path(tempfile.mkdtemp(prefix="orchestrator-nobody-"))
    os.chmod(parent, 0o755)
    folder = parent / "job"
    folder.mkdir()
    shutil.chown(folder, "nobody")
    yield folder
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("bwrap") is None, reason="needs root (to become nobody) and bwrap")
@pytest.mark.processes
def test_without_cgroups_rlimits_hold_a_jobs_processes_and_memory(nobodys_folder):
    folder = nobodys_folder
    config = replace(CONFIG, data_dir=str(folder.parent / "data"))
    wrapping = Wrapping("bwrap", shutil.which("prlimit"), shutil.which("bwrap"), own_user_namespace=True)

    def run(script: str) -> subprocess.CompletedProcess:
        (folder / "run.sh").write_text(script)
        command = wrapping.command(config, str(folder))  # no cgroup: the rlimit fallbacks
        return subprocess.run([shutil.which("runuser"), "-u", "nobody", "--", *command], cwd=folder, env=environment(config, str(folder)),
                              capture_output=True, text=True, timeout=60)

    forks = run("sh -c 'for i in $(seq 100); do sleep 5 & done; wait'")
    memory = run("set -o pipefail\nhead -c 400M /dev/zero | tail -n 1 > /dev/null")

    assert "process limit reached" in (verdict(config, Usage(forks.returncode, stderr_tail=forks.stderr)) or ""), forks
    assert "memory limit reached" in (verdict(config, Usage(memory.returncode, stderr_tail=memory.stderr)) or ""), memory
