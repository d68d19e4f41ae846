"""Which URLs a portal may have the orchestrator send requests to: host patterns, and the addresses
such a request may go to. Two lists use them: `[server] webhook_hosts` (a job's callback_url; empty:
webhooks are off) and `[tes] url_hosts` (a TES task's http(s) input and output URLs; empty: any host
whose addresses are all global).

Pure functions, used by the server's main process (an upload's callback_url and a TES task's URLs
are checked against the patterns), and where the requests are sent (conf/pinned_http.py: the
server's webhook actor, the TES stage on executor nodes): the host is resolved again at each request
and every address checked, so a DNS answer that changed since the check at create, e.g. DNS
rebinding, cannot aim a request at the sender's own network.

A pattern is `host`, `host:port`, `*.domain` or `*.domain:port` (a `[v6 address]` too); without a
port it admits any port. `*.wenmr.eu` admits `a.wenmr.eu` and `a.b.wenmr.eu`, not `wenmr.eu`.
An address that is not global (loopback, link-local, private, reserved...) is admitted only for a
host listed exactly, without a wildcard: an operator who writes `127.0.0.1:8080` or
`portal.intranet` means it; `*.example.org` never reaches 127.0.0.1 or 169.254.169.254.
"""
from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

PATTERN = re.compile(r"^(?P<host>(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*"
                     r"|\[[0-9a-f:.]+\])(:(?P<port>[0-9]{1,5}))?$")
#: The longest callback URL a job may give (its column holds 2048).
MAX_URL_CHARS = 2000


def parse_patterns(raw: str) -> tuple[str, ...]:
    """The comma-separated patterns of `raw`, lower-cased. Raises ValueError naming a bad one."""
    patterns = tuple(item.strip().lower() for item in raw.split(",") if item.strip())
    for pattern in patterns:
        match = PATTERN.match(pattern)
        if not match or (match.group("port") and not 0 < int(match.group("port")) < 65536):
            raise ValueError(pattern)
    return patterns


def _split(pattern: str) -> tuple[str, int | None]:
    match = PATTERN.match(pattern)
    port = match.group("port")
    return match.group("host").strip("[]"), int(port) if port else None


def _host_matches(pattern_host: str, host: str) -> bool:
    if pattern_host.startswith("*."):
        return host.endswith(pattern_host[1:]) and len(host) > len(pattern_host) - 1
    return host == pattern_host


def admitted(url: str, patterns: tuple[str, ...], any_when_empty: bool = False) -> tuple[bool, bool]:
    """(whether some pattern admits `url`'s host and port, whether one lists the host exactly).
    `any_when_empty`: no patterns admit any host, none of them exactly (`[tes] url_hosts`).

    Raises ValueError when `url` is not an http(s) URL with a host."""
    host, port = target(url)
    if any_when_empty and not patterns:
        return True, False
    matches = [(p_host, p_port) for p_host, p_port in map(_split, patterns)
               if _host_matches(p_host, host) and p_port in (None, port)]
    return bool(matches), any(not p_host.startswith("*.") for p_host, _ in matches)


def target(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, the host lower-cased; ValueError if it is not one. The host
    must be ASCII (an international name in its IDNA `xn--` form): another would match a wildcard
    here and then fail in the Host header at every request."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password \
            or not parts.netloc.isascii():
        raise ValueError(url)
    return parts.hostname.lower(), parts.port or (443 if parts.scheme == "https" else 80)


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_allowed(address: str, listed_exactly: bool) -> bool:
    """Whether a request may go to `address` (an IP): a global one always, any other (loopback,
    link-local, private, reserved, multicast) only for a host listed exactly."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return listed_exactly or (ip.is_global and not ip.is_multicast)


def refusal(url: str, patterns: tuple[str, ...]) -> str | None:
    """Why an upload's callback_url cannot be accepted, in words; None if it can."""
    if not patterns:
        return "webhooks are off on this server ([server] webhook_hosts is empty); leave callback_url out."
    if len(url) > MAX_URL_CHARS:
        return f"callback_url must be a printable URL of at most {MAX_URL_CHARS} characters."
    return url_refusal(url, patterns, "callback_url", "sends webhooks to", "[server] webhook_hosts")


def url_refusal(url: str, patterns: tuple[str, ...], what: str, use: str, setting: str,
                any_when_empty: bool = False) -> str | None:
    """Why `url` (called `what` in the words; `use`: what the server does with such hosts) cannot
    be accepted under `patterns` (the config key `setting`; `any_when_empty` as in `admitted`), in
    words; None if it can."""
    if not url.isprintable():
        return f"{what} must be a printable URL."
    try:
        matched, exactly = admitted(url, patterns, any_when_empty)
    except ValueError:
        return (f"{what} must be an http(s)://host[:port]/path URL without credentials (user:password@), its host "
                f"in ASCII (an international name in its xn-- form), got {url[:80]!r}.")
    if not matched:
        return f"{what}'s host is not one this server {use} ({setting}); accepted: {', '.join(patterns)}."
    address = literal_address(target(url)[0])
    if address is not None and not address_allowed(str(address), exactly):
        return (f"{what} {url[:80]!r} names a loopback, link-local, private or reserved address; only a host listed "
                f"exactly in {setting} may be one" + (f" (accepted: {', '.join(patterns)})." if patterns else
                                                      f" ({setting} is empty: any host whose addresses are global)."))
    return None
