"""Retention: ended jobs lose their data after retention_hours, on the server and the executor.

The rules at an explicit `now`, in this process: the server's JanitorActor.sweep(now) on a temp
SQLite file (`clean_database`; its link to the executors, an HTTP client to another node, replaced by
a recorder) and the executor's ExecutorActor.sweep(now) on the node's task table
(`clean_node_database`). Neither needs an actor system: sweep reads only `config`, the database and
the data folders. One end-to-end test on real nodes checks that the pieces are wired together: an
expired job is cleaned on both nodes and keeps its history.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests

from actors.node import executor as executor_module
from actors.node.executor import ExecutorActor
from actors.server import base as server_actor_base
from actors.server import janitor as janitor_module
from actors.server.executor_link import ExecutorUnreachable
from actors.server.janitor import JanitorActor
from conf.settings import ClientConfig, ServerConfig, ServiceConfig
from storage import jobs, tes_tasks
from storage.node import tasks
from storage.node.states import TaskState
from storage.states import JobState
from tests.harness import job, submit, wait_for_outcome, wait_until

FINISHED = datetime(2024, 5, 1, 9, 30)
SECOND = timedelta(seconds=1)
EXECUTOR = "http://e:1"


@pytest.fixture(autouse=True)
def no_parent_death_signal(monkeypatch):
    """An actor's __init__ asks the kernel to kill its process with its parent: meant for the actor
    processes of a node, not for this test process."""
    monkeypatch.setattr(server_actor_base, "die_with_parent", lambda: None)
    monkeypatch.setattr(executor_module, "die_with_parent", lambda: None)


# --- the server's janitor ------------------------------------------------------------------------

class Deletes:
    """Stands in for the janitor's ExecutorLink: records each DELETE it would send; an executor in
    `unreachable` does not answer."""

    def __init__(self, unreachable: frozenset[str] = frozenset()):
        self.sent: list[tuple[str, str]] = []
        self.unreachable = unreachable

    def delete(self, base: str, remote_id: str) -> None:
        if base in self.unreachable:
            raise ExecutorUnreachable(f"{base} did not answer", delivered=False)
        self.sent.append((base, remote_id))


def janitor(tmp_path: Path, link: Deletes | None = None, **services: float | None) -> JanitorActor:
    """A JanitorActor as `configured` leaves it: server retention 2 h; `services`: name → its
    retention_hours (None: the server's)."""
    actor = JanitorActor()
    actor.config = ServerConfig(data_dir=str(tmp_path / "server"), retention_hours=2,
                                services=tuple(ServiceConfig(name, retention_hours=hours)
                                               for name, hours in services.items()))
    actor.link = link or Deletes()
    return actor


def completed_job(actor: JanitorActor, service: str = "example", executor: str | None = EXECUTOR,
                  finished: datetime = FINISHED, failed: bool = False) -> int:
    """A job of `service` completed at `finished` on `executor` (None: cancelled before it was sent),
    with its folder and result zip on disk; `failed`: failed there instead, with no result zip."""
    config = actor.config
    folder = Path(config.jobs_path) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    (folder / "run.sh").write_text("true\n")
    job_id = jobs.create_job(1, service, str(folder), finished - timedelta(minutes=1))[0]
    if executor is None:
        jobs.finish(job_id, None, JobState.CANCELLED, finished)
        return job_id
    jobs.claim_for_dispatch([job_id], finished)
    attempt = jobs.begin_attempts([(job_id, executor)], finished)[job_id]
    jobs.mark_submitted([(job_id, attempt, f"task-{job_id}")], finished)
    os.makedirs(config.results_path, exist_ok=True)
    if failed:
        jobs.finish(job_id, attempt, JobState.FAILED, finished, exit_code=3, reason="run.sh exited with code 3")
        return job_id
    Path(config.result_file(job_id)).write_bytes(b"PK\x05\x06" + bytes(18))
    jobs.finish(job_id, attempt, JobState.COMPLETED, finished, exit_code=0, result_path=config.result_file(job_id))
    return job_id


def data_left(actor: JanitorActor, job_id: int) -> tuple[bool, bool]:
    """(its folder is there, its result zip is there)."""
    return os.path.isdir(jobs.get_ref(job_id).dir), os.path.exists(actor.config.result_file(job_id))


def test_a_job_stays_until_its_retention_has_passed_then_loses_its_data_everywhere_and_keeps_its_history(
        clean_database, tmp_path):
    actor = janitor(tmp_path, example=None)
    job_id = completed_job(actor)
    cutoff = FINISHED + timedelta(hours=2)

    assert actor.sweep(cutoff - SECOND) == 0
    assert jobs.get_ref(job_id).state is JobState.COMPLETED and data_left(actor, job_id) == (True, True)
    assert actor.link.sent == []

    assert actor.sweep(cutoff + SECOND) == 1

    assert data_left(actor, job_id) == (False, False)
    assert actor.link.sent == [(EXECUTOR, f"task-{job_id}")]
    view = jobs.job_view(job_id)
    assert (view["status"], view["outcome"], view["exit_code"], view["attempts"]) == ("Cleaned", "Completed", 0, 1)
    assert view["cleaned_at"] == (cutoff + SECOND).isoformat() + "Z"
    assert view["finished_at"] == FINISHED.isoformat() + "Z"
    assert jobs.download_info(job_id) == (JobState.CLEANED, None)
    assert actor.sweep(cutoff + 2 * SECOND) == 0 and len(actor.link.sent) == 1  # nothing twice


def test_a_service_keeps_its_jobs_for_its_own_retention_and_the_others_for_the_servers(clean_database, tmp_path):
    actor = janitor(tmp_path, quick=0.5, kept=48, example=None)
    quick, kept, default = (completed_job(actor, name) for name in ("quick", "kept", "example"))

    def states():
        return [jobs.get_ref(job_id).state for job_id in (quick, kept, default)]

    actor.sweep(FINISHED + timedelta(hours=1))
    assert states() == [JobState.CLEANED, JobState.COMPLETED, JobState.COMPLETED]
    actor.sweep(FINISHED + timedelta(hours=47))
    assert states() == [JobState.CLEANED, JobState.COMPLETED, JobState.CLEANED]
    assert data_left(actor, kept) == (True, True)
    actor.sweep(FINISHED + timedelta(hours=48, seconds=1))
    assert states() == [JobState.CLEANED] * 3


def test_a_job_of_a_service_no_longer_configured_is_kept_for_the_servers_retention(clean_database, tmp_path):
    actor = janitor(tmp_path, example=48)
    gone = completed_job(actor, "removed")

    actor.sweep(FINISHED + timedelta(hours=2, seconds=1))

    assert jobs.get_ref(gone).state is JobState.CLEANED and data_left(actor, gone) == (False, False)


def test_a_job_that_never_reached_an_executor_or_whose_executor_is_down_is_cleaned_all_the_same(
        clean_database, tmp_path):
    actor = janitor(tmp_path, Deletes(unreachable=frozenset({"http://down:1"})), example=None)
    never_sent = completed_job(actor, executor=None)
    down = completed_job(actor, executor="http://down:1")
    up = completed_job(actor)

    assert actor.sweep(FINISHED + timedelta(hours=3)) == 3

    assert {jobs.get_ref(job_id).state for job_id in (never_sent, down, up)} == {JobState.CLEANED}
    assert data_left(actor, down) == (False, False) and not os.path.isdir(jobs.get_ref(never_sent).dir)
    # The executor's own retention removes what this delete missed.
    assert actor.link.sent == [(EXECUTOR, f"task-{up}")]


def test_a_sweep_cleans_at_most_a_batch_oldest_first_and_says_how_many(clean_database, tmp_path, monkeypatch):
    monkeypatch.setattr(janitor_module, "BATCH", 2)
    actor = janitor(tmp_path, example=None)
    ids = [completed_job(actor, finished=FINISHED - n * SECOND) for n in range(3)]  # the last is the oldest

    assert actor.sweep(FINISHED + timedelta(hours=3)) == 2
    assert [jobs.get_ref(job_id).state for job_id in ids] == [JobState.COMPLETED, JobState.CLEANED, JobState.CLEANED]
    assert actor.sweep(FINISHED + timedelta(hours=3)) == 1


def test_results_attached_after_a_failure_are_cleaned_with_the_job_and_none_attach_once_it_is_cleaned(
        clean_database, tmp_path):
    """A failed TES task is written Failed at once and its results attached once fetched (the retriever)."""
    actor = janitor(tmp_path, example=None)
    attached, fetched_late = completed_job(actor, failed=True), completed_job(actor, failed=True)
    zipped = Path(actor.config.result_file(attached))
    zipped.write_bytes(b"PK\x05\x06" + bytes(18))
    kept = Path(tes_tasks.sidecar(str(zipped)))  # what the TES views read from the zip (web/tes/results.py)
    kept.write_text("{}")
    assert jobs.attach_result(attached, 1, str(zipped))
    assert jobs.download_info(attached) == (JobState.FAILED, str(zipped))

    assert actor.sweep(FINISHED + timedelta(hours=3)) == 2

    assert data_left(actor, attached) == (False, False) and jobs.download_info(attached) == (JobState.CLEANED, None)
    assert not kept.exists()
    assert not jobs.attach_result(fetched_late, 1, actor.config.result_file(fetched_late))
    assert jobs.download_info(fetched_late) == (JobState.CLEANED, None)


# --- the executor's own retention ----------------------------------------------------------------

def executor_actor(tmp_path: Path) -> ExecutorActor:
    """An ExecutorActor as ConfigureExecutor leaves it, for its sweep: node retention 1 h."""
    actor = ExecutorActor()
    actor.config = ClientConfig(data_dir=str(tmp_path / "node"), retention_hours=1)
    return actor


def task(actor: ExecutorActor, n: int, finished: datetime | None, reported: bool = True) -> int:
    """A task with its folder and zip (and the zip's lock) on disk, ended at `finished` (None: running)."""
    folder = Path(actor.config.tasks_path) / f"job-{n}"
    (folder / "deep" / "er").mkdir(parents=True)
    (folder / "deep" / "er" / "out.txt").write_text("result\n")
    task_id = int(tasks.create(n, f"job-{n}", 1, None, str(folder), FINISHED - timedelta(hours=1))["id"])
    tasks.mark_running(task_id, 4242, 99, FINISHED - timedelta(hours=1))
    os.makedirs(actor.config.zips_path, exist_ok=True)
    for name in (actor.config.zip_file(task_id), f"{actor.config.zip_file(task_id)}.lock"):
        Path(name).write_bytes(b"")
    if finished is not None:
        tasks.mark_ended(task_id, TaskState.FINISHED, finished, exit_code=0)
        if reported:
            tasks.mark_reported([task_id])
    return task_id


def on_disk(actor: ExecutorActor, task_id: int) -> tuple[bool, bool, bool]:
    """(its folder, its zip, the zip's lock) are there."""
    zipped = actor.config.zip_file(task_id)
    return os.path.isdir(tasks.find(task_id)["dir"]), os.path.exists(zipped), os.path.exists(f"{zipped}.lock")


def test_the_executor_removes_the_folder_and_zip_of_reported_tasks_past_its_retention_only(
        clean_node_database, tmp_path):
    actor = executor_actor(tmp_path)
    now = FINISHED + timedelta(hours=1, seconds=1)
    expired = task(actor, 1, FINISHED)
    unheard = task(actor, 2, FINISHED, reported=False)  # the server does not know its end yet
    recent = task(actor, 3, FINISHED + 2 * SECOND)        # one second short of its retention
    running = task(actor, 4, None)

    actor.sweep(now)

    assert on_disk(actor, expired) == (False, False, False) and tasks.find(expired)["state"] == "cleaned"
    for kept, state in ((unheard, "finished"), (recent, "finished"), (running, "running")):
        assert on_disk(actor, kept) == (True, True, True) and tasks.find(kept)["state"] == state
    # The row stays: the server may still ask about the attempt.
    assert tasks.find(expired)["exit_code"] == 0


# --- real nodes ----------------------------------------------------------------------------------

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
    node = executor.folder / "data"
    wait_until(lambda: os.listdir(node / "tasks") == [] and os.listdir(node / "zips") == [], 10, 0.1,
               "the executor's copies (folders and zips) to go")
