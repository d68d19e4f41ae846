"""Figure 9: `GET /services` and the status page with 1,000,000 jobs in the database.

Set-up: a server whose database holds a month of history written straight into SQLite (the rows
the server would have written: 1,000,000 jobs of 500 users over 30 days, about 1,400 of them ended
in the last hour, 20,000 queued and 50 running), and one executor. Measured: the answer time of
`GET /services` and `GET /status` on loopback, warm.
"""
from __future__ import annotations

import random
import sqlite3
import time
from datetime import timedelta

import requests

from bench.common import Row, cluster, main, spread
from storage import database

TOTAL = 1_000_000
QUEUED = 20_000
RUNNING = 50
USERS = 500
DAYS = 30
STAMP = "%Y-%m-%d %H:%M:%S.%f"


def fill_history(data_dir, total: int) -> None:
    """`total` jobs of the `example` service: QUEUED waiting, RUNNING running, the rest ended over
    DAYS days (one in ten Failed), as rows of the server's own table."""
    from storage.clock import utcnow
    from storage.models import db
    path = data_dir / "orchestrator.sqlite"
    database.bind(db, str(path), create_tables=True)  # the server's schema and indexes
    now, rng = utcnow(), random.Random(9)
    span = DAYS * 86400

    def row(n: int):
        created = now - timedelta(seconds=rng.uniform(60, span))
        user = 1 + n % USERS
        if n < QUEUED:
            return (user, "example", "Queued", f"/none/{n}", created.strftime(STAMP), created.strftime(STAMP),
                    None, None, None, 0, None, None)
        started = created + timedelta(seconds=rng.uniform(0.05, 30))
        if n < QUEUED + RUNNING:
            return (user, "example", "Running", f"/none/{n}", created.strftime(STAMP), started.strftime(STAMP),
                    started.strftime(STAMP), None, None, 1, None, "http://127.0.0.1:9")
        finished = started + timedelta(seconds=rng.uniform(0.1, 600))
        outcome = "Failed" if n % 10 == 0 else "Completed"
        state = outcome if finished > now - timedelta(days=1) else "Cleaned"
        return (user, "example", state, f"/none/{n}", created.strftime(STAMP), finished.strftime(STAMP),
                started.strftime(STAMP), finished.strftime(STAMP), outcome, 1,
                "run.sh exited with code 1" if outcome == "Failed" else None, "http://127.0.0.1:9")
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            "INSERT INTO Job (user_id, service, state, dir, created_at, updated_at, started_at, finished_at, "
            "outcome, attempts, reason, executor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row(n) for n in range(total)))
    connection.close()


def answer_times(url: str, runs: int) -> list[float]:
    requests.get(url, timeout=30).raise_for_status()  # warm
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        requests.get(url, timeout=30).raise_for_status()
        times.append((time.perf_counter() - start) * 1000)
    return times


def run(quick: bool) -> list[Row]:
    total, runs = (20_000 + QUEUED, 3) if quick else (TOTAL, 20)
    with cluster() as nodes:
        executor = nodes.executor("example", slots=2)
        server = nodes.server({"example": {"clients": executor.url}}, start=False)
        fill_history(server.folder / "data", total)
        server.start()
        services = answer_times(f"{server.url}/services", runs)
        page = answer_times(f"{server.url}/status", runs)
    rows = []
    for name, times in ((f"9a. GET /services, {total:,} jobs in the database", services),
                        (f"9b. GET /status, {total:,} jobs in the database", page)):
        rows.append(Row(name, spread(times, " ms"), "<= 100 ms", "-",
                        None if quick else sorted(times)[len(times) // 2] <= 100))
    return rows


if __name__ == "__main__":
    main(run)
