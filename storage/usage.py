"""Fair-share usage per (service, user): the slot time of ended jobs, decayed, kept in the database so
it survives restarts.

A job's end writes a `UsageCharge` in the transaction of the move (storage.models.Job.changed), so no
run is counted twice or lost whatever crashes. The QuotaActor (the server's quota process) `fold`s
the charges into one `Usage` row per user, decayed with the service's half-life, and deletes them in
the same transaction; it and the job view and the overview (web threads: the rank of a queued job,
the top users) read the totals with `usage_by_user`, which counts the charges not yet folded too
(`usage_now` adds the active jobs' run so far).
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Callable, Mapping, Sequence

from pony.orm import db_session, delete, select

from storage.clock import epoch
from storage.fair_share import accrue, current_usage, decayed
from storage.columns import stored_time
from storage.models import Job, Usage, UsageCharge, db
from storage.states import ACTIVE

UserKey = tuple[str | None, int]
#: Charges folded in one transaction at most (a backlog after a long stop is folded over several calls).
FOLD_BATCH = 5_000
#: A usage row not touched for this many half-lives is worth less than a millionth of what it was:
#: it is deleted, so the table holds the users of the last few weeks, not of all time.
FORGET_AFTER_HALF_LIVES = 20


@db_session
def fold(half_life_of: Callable[[str], float], now: datetime) -> int:
    """Fold the pending charges into their users' `Usage` rows (oldest first), delete them, and
    forget the rows that decayed to nothing. `half_life_of(service)` is in seconds.

    Returns:
        how many charges were folded.
    """
    charges = select(c for c in UsageCharge).order_by(UsageCharge.id)[:FOLD_BATCH]
    rows: dict[tuple[str, str | None, int], Usage] = {}
    for charge in charges:
        key = (charge.service, charge.portal, charge.user_id)
        row = rows.get(key) or Usage.get(service=charge.service, portal=charge.portal, user_id=charge.user_id)
        if row is None:
            row = Usage(service=charge.service, portal=charge.portal, user_id=charge.user_id, slot_seconds=0.0,
                        as_of=charge.at)
        half_life = half_life_of(charge.service)
        row.slot_seconds = accrue(row.slot_seconds, epoch(row.as_of), charge.slot_seconds, epoch(charge.at),
                                  half_life)
        row.as_of = max(row.as_of, charge.at)
        rows[key] = row
        charge.delete()
    for service in set(select(u.service for u in Usage)):
        cutoff = now - timedelta(seconds=FORGET_AFTER_HALF_LIVES * half_life_of(service))
        delete(u for u in Usage if u.service == service and u.as_of < cutoff)
    return len(charges)


@db_session
def usage_by_user(service: str, half_life: float, now: datetime) -> dict[UserKey, float]:
    """Each user's usage of `service` at `now`, in slot-seconds: their folded total and the charges
    not yet folded, both decayed to `now` (users with none are absent).

    NOTE: raw rows, whose times are parsed here: Pony's parsing of a thousand users' times costs more
    (40 ms) than the rest of a waiting job's view (storage/queue_view.py). One statement over both
    tables, so a fold committed meanwhile cannot hide a charge (or count it twice)."""
    totals: dict[UserKey, float] = defaultdict(float)
    moment = epoch(now)
    for portal, user_id, slot_seconds, at in db.select(
            f"SELECT portal, user_id, slot_seconds, as_of FROM {Usage._table_} WHERE service = $service "
            f"UNION ALL SELECT portal, user_id, slot_seconds, at FROM {UsageCharge._table_} WHERE service = $service"):
        totals[(portal, user_id)] += decayed(slot_seconds, moment - epoch(stored_time(at)), half_life)
    return dict(totals)


def admissions(service: str) -> tuple[dict[UserKey, int], dict[UserKey, list[datetime]]]:
    """Of `service`'s active jobs (inside the caller's db_session): how many each user has, and
    when each of theirs was admitted (their run so far, for `usage_now`). Active jobs are few
    (bounded by the slots): counted here, for a GROUP BY makes SQLite walk the service's history."""
    active: dict[UserKey, int] = {}
    since: dict[UserKey, list[datetime]] = {}
    states = [state.value for state in ACTIVE]
    for owner, user_id, when in select((j.portal, j.user_id, j.dispatched_at) for j in Job
                                       if j.service == service and j.state in states).without_distinct():
        active[owner, user_id] = active.get((owner, user_id), 0) + 1
        if when is not None:
            since.setdefault((owner, user_id), []).append(when)
    return active, since


def usage_now(service: str, half_life: float, now: datetime,
              running_since: Mapping[UserKey, Sequence[datetime]]) -> dict[UserKey, float]:
    """Each user's usage at `now` as the quota scores it (`current_usage`): their decayed usage
    (`usage_by_user`) plus what their active jobs, admitted at `running_since`, have run so far."""
    stored, moment = usage_by_user(service, half_life, now), epoch(now)
    return {user: current_usage(stored.get(user, 0.0), moment, [epoch(t) for t in running_since.get(user, ())],
                                moment, half_life) for user in stored.keys() | running_since.keys()}
