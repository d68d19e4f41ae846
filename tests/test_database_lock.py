"""Another process holding the server's SQLite write lock (say `sqlite3 orchestrator.sqlite` with
`BEGIN EXCLUSIVE` left open): uploads wait, then get 503 with Retry-After, /health says the database
is locked, and once the lock is let go every job accepted before, during and after ends Completed.
"""
from __future__ import annotations

import sqlite3

from tests.harness import job, script, submit, upload, wait_for_outcome, wait_until


def test_an_outside_write_lock_gets_503_with_retry_after_and_loses_nothing(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 4}})
    before = [submit(server, "sleep 1; echo before > out.txt") for _ in range(4)]
    # they end, report and are fetched while the lock is held
    wait_until(lambda: all(job(server, j)["status"] == "Running" for j in before), 20, 0.05, "the jobs to run")

    outsider = sqlite3.connect(server.folder / "data" / "orchestrator.sqlite", isolation_level=None,
                               check_same_thread=False)
    outsider.execute("BEGIN EXCLUSIVE")
    try:
        health = server.health(timeout=30)
        assert health.status_code == 503 and health.json()["database"] == "locked", health.text
        assert health.headers.get("Retry-After")
        answer = upload(server, {"run.sh": script("echo during > out.txt")})  # waits out the busy timeout
        assert answer.status_code == 503, answer.text
        assert answer.headers.get("Retry-After") and "locked" in answer.json()["description"]
    finally:
        outsider.execute("ROLLBACK")
        outsider.close()

    after = submit(server, "echo after > out.txt")
    assert after == before[-1] + 1  # the refused upload wrote no row
    # the jobs that ran while the lock was held (their reports, their results) all end well
    for job_id in [*before, after]:
        assert wait_for_outcome(server, job_id, 60) == 200, job(server, job_id)
        assert job(server, job_id)["status"] == "Completed"
    assert server.health(timeout=10).status_code == 200
