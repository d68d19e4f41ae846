"""Figure 4: with 100,000 jobs queued for other users of the same service, a new user's trivial job
turnaround stays within 2x the empty-queue figure.

Set-up: runs_per_user = 1 and 8 executor slots. Seven other users each have one long job running
(so their 100,000 queued jobs cannot be admitted) and one slot stays free for the new user.
"""
from __future__ import annotations

import statistics

from bench.common import Row, cluster, main, spread
from bench.turnaround import measure
from storage import database
from tests.harness import commands_running, script, wait_until

OTHERS = 7
ALL_QUEUED = 100_000


def _fill(data_dir, count: int) -> None:
    """Per other user: one real long job first (it will run), then its share of `count` queued ones."""
    from pony.orm import db_session

    from storage.clock import utcnow
    from storage.models import Job, db
    database.bind(db, str(data_dir / "orchestrator.sqlite"), create_tables=True)
    now = utcnow()
    with db_session:
        for user in range(1, OTHERS + 1):
            folder = data_dir / "jobs" / f"sleeper-{user}"
            folder.mkdir(parents=True)
            (folder / "run.sh").write_bytes(script("sleep 600"))
            Job(user_id=user, service="example", dir=str(folder), created_at=now, updated_at=now)
        for n in range(count):
            Job(user_id=1 + n % OTHERS, service="example", dir=f"/nonexistent/{n}", created_at=now, updated_at=now)


def turnaround_with(queued: int, runs: int) -> list[float]:
    with cluster() as nodes:
        executor = nodes.executor("example", slots=OTHERS + 1)
        server = nodes.server({"example": {"clients": executor.url, "runs_per_user": 1}}, start=False)
        if queued:
            _fill(server.folder / "data", queued)
        server.start()
        if queued:
            wait_until(lambda: commands_running(executor.marker, b"sleep", b"600") >= OTHERS, 60, 0.1,
                       "the other users' jobs to run")
        measure(server, 3, user_id=1000)  # warm up
        return measure(server, runs, user_id=1000)


def run(quick: bool) -> list[Row]:
    queued, runs = (2_000, 5) if quick else (ALL_QUEUED, 50)
    empty = turnaround_with(0, runs)
    full = turnaround_with(queued, runs)
    ratio = statistics.median(full) / statistics.median(empty)
    return [Row(f"4. turnaround with {queued} jobs queued for other users",
                spread(full, " ms") + f" vs {statistics.median(empty):.0f} ms empty: {ratio:.2f}x",
                "<= 2x the empty-queue figure", "-", None if quick else ratio <= 2)]


if __name__ == "__main__":
    main(run)
