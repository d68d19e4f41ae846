"""An upload's `callback_url`, checked against `[server] webhook_hosts` (conf/webhook_hosts.py)
before the job is stored. Runs in the server's main process (`POST /upload`, web/server_app.py)."""
from __future__ import annotations

from conf import webhook_hosts
from web import uploads


def callback_url(fields: dict[str, str], patterns: tuple[str, ...]) -> str | None:
    """An upload's optional callback_url, checked against `[server] webhook_hosts`; 400 if refused."""
    raw = fields.get("callback_url")
    if raw is None:
        return None
    why = webhook_hosts.refusal(raw.strip(), patterns)
    if why is not None:
        raise uploads.bad_request(why)
    return raw.strip()
