"""Helpers of the Slurm end-to-end tests: executors with backend = slurm, and their tasks' Slurm jobs."""
from __future__ import annotations

import subprocess
import time

from tests.harness import Cluster, Node

#: Fast polling, so that the tests do not wait on the default 2 s.
POLL_INTERVAL = 0.5


def slurm_executor(cluster: Cluster, service: str, server: Node, max_jobs: int = 4, **extra) -> Node:
    return cluster.executor(service, server_port=server.port, backend="slurm", max_jobs=max_jobs,
                            poll_interval=POLL_INTERVAL, **extra)


def task_of(executor: Node, job_id: int) -> dict | None:
    """The executor's newest task for that server job."""
    return next((task for task in reversed(executor.tasks()) if task["job_id"] == job_id), None)


def slurm_state(slurm_id: str) -> str:
    result = subprocess.run(["squeue", "-h", "-t", "all", "-j", slurm_id, "-o", "%T"], capture_output=True,
                            text=True, timeout=20)
    return result.stdout.strip()


def cancel_slurm_jobs() -> None:
    """Cancel the Slurm jobs of orchestrator executors (named orch-<job uid>-<attempt>) and wait until
    their processes are gone."""
    listed = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, timeout=20).stdout
    ours = [line.split()[0] for line in listed.splitlines() if line.split()[1:2] and line.split()[1].startswith("orch-")]
    if ours:
        subprocess.run(["scancel", *ours], timeout=20, check=False)
    deadline = time.monotonic() + 30
    while ours and time.monotonic() < deadline:
        states = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(ours), "-o", "%T"],
                                capture_output=True, text=True, timeout=20).stdout.split()
        if all(state not in ("RUNNING", "COMPLETING", "PENDING", "CONFIGURING") for state in states):
            return
        time.sleep(0.1)
