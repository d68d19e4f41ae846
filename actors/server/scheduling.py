"""Pure scheduling decisions: who is admitted next, which executor gets a job, what has expired.

Plain functions on plain data, with `now` passed in, so they are tested without actors or clocks.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Hashable, Iterable, Mapping, Sequence, TypeVar

from storage.fair_share import User, user_order

#: Whatever names a group of users (a course, a project): (portal, group), since portals name theirs.
Group = TypeVar("Group", bound=Hashable)


def admit(candidates: Sequence[tuple[User, Sequence[int]]], active_by_user: Mapping[User, int],
          active_total: int, runs_per_user: int, limit: int,
          last_turn: Mapping[User, int], *, scores: Mapping[User, float] | None = None,
          group_of: Mapping[int, Group] | None = None, active_by_group: Mapping[Group, int] | None = None,
          runs_per_group: int | None = None) -> list[tuple[User, int]]:
    """Choose which queued jobs may start now: one job per user per round, users in `user_order`.

    Args:
        candidates: per waiting user, their next jobs in the order they should start (the queue
            sorts them with `queue_order`).
        active_by_user: jobs each user has active (dispatching, submitted or running).
        active_total: jobs active in the service overall.
        runs_per_user: at most this many active jobs per user.
        limit: at most this many active jobs in the service (max_runs, capped by capacity).
        last_turn: per user, when they were last admitted (higher is more recent; absent is never).
        scores: fair share: per user, `fair_share_score` (absent: round-robin, by last_turn).
        group_of: the group of each job that has one.
        active_by_group: jobs each group has active.
        runs_per_group: at most this many active jobs per group (None: no cap).

    Returns:
        (user, job_id) pairs in admission order. A user with many queued jobs never holds back one
        with few; a job whose group is at its cap is passed over for its user's next one.
    """
    order = user_order(candidates, last_turn, scores)
    group_of = group_of or {}
    in_group = dict(active_by_group or {})
    granted: list[tuple[User, int]] = []
    taken: dict[User, list[int]] = {user: [] for user, _ in order}
    room = limit - active_total
    progress = True
    while room > 0 and progress:
        progress = False
        for user, jobs in order:
            if room <= 0:
                break
            if active_by_user.get(user, 0) + len(taken[user]) >= runs_per_user:
                continue
            job_id = _next_job(jobs, taken[user], group_of, in_group, runs_per_group)
            if job_id is None:
                continue
            group = group_of.get(job_id)
            if group is not None:
                in_group[group] = in_group.get(group, 0) + 1
            granted.append((user, job_id))
            taken[user].append(job_id)
            room -= 1
            progress = True
    return granted


def _next_job(jobs: Sequence[int], taken: list[int], group_of: Mapping[int, Group], in_group: Mapping[Group, int],
              runs_per_group: int | None) -> int | None:
    """The user's first job not yet taken whose group (if any) is under its cap."""
    for job_id in jobs:
        if job_id in taken:
            continue
        group = group_of.get(job_id)
        if runs_per_group is None or group is None or in_group.get(group, 0) < runs_per_group:
            return job_id
    return None


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
