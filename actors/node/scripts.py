"""Finding and stopping a task's processes, and reading what its script said. Runs in an executor
node's ExecutorActor.

Each job has its own session (so its own process group, actors/node/launchers.py): its sandbox
(bubblewrap, or unshare) heads the group, and killing the group kills it, whose PID namespace takes
every process of the job with it.
"""
from __future__ import annotations

import os
import signal

from actors.runtime.processes import start_time

STDERR_TAIL_BYTES = 4000


def kill_group(pgid: int, sig: int = signal.SIGKILL, started: int | None = None) -> None:
    """Signal a script's process group; with `started`, only if its leader is still that process."""
    if started is not None and start_time(pgid) != started:
        return  # the leader is gone, or the pid now belongs to someone else
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def exit_code(returncode: int) -> int:
    """A script killed by signal N reports 128+N, as a shell would."""
    return returncode if returncode >= 0 else 128 - returncode


def stderr_tail(folder: str) -> str:
    try:
        with open(os.path.join(folder, "stderr.log"), "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - STDERR_TAIL_BYTES))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
