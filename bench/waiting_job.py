"""Figure 10: why a job waits, with a long queue: `GET /jobs/{id}` of a queued job (its `queue`
object: position, what holds it, estimated start) and `POST /upload` (whose answer carries it too),
with 100,000 jobs queued by 1,000 users behind 900,000 ended ones, each within 50 ms; and the same
view in a fair_share service (`policy`: usage, share and rank), with another 100,000 queued by 1,000
users who all have usage rows.

Set-up: a server with no executor (nothing starts, so the queue stays as written; every read of the
queue object runs all the same). The rows are written with sqlite3 while the server is stopped, then
each call is timed over HTTP, warm. The job asked about is the newest of its user (the 100th), the
worst case of the position's reads.
"""
from __future__ import annotations

import sqlite3
import statistics
import time
from datetime import timedelta

import requests

from bench.common import TRIVIAL, Row, cluster, main, spread

QUEUED = 100_000
ENDED = 900_000
USERS = 1_000
TARGET_MS = 50.0
STAMP = "%Y-%m-%d %H:%M:%S.%f"
#: Calls before the timed ones: each of the server's 8 web threads has its own SQLite connection and page cache.
WARM_UP = 24


def fill(database: str, ended: int, queued: int) -> None:
    """`ended` Completed jobs of the `example` service (a run of 1 to 60 s each), then `queued` Queued
    ones, spread over USERS users in turn; then `queued` Queued jobs of the fair_share service `fair`,
    and a Usage row for each of its USERS users (1 to 1,000 slot-seconds, written 0 to 16 h ago)."""
    from storage.clock import utcnow
    now = utcnow()

    def row(n: int):
        created = now - timedelta(seconds=ended + queued - n)
        stamp = created.strftime(STAMP)
        if n >= ended:
            return (1 + n % USERS, "example", "Queued", f"/none/{n}", stamp, stamp, None, None, None, 0)
        finished = (created + timedelta(seconds=1 + n % 60)).strftime(STAMP)
        return (1 + n % USERS, "example", "Completed", f"/none/{n}", stamp, finished, stamp, finished, "Completed", 1)
    connection = sqlite3.connect(database)
    with connection:
        connection.executemany(
            "INSERT INTO Job (user_id, service, state, dir, created_at, updated_at, started_at, finished_at, "
            "outcome, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (row(n) for n in range(ended + queued)))
        connection.executemany(
            "INSERT INTO Job (user_id, service, state, dir, created_at, updated_at, attempts) "
            "VALUES (?, 'fair', 'Queued', '/none', ?, ?, 0)",
            ((1 + n % USERS, stamp, stamp) for n in range(queued)
             for stamp in [(now - timedelta(seconds=queued - n)).strftime(STAMP)]))
        connection.executemany(
            "INSERT INTO Usage (service, user_id, slot_seconds, as_of) VALUES ('fair', ?, ?, ?)",
            ((user, float(user), (now - timedelta(minutes=user)).strftime(STAMP)) for user in range(1, USERS + 1)))
    connection.close()


def timed(call, runs: int) -> list[float]:
    for _ in range(WARM_UP):
        call()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return times


def run(quick: bool) -> list[Row]:
    queued, ended, runs = (10_000, 10_000, 5) if quick else (QUEUED, ENDED, 20)
    session = requests.Session()
    with cluster() as nodes:
        server = nodes.server({"example": {"clients": "", "runs_per_user": 5},
                               "fair": {"clients": "", "runs_per_user": 5, "policy": "fair_share"}})
        server.stop()  # it made the tables; now fill them while nobody else writes
        fill(str(server.folder / "data" / "orchestrator.sqlite"), ended, queued)
        server = server.restart()
        newest = ended + queued  # the last row: its user's 100th queued job
        fair_newest = newest + queued  # likewise in `fair`: user 1000, with the most usage (1,000 s)

        def view():
            answer = session.get(f"{server.url}/jobs/{newest}", timeout=60)
            answer.raise_for_status()
            assert answer.json()["queue"]["position"] == queued, answer.json()

        def fair_view():
            answer = session.get(f"{server.url}/jobs/{fair_newest}", timeout=60)
            answer.raise_for_status()
            assert answer.json()["queue"]["policy"]["rank"] == USERS, answer.json()

        def submit():
            session.post(f"{server.url}/upload", data={"user_id": "1", "service": "example"},
                         files=[("file", ("run.sh", TRIVIAL))], timeout=60).raise_for_status()

        def finished():  # the same call without the queue object: what the queue object adds is the difference
            session.get(f"{server.url}/jobs/1", timeout=60).raise_for_status()

        measured = [("11a. GET /jobs/{id} of a queued job", timed(view, runs)),
                    ("11a'. GET /jobs/{id} of an ended job (no queue object)", timed(finished, runs)),
                    ("11a''. GET /jobs/{id} of a queued job of a fair_share service (1,000 users with usage)",
                     timed(fair_view, runs)),
                    ("11b. POST /upload (its answer carries the queue)", timed(submit, runs))]
    return [Row(f"{name}, {queued:,} queued, {ended + queued:,} jobs in the database", spread(times, " ms"),
                f"<= {TARGET_MS:.0f} ms", "-", None if quick else statistics.median(times) <= TARGET_MS)
            for name, times in measured]


if __name__ == "__main__":
    main(run)
