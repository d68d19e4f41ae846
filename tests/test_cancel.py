"""Cancelling a job over HTTP: a running one has its script stopped and frees its slot; a queued
one never runs; an ended one answers 409 and does not change."""
from __future__ import annotations

import requests

from tests.harness import cancel, commands_running, job, submit, wait_for_outcome, wait_until


def sleepers(executor) -> int:
    """How many `sleep 300` scripts of this executor still run."""
    return commands_running(executor.marker, b"sleep", b"300")


def test_a_running_job_cancelled_stops_its_script_and_frees_its_slot(cluster):
    executor = cluster.executor("example", slots=1)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 1}})
    running = submit(server, "sleep 300")
    waiting = submit(server, "echo next > out.txt")
    wait_until(lambda: job(server, running)["status"] == "Running" and sleepers(executor) == 1, 20, 0.05,
               "the first job to run")

    response = cancel(server, running)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "Cancelled" and response.json()["reason"] == "cancelled on request"
    assert requests.head(f"{server.url}/download/{running}", timeout=10).status_code == 204
    wait_until(lambda: sleepers(executor) == 0, 10, 0.05, "the cancelled job's script to be stopped")
    # NOTE: the script is gone a moment before its end is written down.
    wait_until(lambda: executor.task_state(1) == "killed", 10, 0.05, "the task to be recorded killed")
    assert wait_for_outcome(server, waiting) == 200  # the user's slot and the executor's were freed
    assert job(server, running)["status"] == "Cancelled"  # its executor's late word changed nothing


def test_a_queued_job_cancelled_never_runs(cluster):
    executor = cluster.executor("example", slots=1)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 1}})
    first = submit(server, "sleep 300")
    queued = submit(server, "echo ran > out.txt")
    wait_until(lambda: job(server, first)["status"] == "Running", 20, 0.05, "the first job to run")

    assert cancel(server, queued).json()["status"] == "Cancelled"
    assert cancel(server, first).status_code == 200
    after = submit(server, "echo after > out.txt")

    assert wait_for_outcome(server, after) == 200
    assert job(server, queued)["status"] == "Cancelled" and job(server, queued)["attempts"] == 0
    assert executor.task(3) is None  # only two tasks were sent


def test_an_ended_unknown_or_malformed_job_is_refused_and_unchanged(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})
    done = submit(server, "echo done > out.txt")
    assert wait_for_outcome(server, done) == 200

    ended = cancel(server, done)
    assert ended.status_code == 409 and "Completed" in ended.json()["description"]
    assert job(server, done)["status"] == "Completed"
    assert requests.head(f"{server.url}/download/{done}", timeout=10).status_code == 200
    assert cancel(server, 999_999).status_code == 404
    assert cancel(server, "abc").status_code == 400
