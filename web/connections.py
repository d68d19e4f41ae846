"""How many connections a node's HTTP server holds, and for how long: defences against slow clients.

Runs in the node's main process, in Waitress's event-loop thread. Waitress reads each request
whole before a worker thread sees it, so slow clients cost connections, not threads; by default it
holds at most 100 connections and drops an idle one only after its channel_timeout, so about a
hundred connections that send a byte now and then (slowloris) shut everyone else out. Here:
- `connection_limit` connections at most (default 1000; Waitress then polls instead of select());
- a request's headers must arrive within `client_timeout` seconds of its first byte, and no
  connection may sit silent for longer than that: slow and idle clients are dropped;
- one client address holds at most `max_connections_per_client` connections (0: no cap; behind a
  reverse proxy every client has the proxy's address, so the proxy must do this instead);
- the last tenth of the connections is kept for the cluster's own calls (`reserved_for`: on the
  server, its executors' addresses; on an executor, its server's): once only that share is left,
  anyone else is answered 503 with Retry-After and closed at once.
"""
from __future__ import annotations

import logging
import socket
import time
from typing import Callable

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger("orchestrator.connections")
#: The share of connection_limit kept for the cluster's own calls.
RESERVED_SHARE = 0.1
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


def _busy_answer(why: str) -> bytes:
    body = ('{"title": "Too many connections", "description": "%s; try again shortly."}' % why).encode()
    return BUSY % (len(body), body)


class GuardedChannel(HTTPChannel):
    """A connection that remembers when its current request's first byte arrived."""

    request_started: float | None = None

    def received(self, data):
        if self.request is None and data:
            self.request_started = time.monotonic()
        return super().received(data)

    def headers_late(self, now: float, seconds: float) -> bool:
        request = self.request
        return (request is not None and not request.headers_finished and self.request_started is not None
                and now - self.request_started > seconds)


class GuardedServer(TcpWSGIServer):
    channel_class = GuardedChannel

    def __init__(self, app, *, per_client: int, reserved_for: Callable[[], set[str]], **adjustments):
        adj = Adjustments(**adjustments)
        dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(adj.threads)
        self.per_client = per_client
        self.reserved_for = reserved_for
        self.reserve = max(1, int(adj.connection_limit * RESERVED_SHARE))
        super().__init__(app, {}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])

    def handle_accept(self):
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        why = self.refusal(addr[0])
        if why is not None:
            try:
                conn.setblocking(False)
                conn.send(_busy_answer(why))  # a few hundred bytes: always fits the socket's buffer
            except OSError:
                pass
            conn.close()
            return
        try:
            self.set_socket_options(conn)
        except OSError:
            conn.close()
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    def refusal(self, address: str) -> str | None:
        """Why a connection from `address` is refused now, or None."""
        channels = list(self.active_channels.values())
        if self.per_client and sum(1 for c in channels if c.addr[0] == address) >= self.per_client:
            log.warning("refused a connection from %s: it already holds %d (max_connections_per_client)",
                        address, self.per_client)
            return f"this address already holds {self.per_client} connections (max_connections_per_client)"
        if len(channels) >= self.adj.connection_limit - self.reserve and address not in self.reserved_for():
            log.warning("refused a connection from %s: the last %d of %d connections are kept for the cluster",
                        address, self.reserve, self.adj.connection_limit)
            return "the node is serving as many connections as it takes"
        return None

    def maintenance(self, now):
        super().maintenance(now)  # drops connections idle for channel_timeout (client_timeout)
        monotonic = time.monotonic()
        for channel in list(self.active_channels.values()):
            if isinstance(channel, GuardedChannel) and channel.headers_late(monotonic, self.adj.channel_timeout):
                channel.will_close = True


def addresses_of(urls: list[str]) -> set[str]:
    """The IP addresses the hosts of `urls` resolve to (unresolvable ones are left out)."""
    from urllib.parse import urlsplit

    found: set[str] = set()
    for url in urls:
        host = urlsplit(url).hostname
        if not host:
            continue
        try:
            found.update(info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP))
        except OSError:
            continue
    return found


def create(app, *, host: str, port: int, threads: int, max_body: int, name: str, connection_limit: int,
           client_timeout: int, per_client: int, reserved_for: Callable[[], set[str]]) -> GuardedServer:
    return GuardedServer(app, per_client=per_client, reserved_for=reserved_for, host=host, port=port,
                         threads=threads, ident=name, max_request_body_size=max_body,
                         connection_limit=connection_limit, channel_timeout=client_timeout,
                         cleanup_interval=max(1, min(30, client_timeout // 2)), asyncore_use_poll=True)


class CachedAddresses:
    """`addresses_of(urls())`, worked out again at most every `seconds` (it may query and resolve)."""

    def __init__(self, urls: Callable[[], list[str]], seconds: float = 10.0):
        self.urls, self.seconds = urls, seconds
        self.value: set[str] = set()
        self.when = float("-inf")

    def __call__(self) -> set[str]:
        if time.monotonic() - self.when > self.seconds:
            self.when = time.monotonic()
            try:
                self.value = addresses_of(self.urls())
            except Exception:  # noqa: BLE001 — keep the last known set; the database may be busy
                log.exception("could not list the cluster's addresses")
        return self.value
