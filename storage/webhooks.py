"""The webhooks' outbox: the deliveries due, the outcome of each attempt, and a job's deliveries.

A delivery row is written by `Job.changed` in the transaction of the job's move (storage/models.py),
so a webhook is never lost between a change and its sending, whatever process dies when. Runs in
the server's webhook actor (`due`, `record`) and its main process (`of_job`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pony.orm import db_session, select

from storage.columns import iso
from storage.jobs import _retrying, _visible
from storage.models import Job, WebhookDelivery
from storage.storable import storable

#: The longest wait between two attempts, however many failed.
MAX_BACKOFF_SECONDS = 3600.0
#: Due deliveries of one portal read at a time, to pick the ones to send from.
SCAN = 200


def next_attempt(created_at: datetime, attempts: int, now: datetime, first_delay: float,
                 retry_hours: float) -> datetime | None:
    """When to try a delivery again after its `attempts`-th attempt failed at `now`: `first_delay`
    seconds after the first, twice as long after each further one (at most an hour); None once that
    would be more than `retry_hours` after the delivery was created (it is given up)."""
    delay = min(first_delay * 2 ** min(attempts - 1, 40), MAX_BACKOFF_SECONDS)
    when = now + timedelta(seconds=delay)
    return when if when <= created_at + timedelta(hours=retry_hours) else None


@dataclass(frozen=True)
class Delivery:
    """One webhook to send: what the webhook actor needs, and the job's view to send."""

    id: int
    #: The change-log entry it reports: its number makes the stable `webhook-id`.
    change: int
    job: int
    portal: str | None
    url: str
    event: str
    at: datetime
    created_at: datetime
    attempts: int
    view: dict

    @property
    def webhook_id(self) -> str:
        """The same for every attempt of this delivery, so a receiver can drop a repeat."""
        return f"msg_{self.change}"


@db_session
def portals_due(now: datetime) -> list[str | None]:
    """The portals (None: a server without tokens) that have deliveries due at `now`."""
    return list(select(d.portal for d in WebhookDelivery if d.next_attempt_at is not None and d.next_attempt_at <= now))


@db_session
def due(now: datetime, portal: str | None, skip_jobs: set[int], limit: int) -> list[Delivery]:
    """`portal`'s deliveries whose next attempt is due at `now`, oldest first, at most `limit`, at
    most one per job and none of the jobs `skip_jobs` (one being sent already), so a job's webhooks
    leave in the order of its moves (a webhook being retried lets the job's next one go meanwhile)."""
    # NOTE: Pony compiles `d.portal == portal` to IS NULL when portal is None (no tokens).
    rows = select(d for d in WebhookDelivery if d.next_attempt_at is not None and d.next_attempt_at <= now
                  and d.portal == portal).order_by(WebhookDelivery.id).prefetch(WebhookDelivery.change)[:SCAN]
    picked: dict[int, WebhookDelivery] = {}
    for row in rows:
        if row.job not in skip_jobs and row.job not in picked and len(picked) < limit:
            picked[row.job] = row
    jobs = {job.id: job for job in select(j for j in Job if j.id in list(picked))} if picked else {}
    return [Delivery(row.id, row.change.id, row.job, row.portal, row.url, row.event, row.change.at, row.created_at,
                     row.attempts, jobs[row.job].to_dict()) for row in picked.values() if row.job in jobs]


@_retrying
@db_session
def record(delivery_id: int, now: datetime, status: int | None, error: str | None,
           retry_at: datetime | None) -> None:
    """One attempt's outcome: delivered (a 2xx `status`, `error` None), or failed with `error`, to
    be tried again at `retry_at` (None: given up)."""
    row = WebhookDelivery.get(id=delivery_id)
    if row is None:
        return  # pruned meanwhile
    row.attempts += 1
    row.last_status = status
    row.last_error = storable(error)[:1000] if error else None
    if error is None:
        row.delivered_at, row.next_attempt_at = now, None
    elif retry_at is None:
        row.gave_up_at, row.next_attempt_at = now, None
    else:
        row.next_attempt_at = retry_at


@db_session
def of_job(ref: int | str, portal: str | None) -> list[dict] | None:
    """The webhooks of the job `ref` names, oldest first, as `GET /jobs/{id}/webhooks` shows them;
    None if `portal` sees no such job."""
    job = _visible(ref, portal)
    if job is None:
        return None
    return [{"webhook_id": f"msg_{row.change.id}", "event": row.event, "url": row.url, "attempts": row.attempts,
             "delivered_at": iso(row.delivered_at), "gave_up_at": iso(row.gave_up_at),
             "next_attempt_at": iso(row.next_attempt_at), "last_status": row.last_status,
             "last_error": row.last_error}
            for row in select(d for d in WebhookDelivery if d.job == job.id).order_by(WebhookDelivery.id)]
