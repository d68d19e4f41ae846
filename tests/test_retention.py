"""Retention: ended jobs lose their data after retention_hours, on the server and the executor."""
from __future__ import annotations

import os

import requests

from tests.harness import job, submit, wait_for_outcome, wait_until

SHORT_HOURS = 0.0005  # 1.8 s


def head(server, job_id: int) -> int:
    return requests.head(f"{server.url}/download/{job_id}", timeout=5).status_code


def test_an_expired_job_is_cleaned_everywhere_and_keeps_its_history(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}}, retention_hours=SHORT_HOURS)
    completed = submit(server, "echo done > out.txt")
    failed = submit(server, "exit 4")
    assert wait_for_outcome(server, completed) == 200
    assert wait_for_outcome(server, failed) == 204

    wait_until(lambda: job(server, completed)["status"] == "Cleaned", 20, 0.1, "the completed job to be cleaned")
    wait_until(lambda: job(server, failed)["status"] == "Cleaned", 20, 0.1, "the failed job to be cleaned")

    assert head(server, completed) == 204
    record = job(server, completed)
    assert record["outcome"] == "Completed" and record["exit_code"] == 0 and record["cleaned_at"]
    assert job(server, failed)["outcome"] == "Failed"
    data = server.folder / "data"
    assert os.listdir(data / "jobs") == [] and os.listdir(data / "results") == []
    wait_until(lambda: os.listdir(executor.folder / "data" / "tasks") == [], 10, 0.1, "the executor's copies to go")


def test_a_service_can_keep_its_jobs_longer_than_the_server_default(cluster):
    quick = cluster.executor("quick")
    slow = cluster.executor("kept")
    server = cluster.server({"quick": {"clients": quick.url}, "kept": {"clients": slow.url, "retention_hours": 48}},
                            retention_hours=SHORT_HOURS)
    gone = submit(server, "true", service="quick")
    kept = submit(server, "true", service="kept")
    assert wait_for_outcome(server, gone) == 200 and wait_for_outcome(server, kept) == 200

    wait_until(lambda: job(server, gone)["status"] == "Cleaned", 20, 0.1, "the quick service's job to be cleaned")

    assert head(server, kept) == 200
    assert job(server, kept)["status"] == "Completed"
