"""Fetching results, on real nodes: a result slow to zip holds up no other job's outcome, a zip is
made when its script ends (and after a restart of the executor, without being asked), and a
result that cannot be fetched fails its job after max_fetch_failures tries, a count a restart of
the server keeps."""
from __future__ import annotations

import signal
import sqlite3
import zipfile

import pytest

from actors.server.executor_link import ExecutorUnreachable
from actors.server.retriever import RetrieverActor
from tests.harness import job, results, slow_to_zip, submit, wait_for_outcome, wait_until

SLOW_TO_ZIP = slow_to_zip(768)


@pytest.fixture(scope="module")
def nodes(module_cluster):
    """An executor that zips, one whose zips folder is a file (every zip fails, 409), and a server
    that fetches again after 0.3 s and fails a job after 3 failed fetches."""
    good = module_cluster.executor("example", slots=4)
    broken = module_cluster.executor("broken", slots=2)
    (broken.folder / "data" / "zips").write_text("a file where the node keeps its zips")
    server = module_cluster.server({"example": {"clients": good.url}, "broken": {"clients": broken.url}},
                                   fetch_retry_seconds=0.3, max_fetch_failures=3)
    return module_cluster, server, good, broken


def test_a_result_slow_to_zip_holds_up_no_other_job(nodes):
    _, server, good, _ = nodes
    slow = submit(server, SLOW_TO_ZIP)
    wait_until(lambda: job(server, slow)["status"] == "Running" and good.task_state(1) == "finished", 30,
               message="the slow job's script to end")

    quick = [submit(server, f"echo {n} > out.txt") for n in range(3)]
    for job_id in quick:
        assert wait_for_outcome(server, job_id, 20) == 200
    # NOTE: on the old code the retriever waited for the slow fetch before writing any outcome.
    assert job(server, slow)["status"] == "Running", "the quick jobs waited for the slow one's zip"

    assert wait_for_outcome(server, slow, 90) == 200
    archive = results(server, slow, timeout=30)
    assert archive.read("out.txt") == b"slow\n" and archive.getinfo("big.bin").file_size == 768 << 20


def test_a_result_that_cannot_be_fetched_fails_its_job_after_max_fetch_failures(nodes):
    _, server, _, broken = nodes
    job_id = submit(server, "echo ok > out.txt", service="broken")

    assert wait_for_outcome(server, job_id, 30) == 204
    ended = job(server, job_id)
    assert ended["status"] == "Failed" and ended["exit_code"] == 0
    assert ended["reason"].startswith(f"its results could not be fetched from {broken.url} after 3 tries: ")
    assert "409" in ended["reason"] and "could not be zipped" in ended["reason"], ended["reason"]


def test_the_count_of_failed_fetches_survives_a_restart_of_the_server(nodes):
    cluster, _, _, broken = nodes
    # NOTE: no refetch for a minute: the only fetches are the one the report starts and, after the
    # restart, the one the sweep starts; the second can fail the job only if the first was kept.
    server = cluster.server({"broken": {"clients": broken.url}}, fetch_retry_seconds=60, max_fetch_failures=2)
    job_id = submit(server, "echo ok > out.txt", service="broken")
    database = server.folder / "data" / "orchestrator.sqlite"

    def failures() -> int | None:
        with sqlite3.connect(database) as connection:
            return connection.execute("SELECT fetch_failures FROM job WHERE id = ?", (job_id,)).fetchone()[0]
    wait_until(lambda: failures() == 1, 20, message="the first failed fetch")
    server = server.restart()
    assert wait_for_outcome(server, job_id, 30) == 204
    assert "after 2 tries" in job(server, job_id)["reason"]
    server.stop()


def test_a_restarted_executor_makes_the_zip_a_finished_task_lacks_without_being_asked(nodes):
    cluster, server, good, _ = nodes
    job_id = submit(server, "echo kept > out.txt")
    assert wait_for_outcome(server, job_id) == 200
    with sqlite3.connect(server.folder / "data" / "orchestrator.sqlite") as connection:
        (task_id,) = connection.execute("SELECT remote_id FROM job WHERE id = ?", (job_id,)).fetchone()
    made = good.folder / "data" / "zips" / f"{task_id}.zip"
    assert made.exists()  # made when the script ended (the server fetched it since)

    good.stop()
    made.unlink()
    good.restart()

    wait_until(made.exists, 20, message="the restarted executor to make the missing zip")
    assert zipfile.ZipFile(made).read("out.txt") == b"kept\n"


@pytest.mark.parametrize("status, counted", [(None, False), (404, False), (503, False), (502, False),
                                             (409, True), (500, True), (204, True)])
def test_only_an_executor_answering_with_an_error_counts_as_a_failed_fetch(status, counted):
    assert RetrieverActor.counted(ExecutorUnreachable("fetch failed", status=status)) is counted


def test_a_draining_executor_stays_until_the_server_has_fetched_its_results(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}}, fetch_retry_seconds=3)
    job_id = submit(server, f"sleep 1\n{SLOW_TO_ZIP}")
    wait_until(lambda: job(server, job_id)["status"] == "Running", 20, message="the job to run")

    executor.process.send_signal(signal.SIGTERM)  # drain: finish, report, let the server fetch, exit

    # NOTE: the report arrives while the zip is still being made: the first fetch gets 202 and the
    # next comes 3 s later; an executor gone meanwhile would have its job run again (attempt 2),
    # here on no executor at all.
    assert wait_for_outcome(server, job_id, 90) == 200
    assert job(server, job_id)["attempts"] == 1
    assert executor.process.wait(60) == 0
