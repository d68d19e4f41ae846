"""Telling a process apart from a later one with the same pid. Used in every process of a node
(the main process's watchdog, the actor system's lifeline, the executor's task bookkeeping)."""
from __future__ import annotations


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (None if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
