"""A service removed from (or renamed in) server.ini while it had jobs: after the restart its jobs
end in one terminal state within a bounded time, and none goes back to the queue.

One server restart covers every case at once: a job of a removed service whose executor is gone
(Failed once executor_timeout passes), one whose executor is still alive (it runs to its end and
Completes with its result), and one of a renamed service whose executor now serves the new name
(Failed, never Queued again), while the renamed service runs new jobs.
"""
from __future__ import annotations

import time

import pytest

from storage import jobs
from storage.clock import utcnow
from storage.states import JobState
from tests.harness import job, new_job, results, submit, wait_for_outcome, wait_until

TIMEOUT = 2  # executor_timeout, seconds
#: The bound promised: executor_timeout, plus the dispatcher's check interval, plus slack for a
#: loaded machine.
BOUND = TIMEOUT + TIMEOUT / 3 + 5
#: Waits in its folder until the test drops a file there, so it is still running at the restart.
WAIT_FOR_GO = "while [ ! -e go ]; do sleep 0.05; done\necho finished > out.txt"


def gone_message(service: str) -> str:
    return f"service {service!r} is no longer configured on this server"


# --- the rules, on a temp SQLite database ---------------------------------------------------------

def on_executor(service: str, running: bool = True) -> int:
    """A job of `service` that an executor accepted (attempt 1), and started if `running`."""
    job_id = new_job(1, service)
    jobs.claim_for_dispatch([job_id], utcnow())
    jobs.begin_attempts([(job_id, "http://127.0.0.1:9")], utcnow())
    jobs.mark_submitted([(job_id, 1, "7")], utcnow())
    if running:
        jobs.mark_running([(job_id, 1)], utcnow())
    return job_id


def test_a_lost_job_of_a_service_no_longer_configured_fails_at_its_first_attempt(clean_database):
    served, unserved = on_executor("example"), on_executor("gone", running=False)
    assert jobs.requeue_or_fail(served, 1, "its executor lost it", 3, utcnow(), {"example"})[1] is JobState.QUEUED
    assert jobs.requeue_or_fail(unserved, 1, "its executor lost it", 3, utcnow(), {"example"})[1] is JobState.FAILED
    failed = jobs.get_ref(unserved)
    assert failed.state is JobState.FAILED
    assert jobs.job_view(unserved)["reason"] == f"its executor lost it; {gone_message('gone')}"


def test_the_services_no_longer_configured_with_jobs_on_an_executor_are_those_to_watch(clean_database):
    on_executor("example")
    on_executor("gone")
    on_executor("old", running=False)
    new_job(1, "waiting")  # Queued: failed at start, nothing to watch
    ended = on_executor("ended")
    jobs.finish(ended, 1, JobState.COMPLETED, utcnow())
    assert jobs.unserved_under_way(["example"]) == ["gone", "old"]


# --- real nodes -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def restarted(module_cluster):
    cluster = module_cluster
    gone, alive, old = (cluster.executor(name, slots=1) for name in ("gone", "alive", "old"))
    services = {name: {"clients": node.url} for name, node in (("gone", gone), ("alive", alive), ("old", old))}
    server = cluster.server(services, executor_timeout=TIMEOUT)
    ids = {name: submit(server, "sleep 600" if name != "alive" else WAIT_FOR_GO, service=name)
           for name in services}
    for job_id in ids.values():
        wait_until(lambda: job(server, job_id)["status"] == "Running", 30, 0.05, f"job {job_id} to run")
    server.stop()
    gone.stop()
    old.stop()
    # "old" is renamed "new": its executor now serves "new" at the same address.
    renamed = cluster.executor("new", port=old.port, slots=1)
    again = cluster.server({"alive": {"clients": alive.url}, "new": {"clients": renamed.url}}, port=server.port,
                           executor_timeout=TIMEOUT)
    return again, ids, alive, time.monotonic()


def test_a_job_of_a_removed_service_whose_executor_is_gone_fails_within_the_bound(restarted):
    server, ids, _, started = restarted
    assert wait_for_outcome(server, ids["gone"], BOUND) == 204
    assert time.monotonic() - started < BOUND
    record = job(server, ids["gone"])
    assert record["status"] == "Failed" and gone_message("gone") in record["reason"]
    assert record["attempts"] == 1


def test_a_job_of_a_removed_service_whose_executor_lives_completes_with_its_result(restarted):
    server, ids, alive, _ = restarted
    (folder,) = {path.parent for path in (alive.folder / "data").rglob("run.sh")}
    (folder / "go").write_text("")
    assert wait_for_outcome(server, ids["alive"], 30) == 200
    assert results(server, ids["alive"]).read("out.txt") == b"finished\n"


def test_a_job_of_a_renamed_service_fails_and_is_never_queued_again_while_the_new_name_runs_jobs(restarted):
    server, ids, _, _ = restarted
    assert wait_for_outcome(server, ids["old"], BOUND) == 204
    record = job(server, ids["old"])
    assert record["status"] == "Failed" and gone_message("old") in record["reason"]
    assert record["attempts"] == 1
    log = server.log_path.read_text(errors="replace").splitlines()
    assert not [line for line in log if f"job {ids['old']}: " in line and "queued again" in line]
    assert wait_for_outcome(server, submit(server, "echo renamed > out.txt", service="new"), 30) == 200
