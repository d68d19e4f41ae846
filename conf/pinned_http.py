"""HTTP requests the orchestrator sends where a portal said, to a checked address: the host is
resolved at each request, every address it has must be admitted by the host patterns
(conf/webhook_hosts.py), and the request goes to the address that was checked (the host name stays
in the Host header and, for https, in the TLS server name and certificate check), so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot aim it at the sender's own
network. No proxy from the environment; callers send with redirects off.

Used by the server's webhook actor (actors/server/webhook_post.py: `[server] webhook_hosts`) and by
the TES stage on executor nodes (actors/node/tes_stage.py: `[tes] url_hosts`, carried in the plan).
"""
from __future__ import annotations

import socket
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from conf import webhook_hosts


class PinnedTLS(HTTPAdapter):
    """https to a checked address: the TLS server name and certificate check stay the host's."""

    def __init__(self, host: str):
        self.host = host
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        kwargs.update(server_hostname=self.host, assert_hostname=self.host)
        super().init_poolmanager(*args, **kwargs)


def checked_address(url: str, patterns: tuple[str, ...], setting: str, any_when_empty: bool = False) -> str:
    """The address to send `url` to, resolved now; ValueError with why when the URL or one of its
    host's addresses is not admitted by `patterns` (the config key `setting`; `any_when_empty`: as
    webhook_hosts.admitted), LookupError when the host does not resolve."""
    try:
        matched, exactly = webhook_hosts.admitted(url, patterns, any_when_empty)
    except ValueError:  # stored before the check at create refused such URLs (e.g. a non-ASCII host)
        matched = exactly = False
    if not matched:
        raise ValueError(f"{url} is no longer admitted by {setting}")
    host, port = webhook_hosts.target(url)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: a name the IDNA codec refuses
        raise LookupError(f"{host} does not resolve: {exc}") from None
    addresses = [info[4][0] for info in found]
    refused = [address for address in addresses if not webhook_hosts.address_allowed(address, exactly)]
    if refused:
        raise ValueError(f"{host} resolves to a non-global address {refused[0]} (loopback, link-local, private or "
                         f"reserved), which only a host listed exactly in {setting} may reach")
    return addresses[0]


def pinned(url: str, address: str) -> tuple[requests.Session, str, str]:
    """A session to send `url` to the checked `address` with, the URL to give it (the address in
    place of the host) and the Host header to send."""
    parts = urlsplit(url)
    host, port = webhook_hosts.target(url)
    shown = f"[{address}]" if ":" in address else address
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: the checked address is the one used
    if parts.scheme == "https":
        session.mount("https://", PinnedTLS(host))
    return (session, urlunsplit((parts.scheme, f"{shown}:{port}", parts.path or "/", parts.query, "")),
            parts.netloc.rpartition("@")[2])
