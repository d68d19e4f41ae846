"""A real single-node Slurm cluster for the tests: slurmctld, slurmd and munged on this host.

`slurm` (a session fixture, registered in tests/conftest.py) starts it with the project's own
tests/slurm/start-local-slurm.sh (which installs Debian's slurm-wlm and munge when they are
missing) and stops it with tests/slurm/stop-local-slurm.sh at the end of the session. A cluster
that already answered before the session is used as it is and left running.

Tests that need Slurm are skipped, with the reason, only where it cannot be installed or started
(not root and not installed); under CI (CI=true) they fail instead.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent / "slurm"
#: The start script's pid file: "name pid" lines, read by its stop script.
PIDFILE = Path(os.environ.get("LOCAL_SLURM_PIDFILE", "/run/local-slurm/pids"))
CONTROLLER_PIDFILE = Path("/run/slurm/slurmctld.pid")
#: Pretend CPUs, so that several test jobs run at once on a 2-core machine.
CPUS = "8"
START_TIMEOUT = 600.0  # includes the apt-get install on a fresh machine


def answers() -> bool:
    """The controller answers, so jobs can be submitted."""
    if shutil.which("scontrol") is None:
        return False
    try:
        result = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0 and " is UP" in result.stdout


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Slurm is needed in CI: {reason}")
    pytest.skip(reason)


def _script(name: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPTS / name)], capture_output=True, text=True, timeout=START_TIMEOUT,
                          env={**os.environ, "LOCAL_SLURM_CPUS": CPUS}, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def slurm():
    if answers():
        yield
        return
    if os.geteuid() != 0:
        _unavailable("no Slurm controller answers, and starting the local test cluster (and installing "
                     "slurm-wlm and munge) needs root: run tests/slurm/start-local-slurm.sh as root first")
    started = _script("start-local-slurm.sh")
    if started.returncode != 0:
        _unavailable(f"tests/slurm/start-local-slurm.sh failed:\n{started.stderr[-3000:]}")
    try:
        yield
    finally:
        stopped = _script("stop-local-slurm.sh")
        assert stopped.returncode == 0, stopped.stderr[-3000:]


def _controller_pid() -> int | None:
    try:
        return int(CONTROLLER_PIDFILE.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] not in "ZX"
    except (OSError, IndexError):
        return False


def stop_controller(timeout: float = 20.0) -> None:
    """Stop slurmctld alone (SIGTERM, it saves its state); slurmd and the jobs stay."""
    pid = _controller_pid()
    assert pid and _alive(pid), "no slurmctld to stop"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"slurmctld {pid} did not stop within {timeout} s"
        time.sleep(0.05)


def start_controller(timeout: float = 30.0) -> None:
    """Start slurmctld again with its saved state, and record its new pid for the stop script."""
    subprocess.run(["/usr/sbin/slurmctld"], check=True, timeout=timeout, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not answers():
        assert time.monotonic() < deadline, f"slurmctld did not answer within {timeout} s of its start"
        time.sleep(0.1)
    pid = _controller_pid()
    if PIDFILE.exists():
        lines = [line for line in PIDFILE.read_text().splitlines() if not line.startswith("slurmctld ")]
        PIDFILE.write_text("\n".join([*lines, f"slurmctld {pid}"]) + "\n")
