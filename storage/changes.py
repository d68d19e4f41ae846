"""The change feed: every job state change, in the order stored (`JobChange`, written by
`Job.changed` in the transaction of the change), read by `GET /events` and pruned by the janitor.

Runs in the server's main process (the feed's reads) and in its janitor actor (`prune`). A cursor
is opaque to portals: `encode`/`decode` turn an entry's number into it and back.
"""
from __future__ import annotations

import re
from datetime import datetime

from pony.orm import db_session, select

from storage.jobs import EVERY_PORTAL
from storage.models import Job, JobChange, WebhookDelivery

#: What a cursor looks like: `c` and an entry's number (18 digits at most, no leading zero). Opaque to
#: portals all the same: they pass back what they were given.
PATTERN = re.compile(r"^c(0|[1-9][0-9]{0,17})$")
#: Entries deleted per statement, so that a prune never holds SQLite's write lock for long.
PRUNE_BATCH = 5000


def encode(seq: int) -> str:
    """The cursor that names the change feed's position just after entry `seq` (0: its start)."""
    return f"c{seq}"


def decode(cursor: str) -> int:
    """The entry number a cursor names; ValueError when it is not one this server gives."""
    match = PATTERN.match(cursor)
    if match is None:
        raise ValueError(cursor)
    return int(match.group(1))


@db_session
def since(after: int, portal: str | None, limit: int) -> tuple[list[dict], int]:
    """The entries after entry `after` that `portal` may see (an operator, EVERY_PORTAL: all),
    oldest first, at most `limit`, each with its job's view as it is now; and the number of the
    last one returned (`after` when none)."""
    entries = select(c for c in JobChange if c.id > after)
    if portal != EVERY_PORTAL:
        # NOTE: Pony compiles `c.portal == portal` to IS NULL when portal is None (no tokens).
        entries = entries.where(lambda c: c.portal == portal)
    rows = list(entries.order_by(JobChange.id)[:limit])
    ids = list({row.job for row in rows})
    views = {job.id: job.to_dict() for job in select(j for j in Job if j.id in ids)} if ids else {}
    events = [{"cursor": encode(row.id), "at": row.at.isoformat() + "Z", "status": row.state,
               "job": views.get(row.job, row.job)} for row in rows]
    return events, rows[-1].id if rows else after


def prune(cutoff: datetime) -> int:
    """Delete the entries older than `cutoff` and their webhook deliveries; returns how many entries.

    NOTE: entries are stored in time order, so the old ones are the first ids: a scan in id order
    stops at the first one to keep, and `at` needs no index of its own (it would cost every move).
    """
    deleted = 0
    while True:
        with db_session:
            first_kept = select(c.id for c in JobChange if c.at >= cutoff).order_by(1).first()
            bound = first_kept if first_kept is not None else 2**63 - 1
            old = select(c.id for c in JobChange if c.id < bound).order_by(1)[:PRUNE_BATCH]
            if not old:
                return deleted
            last = old[-1]
            WebhookDelivery.select(lambda d: d.change.id <= last).delete(bulk=True)
            JobChange.select(lambda c: c.id <= last).delete(bulk=True)
        deleted += len(old)
        if len(old) < PRUNE_BATCH:
            return deleted
