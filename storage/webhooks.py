"""The webhooks' outbox: the deliveries due, the outcome of each attempt, and a job's deliveries.

A delivery row is written by `record_change` in the transaction of the job's move (storage/models.py),
so a webhook is never lost between a change and its sending, whatever process dies when. Runs in
the server's webhook actor (`due`, `record`) and its main process (`of_job`).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pony.orm import db_session, exists, select

from storage.columns import iso
from storage.jobs import retrying, visible
from storage.models import Job, WebhookDelivery
from storage.storable import storable

#: The longest wait between two attempts, however many failed.
MAX_BACKOFF_SECONDS = 3600.0


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
    job: int
    portal: str | None
    url: str
    event: str
    #: When the job moved (its change-log entry's time), and the start of the retry period.
    created_at: datetime
    attempts: int
    view: dict
    #: The same for every attempt of this delivery, so a receiver can drop a repeat.
    webhook_id: str


def _webhook_id(row: WebhookDelivery) -> str:
    # NOTE: a row of an earlier version has none; its row number stands in (same at every attempt).
    return row.webhook_id or f"msg_{row.id}"


@db_session
def due(now: datetime, portal: str | None, skip_jobs: set[int], limit: int) -> list[Delivery]:
    """`portal`'s deliveries whose next attempt is due at `now`, the longest due first, at most
    `limit`, none of the jobs `skip_jobs` (one being sent already, or resting), and none of a job
    that has an earlier delivery not yet delivered or given up: a job's webhooks are delivered in
    the order of its moves (a Running waiting for its retry holds back the job's Completed).

    NOTE: one walk of the index (portal, next_attempt_at, id), stopped after `limit` plus the
    skipped jobs' rows (at most one each: the others wait behind it); the earlier-delivery check is
    a seek in (job, id) per row.
    """
    # NOTE: Pony compiles `d.portal == portal` to IS NULL when portal is None (no tokens).
    rows = select(d for d in WebhookDelivery if d.portal == portal and d.next_attempt_at is not None
                  and d.next_attempt_at <= now
                  and not exists(e for e in WebhookDelivery if e.job == d.job and e.id < d.id
                                 and e.next_attempt_at is not None)
                  ).order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)[:limit + len(skip_jobs)]
    picked = [row for row in rows if row.job not in skip_jobs][:limit]
    ids = [row.job for row in picked]
    jobs = {job.id: job for job in select(j for j in Job if j.id in ids)} if ids else {}
    return [Delivery(row.id, row.job, row.portal, row.url, row.event, row.created_at, row.attempts,
                     jobs[row.job].to_dict(), _webhook_id(row)) for row in picked if row.job in jobs]


@retrying
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
    job = visible(ref, portal)
    if job is None:
        return None
    return [{"webhook_id": _webhook_id(row), "event": row.event, "url": row.url, "attempts": row.attempts,
             "delivered_at": iso(row.delivered_at), "gave_up_at": iso(row.gave_up_at),
             "next_attempt_at": iso(row.next_attempt_at), "last_status": row.last_status,
             "last_error": row.last_error}
            for row in select(d for d in WebhookDelivery if d.job == job.id).order_by(WebhookDelivery.id)]
