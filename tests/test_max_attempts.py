"""max_attempts: a job whose executor is killed under it three times (each time declared lost after
executor_timeout, and the job sent again once the executor is back) ends Failed, saying so."""
from __future__ import annotations

from tests.harness import job, submit, wait_for_outcome, wait_until

TIMEOUT = 2  # executor_timeout, seconds
#: executor_timeout, plus the dispatcher's check interval, plus slack for a loaded machine.
BOUND = TIMEOUT + TIMEOUT / 3 + 8


def test_a_job_whose_executor_is_lost_three_times_fails_with_attempt_3_of_3(cluster):
    executor = cluster.executor("example", slots=1)
    server = cluster.server({"example": {"clients": executor.url}}, executor_timeout=TIMEOUT, max_attempts=3)
    job_id = submit(server, "sleep 600")

    for attempt in (1, 2, 3):
        wait_until(lambda: (record := job(server, job_id))["attempts"] == attempt and record["status"] == "Running",
                   30, 0.05, f"attempt {attempt} to run")
        executor.kill_everything()  # kill -9 of the node and its script
        executor.process.wait(10)
        if attempt < 3:
            wait_until(lambda: (record := job(server, job_id))["status"] == "Queued"
                       and record["reason"] == f"executor {executor.url} was lost", BOUND, 0.05,
                       f"attempt {attempt}'s executor to be declared lost")
            executor = executor.restart()

    assert wait_for_outcome(server, job_id, BOUND) == 204
    record = job(server, job_id)
    assert record["status"] == "Failed" and record["attempts"] == 3
    assert record["reason"] == f"executor {executor.url} was lost (attempt 3 of 3)"
