"""Figure 9: the operators' views with 1,000,000 jobs in the database: a scrape of `GET /metrics`,
`GET /services` and the status page `GET /status`, each within 100 ms.

Set-up: a server whose database holds a month of history (1,000,000 jobs of 500 users over 30
days: about 1,400 ended in the last hour, 20,000 queued, 50 running), and one executor. The rows
are written with sqlite3 while the server is stopped (through Pony it would take minutes); then the
server is started again and each view is asked for over HTTP, warm.
"""
from __future__ import annotations

import random
import sqlite3
import statistics
import time
from datetime import timedelta

import requests

from bench.common import Row, cluster, main, spread

TOTAL = 1_000_000
QUEUED = 20_000
RUNNING = 50
USERS = 500
DAYS = 30
TARGET_MS = 100.0
STAMP = "%Y-%m-%d %H:%M:%S.%f"
VIEWS = (("9a", "GET /metrics", "/metrics"), ("9b", "GET /services", "/services"), ("9c", "GET /status", "/status"))


def fill_history(database: str, total: int, executor: str) -> None:
    """`total` jobs of the `example` service: QUEUED waiting, RUNNING running on `executor`, the
    rest ended over DAYS days (one in ten Failed; Cleaned after a day), as the server writes them."""
    from storage.clock import utcnow
    now, rng = utcnow(), random.Random(9)

    def row(n: int):
        created = now - timedelta(seconds=rng.uniform(60, DAYS * 86400))
        user, stamp = 1 + n % USERS, created.strftime(STAMP)
        if n < QUEUED:
            return (user, "example", "Queued", f"/none/{n}", stamp, stamp, None, None, None, 0, None, None)
        started = created + timedelta(seconds=rng.uniform(0.05, 30))
        if n < QUEUED + RUNNING:
            return (user, "example", "Running", f"/none/{n}", stamp, started.strftime(STAMP),
                    started.strftime(STAMP), None, None, 1, None, executor)
        finished = started + timedelta(seconds=rng.uniform(0.1, 600))
        outcome = "Failed" if n % 10 == 0 else "Completed"
        state = outcome if finished > now - timedelta(days=1) else "Cleaned"
        return (user, "example", state, f"/none/{n}", stamp, finished.strftime(STAMP), started.strftime(STAMP),
                finished.strftime(STAMP), outcome, 1, "run.sh exited with code 1" if outcome == "Failed" else None,
                executor)
    connection = sqlite3.connect(database)
    with connection:
        connection.executemany(
            "INSERT INTO Job (user_id, service, state, dir, created_at, updated_at, started_at, finished_at, "
            "outcome, attempts, reason, executor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row(n) for n in range(total)))
    connection.close()


def answer_times(url: str, runs: int, headers: dict[str, str] | None = None) -> list[float]:
    session = requests.Session()
    session.headers.update(headers or {})
    for _ in range(3):  # warm SQLite's page cache (and count the ended jobs for /metrics once)
        session.get(url, timeout=60).raise_for_status()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        session.get(url, timeout=60).raise_for_status()
        times.append((time.perf_counter() - began) * 1000)
    return times


def run(quick: bool) -> list[Row]:
    total, runs = (QUEUED + 20_000, 3) if quick else (TOTAL, 20)
    with cluster() as nodes:
        executor = nodes.executor("example", slots=2)
        server = nodes.server({"example": {"clients": executor.url}})
        server.stop()  # it made the tables; now fill them while nobody else writes
        fill_history(str(server.folder / "data" / "orchestrator.sqlite"), total, executor.url)
        server = server.restart()
        measured = [(figure, name, answer_times(f"{server.url}{path}", runs)) for figure, name, path in VIEWS]
    return [Row(f"{figure}. {name}, {total:,} jobs in the database", spread(times, " ms"), f"<= {TARGET_MS:.0f} ms",
                "-", None if quick else statistics.median(times) <= TARGET_MS) for figure, name, times in measured]


if __name__ == "__main__":
    main(run)
