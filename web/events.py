"""The portal API of job changes, in the server's main process: `GET /events` (the change feed,
storage/changes.py) and `GET /jobs/{id}/webhooks` (a job's webhook deliveries, storage/webhooks.py).
An upload's `callback_url` is checked here too (`callback_url`)."""
from __future__ import annotations

import falcon

from conf import webhook_hosts
from storage import changes, webhooks
from web import server_app, uploads
from web.common import positive_int

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def callback_url(fields: dict[str, str], patterns: tuple[str, ...]) -> str | None:
    """An upload's optional callback_url, checked against `[server] webhook_hosts`; 400 if refused."""
    raw = fields.get("callback_url")
    if raw is None:
        return None
    why = webhook_hosts.refusal(raw.strip(), patterns)
    if why is not None:
        raise uploads.bad_request(why)
    return raw.strip()


class Events:
    """`GET /events?after=<cursor>&limit=N`: the caller's job state changes after the cursor, oldest
    first (no cursor: from the oldest kept), each with its job's view now; an operator's: every
    portal's. `next_cursor` continues from the last one given (the same cursor when there was none)."""

    def on_get(self, req, resp):
        unknown = set(req.params) - {"after", "limit"}
        if unknown:
            raise falcon.HTTPBadRequest(title="Invalid query", description=f"parameter {sorted(unknown)[0]!r} is "
                                                                           "not accepted; send after and limit.")
        after = req.get_param("after")
        raw_limit = req.get_param("limit")
        try:
            position = changes.decode(after) if after is not None else 0
        except ValueError:
            raise falcon.HTTPBadRequest(title="Invalid cursor", description="after must be a next_cursor or an "
                                        "event's cursor that GET /events gave, or left out to start from the "
                                        "oldest change kept.") from None
        limit = DEFAULT_LIMIT if raw_limit is None else positive_int(raw_limit, MAX_LIMIT)
        if limit is None:
            raise falcon.HTTPBadRequest(title="Invalid limit",
                                        description=f"limit must be an integer from 1 to {MAX_LIMIT}.")
        events, last = changes.since(position, req.context.portal, limit)
        resp.media = {"events": events, "next_cursor": changes.encode(last)}


class JobWebhooks:
    """`GET /jobs/{id}/webhooks`: each webhook of the job (one per move to Running or an outcome),
    with its attempts and how the last one went."""

    def __init__(self, public: bool):
        self.public = public

    def on_get(self, req, resp, job_id):
        found = webhooks.of_job(server_app.job_ref(job_id, self.public), req.context.portal)
        if found is None:
            raise server_app.unknown_job(job_id)
        resp.media = {"webhooks": found}
