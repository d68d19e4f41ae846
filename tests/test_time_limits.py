"""Time limits on real server and executor processes (local backend): a job still running at its
limit (the upload's max_runtime, else its service's) is stopped, with every process it started, and
ends Failed with the reason "time limit (N s)"; the node runs the next job as before.

One server and one executor serve the module; both limited jobs run side by side from its start.
The decisions without processes are in tests/test_time_limits_fast.py; Slurm's --time in
tests/test_slurm_jobs.py.
"""
from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

import pytest

from tests.harness import commands_running, job, submit, upload_with, wait_for_outcome, wait_until

#: The service's limit; an upload asks for less.
SERVICE_LIMIT = 3


@pytest.fixture(scope="module")
def stack(module_cluster):
    runner = module_cluster.executor("example", slots=2)
    server = module_cluster.server({"example": {"clients": runner.url, "runs_per_user": 4,
                                                "max_runtime": SERVICE_LIMIT}})
    asked = upload_with(server, "sleep 600", {"max_runtime": "2"})
    assert asked.status_code == 200, asked.text
    inherited = submit(server, "sleep 601")
    return SimpleNamespace(server=server, runner=runner, asked=asked.json()["id"], inherited=inherited)


def ran_for(record: dict) -> float:
    return (datetime.fromisoformat(record["finished_at"].rstrip("Z"))
            - datetime.fromisoformat(record["started_at"].rstrip("Z"))).total_seconds()


def stopped_at(stack, job_id: int, limit: int, command: bytes) -> None:
    assert wait_for_outcome(stack.server, job_id, 20) == 204
    record = job(stack.server, job_id)
    assert record["status"] == "Failed" and record["reason"] == f"time limit ({limit} s)", record
    assert record["max_runtime"] == limit and record["exit_code"] == 128 + 9
    # Stopped at its limit, to within the node's exit polls (a quarter second) and its reports; the
    # server stamps the start when the node's report of it arrives, a little after the node started
    # the job's clock (CI once measured 2.993 s for a 3-s limit), hence the lower margin.
    assert limit - 0.5 <= ran_for(record) < limit + 1.5, record
    wait_until(lambda: commands_running(stack.runner.marker, b"sleep", command) == 0, 5, 0.05,
               "the job's processes to be gone")


def test_a_job_running_at_its_uploads_max_runtime_is_stopped_and_fails_naming_it(stack):
    stopped_at(stack, stack.asked, 2, b"600")


def test_a_job_without_its_own_limit_is_stopped_at_its_services(stack):
    stopped_at(stack, stack.inherited, SERVICE_LIMIT, b"601")


def test_after_a_stopped_job_the_node_runs_the_next_one(stack):
    wait_for_outcome(stack.server, stack.inherited, 20)
    done = submit(stack.server, "echo fine > out.txt")

    assert wait_for_outcome(stack.server, done, 20) == 200
    assert job(stack.server, done)["max_runtime"] == SERVICE_LIMIT


@pytest.mark.parametrize("asked", ["-1", "0", "abc", str(SERVICE_LIMIT + 1)])
def test_a_bad_max_runtime_is_refused_saying_what_is_accepted(stack, asked):
    refused = upload_with(stack.server, "echo never", {"max_runtime": asked})

    assert refused.status_code == 400, refused.text
    assert f"from 1 to {SERVICE_LIMIT} (the service's max_runtime), got '{asked}'" in refused.json()["description"]
