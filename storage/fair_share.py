"""Fair share and priorities as pure functions: a user's decayed usage, their score, the order users
are served in, and the order of a user's own queued jobs.

Shared by the quota (actors/server/quota.py, the admission itself) and the job view (the rank shown
on a queued job, storage/queue_view.py), so both take the same decision. `now` is passed in; usage
is in slot-seconds and times in seconds.
"""
from __future__ import annotations

import re
from typing import Hashable, Iterable, Mapping, Sequence, TypeVar

#: Whatever names a user; the quota uses (portal, user_id), since portals number users independently.
User = TypeVar("User", bound=Hashable)

#: Priorities a job may be given at upload; they order only its own user's queued jobs.
PRIORITIES = range(-10, 11)
#: A job's `group` (upload field, list filter): a portal's label of 1 to 64 of these characters.
GROUP = re.compile(r"[A-Za-z0-9._-]{1,64}")
GROUP_RULE = "1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'"
#: Fair share: slot-seconds of a user's usage that each second their next queued job has waited
#: makes up for, so that a job never waits forever behind newcomers with less usage.
AGE_CREDIT = 1.0


def queue_order(priority: int | None, job_id: int) -> tuple[int, int]:
    """Sort key of a user's queued jobs: higher priority first, first-in first-out among equals."""
    return -(priority or 0), job_id


def decayed(usage: float, elapsed: float, half_life: float) -> float:
    """`usage` (slot-seconds) after `elapsed` seconds of halving every `half_life` seconds."""
    if usage <= 0 or elapsed <= 0:
        return max(usage, 0.0)
    return usage * 0.5 ** (elapsed / half_life)


def accrue(usage: float, as_of: float, slot_seconds: float, now: float, half_life: float) -> float:
    """A user's stored usage at `now` after a job that ran `slot_seconds` ended (usage stored at `as_of`)."""
    return decayed(usage, now - as_of, half_life) + max(slot_seconds, 0.0)


def current_usage(stored: float, stored_at: float, running_since: Iterable[float], now: float,
                  half_life: float) -> float:
    """A user's usage at `now`: the stored, decayed usage of their ended jobs plus what their active
    jobs have run so far (so a user's running jobs count before they end)."""
    return decayed(stored, now - stored_at, half_life) + sum(max(now - since, 0.0) for since in running_since)


def fair_share_score(usage: float, share: float, waited: float) -> float:
    """Lower goes first: usage per share, less AGE_CREDIT for each second the user's job has waited."""
    return usage / share - AGE_CREDIT * max(waited, 0.0)


def user_score(stored: float, stored_at: float, running_since: Iterable[float], share: float, waiting_since: float,
               now: float, half_life: float) -> float:
    """A waiting user's `fair_share_score` at `now`: their `current_usage` (stored usage as of
    `stored_at`, and their active jobs' run so far), their portal's share, and how long their next
    job has waited (queued at `waiting_since`). The quota admits by it; the simulation too."""
    usage = current_usage(stored, stored_at, running_since, now, half_life)
    return fair_share_score(usage, share, now - waiting_since)


def user_order(candidates: Sequence[tuple[User, Sequence[int]]], last_turn: Mapping[User, int],
               scores: Mapping[User, float] | None = None) -> list[tuple[User, Sequence[int]]]:
    """The order users are served in: by fair-share score when `scores` are given (lowest first),
    then the one served longest ago (absent from `last_turn`: never), then the one whose next job is older."""
    scores = scores or {}
    return sorted(candidates, key=lambda item: (scores.get(item[0], 0.0), last_turn.get(item[0], -1),
                                                item[1][0] if item[1] else 0))
