"""The portal API of job changes, in the server's main process: `GET /events` (the change feed,
storage/changes.py) and `GET /jobs/{id}/webhooks` (a job's webhook deliveries, storage/webhooks.py)."""
from __future__ import annotations

import falcon

from storage import changes, feed_cursors, webhooks
from web.common import DEFAULT_LIMIT, MAX_LIMIT, positive_int
from web.job_refs import job_ref, unknown_job

GONE = ("changes after this cursor were deleted unread (the feed keeps them for [server] retention_hours, or "
        "webhook_retry_hours if longer): re-sync the jobs you follow with GET /jobs, then read GET /events "
        "without after to start again from the oldest change kept.")


def bad(title: str, description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title=title, description=description)


class Events:
    """`GET /events?after=<cursor>&limit=N`: the caller's job state changes after the cursor, oldest
    first (no cursor: from the oldest kept), each with its job's view now; an operator's: every
    portal's. `next_cursor` continues from there. A cursor older than the oldest change kept: 410."""

    def on_get(self, req, resp):
        unknown = set(req.params) - {"after", "limit"}
        if unknown:
            raise bad("Invalid query", f"parameter {sorted(unknown)[0][:40]!r} is not accepted; send after and limit.")
        repeated = sorted(name for name, value in req.params.items() if isinstance(value, list))
        if repeated:
            raise bad("Invalid query", f"{repeated[0]} may be given once.")
        after, raw_limit = req.params.get("after"), req.params.get("limit")
        try:
            position = feed_cursors.unseal(after) if after is not None else None
        except ValueError:
            raise bad("Invalid cursor", "after must be a next_cursor or an event's cursor that GET /events gave, "
                                        "unchanged, or left out to start from the oldest change kept.") from None
        limit = DEFAULT_LIMIT if raw_limit is None else positive_int(raw_limit, MAX_LIMIT)
        if limit is None:
            raise bad("Invalid limit", f"limit must be an integer from 1 to {MAX_LIMIT}.")
        try:
            events, last = changes.since(position, req.context.portal, limit)
        except changes.Gone:
            raise falcon.HTTPGone(title="Changes pruned", description=GONE) from None
        resp.media = {"events": events, "next_cursor": feed_cursors.seal(last)}


class JobWebhooks:
    """`GET /jobs/{id}/webhooks`: each webhook of the job (one per move to Running or an outcome),
    with its attempts and how the last one went."""

    def __init__(self, public: bool):
        self.public = public

    def on_get(self, req, resp, job_id):
        found = webhooks.of_job(job_ref(job_id, self.public), req.context.portal)
        if found is None:
            raise unknown_job(job_id)
        resp.media = {"webhooks": found}
