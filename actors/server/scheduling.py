"""Pure scheduling decisions: who is admitted next, which executor gets a job, what has expired.

Plain functions on plain data, with `now` passed in, so they are tested without actors or clocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Hashable, Iterable, Mapping, Sequence, TypeVar

#: Whatever names a user; the quota uses (portal, user_id), since portals number users independently.
User = TypeVar("User", bound=Hashable)


def admit(candidates: Sequence[tuple[User, Sequence[int]]], active_by_user: Mapping[User, int],
          active_total: int, runs_per_user: int, limit: int,
          last_turn: Mapping[User, int]) -> list[tuple[User, int]]:
    """Choose which queued jobs may start now, round-robin across users.

    Args:
        candidates: per waiting user, their next job ids in the order they were queued.
        active_by_user: jobs each user has active (dispatching, submitted or running).
        active_total: jobs active in the service overall.
        runs_per_user: at most this many active jobs per user.
        limit: at most this many active jobs in the service (max_runs, capped by capacity).
        last_turn: per user, when they were last admitted (higher is more recent; absent is never).

    Returns:
        (user, job_id) pairs in admission order. Users are served one job per round, the one
        served longest ago first, so a user with many queued jobs never holds back one with few;
        within a user, jobs go first-in first-out.
    """
    order = sorted(candidates, key=lambda item: (last_turn.get(item[0], -1), item[1][0] if item[1] else 0))
    granted: list[tuple[User, int]] = []
    taken = {user: 0 for user, _ in order}
    room = limit - active_total
    progress = True
    while room > 0 and progress:
        progress = False
        for user, jobs in order:
            if room <= 0:
                break
            if taken[user] < len(jobs) and active_by_user.get(user, 0) + taken[user] < runs_per_user:
                granted.append((user, jobs[taken[user]]))
                taken[user] += 1
                room -= 1
                progress = True
    return granted


@dataclass
class KnownExecutor:
    """What a dispatcher knows of one executor."""

    url: str
    slots: int = 0
    in_flight: int = 0
    reachable: bool = False
    #: It finishes what it has and takes nothing new.
    draining: bool = False
    #: Dispatch counter value of the last job sent here; spreads ties.
    last_used: int = 0
    #: What the server says of it (actors/server/executor_states.py).
    state: str = "unknown"
    #: Why it could not be reached, last time it could not.
    error: str | None = None
    #: How it runs jobs ("local", "slurm"), once a probe asked.
    backend: str | None = None
    #: Its overflow tier (`[client] tier`): a service fills tier 1 first, then 2, ...
    tier: int = 1

    @property
    def usable(self) -> bool:
        return self.reachable and not self.draining

    @property
    def free(self) -> int:
        return self.slots - self.in_flight if self.usable else 0


def choose_executor(executors: Iterable[KnownExecutor]) -> KnownExecutor | None:
    """The usable executor with a free slot in the lowest tier; within that tier, the one with the
    most free slots, and among equals the one used longest ago.

    So a job overflows to tier 2 only while no usable tier-1 executor has a free slot (full,
    draining or unreachable ones have none), and comes back to tier 1 as soon as one frees.
    """
    best, best_rank = None, None
    for candidate in executors:
        free = candidate.free
        if free <= 0:
            continue
        rank = (candidate.tier, -free, candidate.last_used)  # lower is preferred
        if best is None or rank < best_rank:
            best, best_rank = candidate, rank
    return best


def is_lost(last_seen: float, now: float, timeout: float) -> bool:
    """An executor not heard from (heartbeat, probe or answer) for longer than `timeout` is lost."""
    return now - last_seen > timeout


def expiry_cutoffs(services: Iterable[str], retention_seconds, now: datetime) -> dict[str, datetime]:
    """Per service, the finish time before which a job's results are due for deletion."""
    return {name: now - timedelta(seconds=retention_seconds(name)) for name in services}
