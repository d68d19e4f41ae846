"""Figure 10: `GET /jobs` with 1,000,000 jobs in the database: a page within 50 ms, whatever the
filters, however deep.

Set-up: a server with two portals and an operator, whose database holds 1,000,000 jobs over 30 days
(created one after another, as uploads are): 80% of portal `haddock`, 20% of `prodigy`; 1,000 users
per portal; 95% of the `example` service, 5% of `rare`; 20,000 queued, 50 running, one in 10 of the
ended ones Failed and one in 1,000 Cancelled, the rest Completed, Cleaned after a day. The rows are
written with sqlite3 while the server is stopped; then each page is asked for over HTTP, warm.
"""
from __future__ import annotations

import random
import sqlite3
import statistics
from datetime import datetime, timedelta

from bench.common import Row, cluster, main, spread
from bench.million_jobs import STAMP, answer_times
from tests.harness import add_section, bearer

TOTAL = 1_000_000
QUEUED = 20_000
RUNNING = 50
USERS = 1_000
DAYS = 30
TARGET_MS = 50.0
HADDOCK = "haddock-bench-token-0123456789abcdef"
PRODIGY = "prodigy-bench-token-0123456789abcdef"
OPERATOR = "operator-bench-token-0123456789abcdef"
SECRET = "cluster-bench-secret-0123456789abcdef"


def fill(database: str, total: int) -> list[str]:
    """`total` jobs as described above, oldest first; returns their public ids in that order."""
    from storage import public_ids
    from storage.clock import utcnow
    now, rng = utcnow(), random.Random(10)
    step = DAYS * 86400 / total
    ids = [public_ids.new() for _ in range(total)]

    def row(n: int):
        created = now - timedelta(seconds=(total - n) * step)
        portal = "prodigy" if n % 5 == 0 else "haddock"
        user, service = 1 + rng.randrange(USERS), "rare" if n % 20 == 1 else "example"
        stamp = created.strftime(STAMP)
        state, outcome = standing(n, total - n, created, now, QUEUED, RUNNING)
        return (user, service, portal, ids[n], state, f"/none/{n}", stamp, stamp, outcome,
                int(state != "Queued"), "run.sh exited with code 1" if outcome == "Failed" else None)
    connection = sqlite3.connect(database)
    with connection:
        connection.executemany(
            "INSERT INTO Job (user_id, service, portal, public_id, state, dir, created_at, updated_at, outcome, "
            "attempts, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (row(n) for n in range(total)))
    connection.close()
    return ids


def standing(n: int, age: int, created: datetime, now: datetime, queued: int, running: int) -> tuple[str, str | None]:
    """(state, outcome) of the job `n`, `age`-th newest: the `queued` newest Queued, the `running`
    next Running, then one in 1,000 Cancelled, one in 10 Failed, the rest Completed; Cleaned after a
    day (bench/tes.py's tasks too)."""
    if age <= queued:
        return "Queued", None
    if age <= queued + running:
        return "Running", None
    outcome = "Cancelled" if n % 1000 == 3 else "Failed" if n % 10 == 0 else "Completed"
    return (outcome if created > now - timedelta(days=1) else "Cleaned"), outcome


def pages(ids: list[str], day: tuple[str, str]) -> list[tuple[str, str, str, str]]:
    """(figure, what, query, token) of each page measured; `day`: a day a week ago, as ISO times."""
    from web.job_list import encode_cursor
    middle = encode_cursor(ids[len(ids) // 2 // 5 * 5 + 1])  # a haddock job half way down
    one_day = f"created_after={day[0]}&created_before={day[1]}"
    return [
        ("10a", "first page of a portal", "", HADDOCK),
        ("10b", "first page of the operator (every portal)", "", OPERATOR),
        ("10c", "a page half way down (cursor)", f"cursor={middle}", HADDOCK),
        ("10d", "one user", "user_id=17", HADDOCK),
        ("10e", "the rare service", "service=rare", HADDOCK),
        ("10f", "a rare status (Cancelled) of the big portal", "status=Cancelled", HADDOCK),
        ("10g", "three statuses", "status=Running&status=Failed&status=Cancelled", HADDOCK),
        ("10h", "created in one day a week ago", one_day, HADDOCK),
        ("10i", "user, rare service, two statuses, a day, deep", f"user_id=17&service=rare&status=Cancelled&"
                                                                 f"status=Completed&{one_day}&cursor={middle}", HADDOCK),
        ("10j", "1,000 a page, the operator, one user", "user_id=17&limit=1000", OPERATOR),
        ("10k", "1,000 a page, the operator, no filter", "limit=1000", OPERATOR),
    ]


def run(quick: bool) -> list[Row]:
    from storage.clock import utcnow
    total, runs = (QUEUED + 5_000, 3) if quick else (TOTAL, 20)
    with cluster() as nodes:
        services = {name: {"clients": "http://127.0.0.1:9"} for name in ("example", "rare")}
        server = nodes.server(services, tokens={"haddock": HADDOCK, "prodigy": PRODIGY}, cluster_secret=SECRET)
        server.stop()  # it made the tables and their indexes; now fill them while nobody else writes
        ids = fill(str(server.folder / "data" / "orchestrator.sqlite"), total)
        server = add_section(server, "operators", {"ops": OPERATOR}).restart()
        week_ago = utcnow() - timedelta(days=7)
        day = tuple((week_ago + timedelta(days=n)).strftime("%Y-%m-%dT%H:%M:%SZ") for n in (0, 1))
        measured = [(figure, what, answer_times(f"{server.url}/jobs?{query}", runs, bearer(token)))
                    for figure, what, query, token in pages(ids, day)]
    return [Row(f"{figure}. `GET /jobs`: {what}, {total:,} jobs", spread(times, " ms"), f"<= {TARGET_MS:.0f} ms", "-",
                None if quick else statistics.median(times) <= TARGET_MS) for figure, what, times in measured]


if __name__ == "__main__":
    main(run)
