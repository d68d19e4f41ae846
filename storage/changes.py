"""The change feed: every job state change, in the order stored (`JobChange`, written by
`storage.models.record_change` in the transaction of the change), read by `GET /events` and
pruned by the janitor.

Runs in the server's main process (the feed's reads) and in its janitor actor (`prune`). Cursors
are sealed entry numbers (storage/feed_cursors.py). A prune stores the last entry number it deleted
(`ServerValue` PRUNED_NAME), so a read from a cursor older than that is told it missed changes
(`Gone`) rather than silently skipping them.

NOTE: the feed is exact on SQLite, whose writes are serial: entries become visible in number order,
and a read first takes the highest number, then gives only entries up to it. On PostgreSQL two moves
committing at once can become visible out of number order, so a read can pass a change committed a
moment later with a lower number: a portal that must not miss an end checks GET /jobs/{id}.
"""
from __future__ import annotations

from datetime import datetime

from pony.orm import db_session, max as sql_max, select

from storage import feed_cursors, job_list
from storage.jobs import EVERY_PORTAL
from storage.models import JobChange, ServerValue, WebhookDelivery

#: Entries deleted per statement, so that a prune never holds SQLite's write lock for long.
PRUNE_BATCH = 5000
#: The ServerValue holding the last entry number a prune deleted.
PRUNED_NAME = "changes_pruned_through"


class Gone(Exception):
    """The cursor is older than the oldest entry kept: changes after it were pruned unread."""


@db_session
def since(after: int | None, portal: str | None, limit: int) -> tuple[list[dict], int]:
    """The entries after entry `after` (None: from the oldest kept) that `portal` may see (an
    operator, EVERY_PORTAL: all), oldest first, at most `limit`, each with its job's view as it is
    now; and the position to continue from: the last one returned, or, when the caller has read
    all there is, the newest entry of any portal (so a quiet portal's cursor keeps up with prunes).
    Raises Gone when entries after `after` were pruned."""
    pruned = ServerValue.get(name=PRUNED_NAME)
    if after is not None and pruned is not None and after < int(pruned.value):
        raise Gone(after)
    after = after or 0
    newest = sql_max(c.id for c in JobChange) or 0  # first: every entry up to it is visible now (SQLite)
    entries = select(c for c in JobChange if c.id > after and c.id <= newest)
    if portal != EVERY_PORTAL:
        # NOTE: Pony compiles `c.portal == portal` to IS NULL when portal is None (no tokens).
        entries = entries.where(lambda c: c.portal == portal)
    rows = list(entries.order_by(JobChange.id)[:limit])
    ids = list({row.job for row in rows})
    views = dict(zip(ids, job_list.views_of(ids)))
    events = [{"cursor": feed_cursors.seal(row.id), "at": row.at.isoformat() + "Z", "status": row.state,
               "job": views[row.job]} for row in rows]
    return events, rows[-1].id if len(rows) == limit else max(newest, after)


def prune(cutoff: datetime) -> int:
    """Delete the entries older than `cutoff` and their webhook deliveries; returns how many entries.

    NOTE: entries are stored in time order, so the old ones are the first ids: one scan in id order,
    before the batches, finds the first one to keep (`at` needs no index of its own: it would cost
    every move), and each batch is then a range of the primary key.
    """
    with db_session:
        first_kept = select(c.id for c in JobChange if c.at >= cutoff).order_by(1).first()
    bound = first_kept if first_kept is not None else 2**63 - 1
    deleted = 0
    while True:
        with db_session:
            old = select(c.id for c in JobChange if c.id < bound).order_by(1)[:PRUNE_BATCH]
            if not old:
                return deleted
            last = old[-1]
            WebhookDelivery.select(lambda d: d.change.id <= last).delete(bulk=True)
            JobChange.select(lambda c: c.id <= last).delete(bulk=True)
            marker = ServerValue.get(name=PRUNED_NAME) or ServerValue(name=PRUNED_NAME, value="0")
            marker.value = str(max(int(marker.value), last))
        deleted += len(old)
        if len(old) < PRUNE_BATCH:
            return deleted
