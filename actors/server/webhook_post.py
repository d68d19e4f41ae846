"""Sending one webhook: check where it goes, sign it, POST it once; runs on the webhook actor's
threads (actors/server/webhooks.py), in the server's webhook actor process.

The host is resolved here, at each attempt, and every address it has must be admitted
(conf/webhook_hosts.py); the request then goes to the address that was checked (the host name stays
in the Host header and, for https, in the TLS server name and certificate check), so a DNS answer
that changes between the check and the connection cannot redirect it. Redirects are not followed.
The body is signed per Standard Webhooks with the portal's secret (the `standardwebhooks` package).
"""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from standardwebhooks import Webhook

from conf import webhook_hosts
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


class _PinnedTLS(HTTPAdapter):
    """https to a checked address: the TLS server name and certificate check stay the host's."""

    def __init__(self, host: str):
        self.host = host
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        kwargs.update(server_hostname=self.host, assert_hostname=self.host)
        super().init_poolmanager(*args, **kwargs)


def checked_address(url: str, patterns: tuple[str, ...]) -> str:
    """The address to send `url`'s webhook to, resolved now; ValueError with why when the URL or
    one of its host's addresses is not admitted."""
    try:
        matched, exactly = webhook_hosts.admitted(url, patterns)
    except ValueError:  # stored before the upload check refused such URLs (e.g. a non-ASCII host)
        matched = exactly = False
    if not matched:
        raise ValueError(f"{url} is no longer admitted by [server] webhook_hosts")
    host, port = webhook_hosts.target(url)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: a name the IDNA codec refuses
        raise LookupError(f"{host} does not resolve: {exc}") from None
    addresses = [info[4][0] for info in found]
    refused = [address for address in addresses if not webhook_hosts.address_allowed(address, exactly)]
    if refused:
        raise ValueError(f"{host} resolves to {refused[0]}, a loopback, link-local or private address, and is "
                         f"not listed exactly in [server] webhook_hosts")
    return addresses[0]


def post(delivery: Delivery, secret: str, patterns: tuple[str, ...], timeout: float, now: datetime) -> Outcome:
    """One attempt to deliver `delivery`; never raises."""
    try:
        address = checked_address(delivery.url, patterns)
    except ValueError as exc:
        return Outcome(None, str(exc), final=True)
    except LookupError as exc:
        return Outcome(None, str(exc))
    parts = urlsplit(delivery.url)
    host, port = webhook_hosts.target(delivery.url)
    shown = f"[{address}]" if ":" in address else address
    pinned = urlunsplit((parts.scheme, f"{shown}:{port}", parts.path or "/", parts.query, ""))
    payload = body(delivery)
    headers = {**signed_headers(delivery, payload, secret, now), "Host": parts.netloc.rpartition("@")[2]}
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment: the checked address is the one used
        if parts.scheme == "https":
            session.mount("https://", _PinnedTLS(host))
        try:
            with session.post(pinned, data=payload.encode(), headers=headers, timeout=(timeout, timeout),
                              allow_redirects=False, stream=True) as response:
                if 200 <= response.status_code < 300:
                    return Outcome(response.status_code, None)
                return Outcome(response.status_code, f"the receiver answered {response.status_code}"
                               + (" (redirects are not followed)" if response.is_redirect else ""))
        except (requests.RequestException, ValueError, UnicodeError) as exc:
            # NOTE: not only requests' own errors: e.g. a header it cannot encode raises UnicodeError
            return Outcome(None, f"{exc.__class__.__name__}: {exc}"[:500])
