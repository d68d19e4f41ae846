"""Figure: a scrape of the server's GET /metrics answers in <= 100 ms with 1,000,000 jobs in its database.

Set-up: a server (two services, an executor each that is never started) whose database holds
1,000,000 jobs of 10,000 users: mostly ended (Completed, Failed, Cancelled, Cleaned), 1 % queued
and a few hundred dispatched to the executors. The rows are written with sqlite3 while the server is
stopped (Pony would take minutes), then the server is started and scraped over HTTP.
"""
from __future__ import annotations

import sqlite3
import statistics
import time

import requests

from bench.common import Row, cluster, main, spread

ALL_JOBS = 1_000_000
SCRAPES = 30
TARGET_MS = 100.0
SERVICES = ("example", "prodigy")


def _fill(database: str, count: int, executors: dict[str, str]) -> None:
    """`count` jobs across SERVICES; ids and times are made up, which /metrics does not read."""
    def rows():
        for n in range(count):
            service = SERVICES[n % len(SERVICES)]
            kind = n % 1000
            state = "Queued" if kind < 10 else "Running" if kind == 10 else "Failed" if kind < 40 else \
                "Cancelled" if kind < 50 else "Cleaned" if kind < 300 else "Completed"
            executor = executors[service] if state == "Running" else None
            yield (1 + n % 10_000, service, state, f"/nonexistent/{n}", "2026-01-01 00:00:00.000000",
                   "2026-01-01 00:00:00.000000", 1 if executor else 0, executor)

    connection = sqlite3.connect(database)
    with connection:
        connection.executemany("INSERT INTO Job (user_id, service, state, dir, created_at, updated_at, attempts, "
                               "executor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows())
    connection.close()


def scrape_times(count: int, scrapes: int) -> list[float]:
    with cluster() as nodes:
        executors = {service: f"http://127.0.0.1:{9 + n}" for n, service in enumerate(SERVICES)}
        server = nodes.server({service: {"clients": url} for service, url in executors.items()})
        server.stop()  # it made the tables; now fill them while nobody else writes
        _fill(str(server.folder / "data" / "orchestrator.sqlite"), count, executors)
        server.restart()
        session = requests.Session()
        times = []
        for _ in range(scrapes + 3):  # the first few warm SQLite's page cache
            began = time.perf_counter()
            answer = session.get(f"{server.url}/metrics", timeout=30)
            times.append((time.perf_counter() - began) * 1000)
            answer.raise_for_status()
        assert 'orchestrator_jobs{service="example",state="Completed"}' in answer.text, answer.text[:2000]
        return times[3:]


def run(quick: bool) -> list[Row]:
    count, scrapes = (50_000, 10) if quick else (ALL_JOBS, SCRAPES)
    times = scrape_times(count, scrapes)
    median = statistics.median(times)
    return [Row(f"metrics: GET /metrics with {count:,} jobs", spread(times, " ms"), f"<= {TARGET_MS:.0f} ms",
                "-", None if quick else median <= TARGET_MS)]


if __name__ == "__main__":
    main(run)
