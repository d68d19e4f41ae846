"""Sending one webhook: check where it goes, sign it, POST it once; runs on the webhook actor's
threads (actors/server/webhooks.py), in the server's webhook actor process.

The host is resolved here, at each attempt, and every address it has must be admitted
(conf/webhook_hosts.py); the request then goes to the address that was checked (conf/pinned_http.py),
so a DNS answer that changes between the check and the connection cannot redirect it. Redirects are
not followed.
The body is signed per Standard Webhooks with the portal's secret (the `standardwebhooks` package).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

import requests
from standardwebhooks import Webhook

from conf import pinned_http
from storage.columns import iso
from storage.webhooks import Delivery

USER_AGENT = "orchestrator-webhooks"


@dataclass(frozen=True)
class Outcome:
    """How one attempt went: `status` (None if no answer came), `error` (None: delivered), and
    whether the error is `final` (the URL is no longer admitted: trying again cannot help)."""

    status: int | None
    error: str | None
    final: bool = False


def body(delivery: Delivery) -> str:
    """The JSON sent: Standard Webhooks' envelope (type, timestamp) around the job's view."""
    return json.dumps({"type": f"job.{delivery.event.lower()}", "timestamp": iso(delivery.created_at), "data": delivery.view},
                      separators=(",", ":"))


def signed_headers(delivery: Delivery, payload: str, secret: str, now: datetime) -> dict[str, str]:
    stamp = now.replace(tzinfo=timezone.utc)
    return {"webhook-id": delivery.webhook_id, "webhook-timestamp": str(int(stamp.timestamp())),
            "webhook-signature": Webhook(secret).sign(delivery.webhook_id, stamp, payload),
            "Content-Type": "application/json", "User-Agent": USER_AGENT}


def post(delivery: Delivery, secret: str, patterns: tuple[str, ...], timeout: float, now: datetime) -> Outcome:
    """One attempt to deliver `delivery`; never raises."""
    try:
        address = pinned_http.checked_address(delivery.url, patterns, "[server] webhook_hosts")
    except ValueError as exc:
        return Outcome(None, str(exc), final=True)
    except LookupError as exc:
        return Outcome(None, str(exc))
    session, url, host = pinned_http.pinned(delivery.url, address)
    payload = body(delivery)
    headers = {**signed_headers(delivery, payload, secret, now), "Host": host}
    with session:
        try:
            with session.post(url, data=payload.encode(), headers=headers, timeout=(timeout, timeout),
                              allow_redirects=False, stream=True) as response:
                if 200 <= response.status_code < 300:
                    return Outcome(response.status_code, None)
                return Outcome(response.status_code, f"the receiver answered {response.status_code}"
                               + (" (redirects are not followed)" if response.is_redirect else ""))
        except (requests.RequestException, ValueError, UnicodeError) as exc:
            # NOTE: not only requests' own errors: e.g. a header it cannot encode raises UnicodeError
            return Outcome(None, f"{exc.__class__.__name__}: {exc}"[:500])
