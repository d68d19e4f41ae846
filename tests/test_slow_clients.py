"""Slow and idle connections cannot deny service (web/connections.py), on a real server.

Attackers connect from other loopback addresses (127.0.0.2, ...; all of 127/8 is this host), so the
per-address rules can tell them from the executor and the portal, which use 127.0.0.1.
"""
from __future__ import annotations

import http.client
import socket

from tests.harness import job, submit, wait_for_outcome, wait_until

ATTACKER = "127.0.0.2"
PORTAL = "127.0.0.3"
#: The start of a request whose headers never end.
PARTIAL = b"POST /upload HTTP/1.1\r\nHost: orchestrator\r\nX-Slow: "


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
    sock.sendall(PARTIAL)
    return sock


def answer_or_close(sock: socket.socket) -> bytes | None:
    """What the server sent before closing (b"" for a bare close); None while it keeps it open."""
    sock.settimeout(0)
    try:
        return sock.recv(4096)
    except BlockingIOError:
        return None
    except ConnectionResetError:
        return b""


def health(port: int, source: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_idle_and_trickling_connections_from_one_address_neither_block_uploads_nor_stay(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}}, client_timeout=2)
    trickle = connect(server.port, ATTACKER)
    idle = [connect(server.port, ATTACKER) for _ in range(150)]  # Waitress's old limit was 100 in all

    # the portal is served at once, past the attacker's connections
    job_id = submit(server, "echo ok > out.txt")
    assert wait_for_outcome(server, job_id) == 200
    # one address holds at most max_connections_per_client (100): the rest were answered 503
    refused = [reply for reply in map(answer_or_close, idle) if reply]
    assert len(refused) >= 50 and all(reply.startswith(b"HTTP/1.1 503") and b"Retry-After" in reply
                                      for reply in refused), refused[:3]

    # headers that never end are dropped after client_timeout, however steadily they trickle in
    def trickle_dropped():
        try:
            trickle.sendall(b"x")
            return answer_or_close(trickle) is not None
        except OSError:
            return True
    wait_until(trickle_dropped, 10, 0.25, "the server to drop the trickling connection")
    wait_until(lambda: all(answer_or_close(sock) is not None for sock in idle), 10, 0.1,
               "the server to close the idle connections")
    for sock in (*idle, trickle):
        sock.close()


def test_the_last_connections_are_kept_for_the_executors(cluster):
    executor = cluster.executor("example")
    # behind a reverse proxy every client has one address: no per-address cap, only the reserve
    server = cluster.server({"example": {"clients": executor.url}}, connection_limit=40,
                            max_connections_per_client=0, client_timeout=120)
    job_id = submit(server, "sleep 1; echo ok > out.txt")
    wait_until(lambda: job(server, job_id)["status"] == "Running", 20, 0.05, "the job to run")

    attackers = [connect(server.port, ATTACKER) for _ in range(45)]
    wait_until(lambda: sum(answer_or_close(sock) is not None for sock in attackers) >= 5, 10, 0.05,
               "the connections beyond the unreserved share to be refused")
    status, body = health(server.port, PORTAL)  # a stranger finds the server full ...
    assert status == 503 and b"Too many connections" in body
    # ... while the executor (127.0.0.1, configured in clients) still reports: the job completes
    assert wait_for_outcome(server, job_id) == 200
    assert job(server, job_id)["status"] == "Completed"
    for sock in attackers:
        sock.close()
    wait_until(lambda: health(server.port, PORTAL)[0] == 200, 10, 0.1, "the server to serve strangers again")
