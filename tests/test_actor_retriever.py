"""RetrieverActor's decisions, on Thespian's in-process `simpleSystemBase`.

The executors are HTTP services on other nodes: `Executors` stands in for `ExecutorLink` (installed
on actors.server.retriever): it knows the tasks a test gives it, and serves results as a test says
(the zip, "still being zipped", an error, or no answer). Recorder actors stand in for the quota, the
queue and the service's dispatcher. Covered: what each report of an executor does to its job
(finished with exit 0, non-zero or a limit's verdict, lost, cancelled, a stale attempt's, one that
overtook the submit's answer), result fetches that fail, and the sweep that asks about quiet jobs
(looking up by its attempt a job whose task id was never recorded).

Time and threads: results are fetched on the retriever's pool threads, and the actor takes their
outcomes in at ("collect", n) timers; its timers with a delay (collect, refetch, sweep) are kept by
the test and fired when it says (`Harness.fire`, `Harness.settle`). The flush timer (delay 0) runs
as in Thespian, within the same tell. The sweep reads `storage.clock.utcnow`, which a test sets.
"""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from unittest.mock import ANY
from thespian.actors import ActorSystem

from actors.messages import ActorStarted, Configure, ExecutorEvent, JobEnded, JobQueued, Peers
from actors.server import retriever as retriever_module
from actors.server.executor_link import ExecutorUnreachable
from actors.server.retriever import QUIET_SECONDS, RetrieverActor
from conf.settings import ServerConfig, ServiceConfig
from storage import clock, jobs
from storage.states import JobState
from tests.harness import KEPT_TIMERS, Recorder, fire_timers, keeping_timers, new_job, recorded, wait_until

SERVICE = "example"
A = "http://executor-a.test:9000"
B = "http://executor-b.test:9000"
ZIP = b"PK\x05\x06" + bytes(18)  # an empty zip archive
ASK_TIMEOUT = 5


# --- stand-ins: the peers, the executors and the timers ---------------------------------------------

class Executors:
    """Stands in for ExecutorLink: answers about the tasks in `tasks`, and serves each fetch the next
    of `results` ("zip" when none is left: the zip is written). Fetches run on pool threads."""

    def __init__(self):
        self.lock = threading.Lock()
        #: (executor, task id) → the task as GET /jobs/{id} answers it.
        self.tasks: dict[tuple[str, str], dict] = {}
        #: What the next fetches get: "zip", "busy" (202: being zipped) or an exception to raise.
        self.results: list = []
        self.unreachable: set[str] = set()
        self.questions: list[tuple[str, str]] = []
        self.fetches: list[tuple[str, str]] = []

    def task(self, url: str, remote_id: str, job_id: int, attempt: int = 1, state: str = "running", **more) -> None:
        self.tasks[(url, remote_id)] = {"id": remote_id, "job_id": job_id, "attempt": attempt, "state": state, **more}

    def _reachable(self, base: str) -> None:
        if base in self.unreachable:
            raise ExecutorUnreachable(f"{base}: connection failed", delivered=False)

    # the ExecutorLink methods the retriever calls
    def status(self, base: str, remote_id: str) -> dict | None:
        with self.lock:
            self.questions.append((base, remote_id))
        self._reachable(base)
        return self.tasks.get((base, remote_id))

    def find(self, base: str, job_uid: str, attempt: int) -> dict | None:
        self._reachable(base)
        return next((task for (url, _), task in self.tasks.items()
                     if url == base and (task.get("job_uid"), task["attempt"]) == (job_uid, attempt)), None)

    def fetch(self, base: str, remote_id: str, destination: str) -> bool:
        with self.lock:
            self.fetches.append((base, remote_id))
            result = self.results.pop(0) if self.results else "zip"
        self._reachable(base)
        if isinstance(result, Exception):
            raise result
        if result == "busy":
            return False
        with open(destination, "wb") as handle:
            handle.write(ZIP)
        return True


#: The real RetrieverActor, whose timers with a delay wait for the test to fire them.
Retriever = keeping_timers(RetrieverActor)


def kind(payload) -> str | None:
    """"collect", "refetch" or None (the sweep) of a retriever timer's payload."""
    return payload[0] if isinstance(payload, tuple) else payload


# --- the wired-up retriever -----------------------------------------------------------------------

class Harness:
    def __init__(self, system: ActorSystem, database_path: str, data_dir: str, link: Executors):
        self.system, self.database_path, self.data_dir, self.link = system, database_path, data_dir, link
        self.config = self.retriever = self.quota = self.queue = self.dispatcher = None

    def start(self, max_attempts: int = 3, max_fetch_failures: int = 5) -> "Harness":
        self.config = ServerConfig(database=self.database_path, data_dir=self.data_dir, max_attempts=max_attempts,
                                   max_fetch_failures=max_fetch_failures, services=(ServiceConfig(SERVICE),))
        self.retriever = self.system.createActor(Retriever)
        self.quota = self.system.createActor(Recorder)
        self.queue = self.system.createActor(Recorder)
        self.dispatcher = self.system.createActor(Recorder)
        assert isinstance(self.system.ask(self.retriever, Configure(self.config), ASK_TIMEOUT), ActorStarted)
        self.system.tell(self.retriever, Peers(queue=self.queue, quota=self.quota, retriever=self.retriever,
                                               janitor=None, dispatchers=((SERVICE, self.dispatcher),)))
        return self

    def on_executor(self, url: str = A, now=None, submitted: bool = True, user_id: int = 1) -> int:
        """A job the dispatcher sent to `url` (attempt 1) at `now`, which the executor holds as
        task-<id>; without `submitted`, the executor's answer to the submit is not recorded yet."""
        now = now or clock.utcnow()
        job_id = new_job(user_id)
        assert jobs.claim_for_dispatch([job_id], now)[0] == [job_id]
        assert jobs.begin_attempts([(job_id, url)], now) == {job_id: 1}
        if submitted:
            jobs.mark_submitted([(job_id, 1, f"task-{job_id}")], now)
        self.link.task(url, f"task-{job_id}", job_id)
        return job_id

    def report(self, job_id: int, event: str, attempt: int = 1, **details) -> None:
        details.setdefault("task_id", f"task-{job_id}")
        self.system.tell(self.retriever, ExecutorEvent(job_id, attempt, event, **details))

    def fire(self, kind_of: str | None) -> None:
        """Deliver the armed timers of that kind now (each handler may arm the next one)."""
        fire_timers(self.system, lambda armed: kind(armed) == kind_of)

    def settle(self) -> None:
        """Let the fetches under way end: the actor arms a collect timer while any is; deliver them
        until none is armed."""
        def collected() -> bool:
            if not any(kind(timer[2]) == "collect" for timer in KEPT_TIMERS):
                return True
            self.fire("collect")
            return False
        wait_until(collected, 10, 0.005, "the retriever to collect its fetches")

    def got(self, recorder) -> list:
        return recorded(self.system, recorder)

    def ended(self, recorder=None) -> list[tuple[int, str | None]]:
        """Every (job, executor) the quota (or `recorder`) was told ended, in order."""
        return [held for msg in self.got(recorder or self.quota) if isinstance(msg, JobEnded) for held in msg.ended]


@pytest.fixture
def harness(clean_database, tmp_path, monkeypatch):
    link = Executors()
    monkeypatch.setattr(retriever_module, "ExecutorLink", lambda cluster_secret="": link)
    KEPT_TIMERS.clear()
    system = ActorSystem("simpleSystemBase", transientUnique=True, logDefs=False)
    yield Harness(system, clean_database, str(tmp_path / "data"), link)
    system.shutdown()
    KEPT_TIMERS.clear()


def row(job_id: int) -> dict:
    return jobs.job_view(job_id)


# --- an executor's reports ----------------------------------------------------------------------------

def test_a_job_that_finished_with_exit_0_is_completed_once_its_results_are_fetched(harness):
    harness.start()
    job_id = harness.on_executor(A)

    harness.report(job_id, "finished", exit_code=0, stderr_tail="warming up")
    harness.settle()

    assert harness.link.fetches == [(A, f"task-{job_id}")]
    job = row(job_id)
    assert (job["status"], job["exit_code"], job["stderr_tail"]) == ("Completed", 0, "warming up")
    result = harness.config.result_file(job_id)
    assert jobs.download_info(job_id) == (JobState.COMPLETED, result)
    with open(result, "rb") as handle:
        assert handle.read() == ZIP
    assert harness.ended() == [(job_id, A)]
    assert harness.ended(harness.dispatcher) == [(job_id, A)]


def test_a_job_that_finished_with_a_non_zero_exit_fails_with_its_code_and_stderr_tail(harness):
    harness.start()
    job_id = harness.on_executor(A)

    harness.report(job_id, "finished", exit_code=3, stderr_tail="Traceback: boom")

    job = row(job_id)
    assert (job["status"], job["exit_code"], job["reason"], job["stderr_tail"]) == \
        ("Failed", 3, "run.sh exited with code 3", "Traceback: boom")
    assert harness.link.fetches == []
    assert harness.ended() == [(job_id, A)]


def test_the_executors_verdict_fails_a_job_whatever_its_exit_code(harness):
    harness.start()
    job_id = harness.on_executor(A)

    harness.report(job_id, "finished", exit_code=0, reason="it went over max_memory_mb (64 MB)")

    job = row(job_id)
    assert (job["status"], job["reason"]) == ("Failed", "it went over max_memory_mb (64 MB)")
    assert harness.link.fetches == []


def test_a_report_of_an_earlier_attempt_changes_nothing(harness):
    harness.start()
    job_id = harness.on_executor(A)
    # Attempt 1's executor lost it; attempt 2 runs on B.
    assert jobs.requeue_or_fail(job_id, 1, "its executor lost it", 3, clock.utcnow(), {SERVICE})
    assert jobs.claim_for_dispatch([job_id], clock.utcnow())[0] == [job_id]
    assert jobs.begin_attempts([(job_id, B)], clock.utcnow()) == {job_id: 2}
    jobs.mark_submitted([(job_id, 2, "task-on-b")], clock.utcnow())

    harness.report(job_id, "finished", attempt=1, exit_code=0)
    harness.report(job_id, "finished", attempt=1, exit_code=1)
    harness.report(job_id, "lost", attempt=1)
    harness.report(job_id, "cancelled", attempt=1)

    assert harness.link.fetches == []
    job = row(job_id)
    assert (job["status"], job["attempts"], job["executor"]) == ("Submitted", 2, B)
    assert harness.got(harness.quota) == [] and harness.got(harness.queue) == []


@pytest.mark.parametrize("max_attempts, state", [(3, "Queued"), (1, "Failed")])
def test_a_job_its_executor_lost_is_queued_again_until_max_attempts_then_fails(harness, max_attempts, state):
    harness.start(max_attempts=max_attempts)
    job_id = harness.on_executor(A)

    harness.report(job_id, "lost")

    job = row(job_id)
    assert job["status"] == state
    assert harness.ended() == [(job_id, A)]
    if state == "Queued":
        assert (job["reason"], job["executor"]) == ("its executor lost it", None)
        assert harness.got(harness.queue) == [JobQueued(job_id, SERVICE, 1, None, 0, None, ANY)]
    else:
        assert job["reason"] == "its executor lost it (attempt 1 of 1)"
        assert harness.got(harness.queue) == []


def test_a_job_cancelled_on_its_executors_cluster_ends_cancelled(harness):
    harness.start()
    job_id = harness.on_executor(A)

    harness.report(job_id, "cancelled", stderr_tail="scancel: job 42 cancelled")

    job = row(job_id)
    assert (job["status"], job["reason"], job["stderr_tail"]) == \
        ("Cancelled", "cancelled on its executor's cluster", "scancel: job 42 cancelled")
    assert harness.ended() == [(job_id, A)]
    assert harness.got(harness.queue) == []


def test_a_report_that_overtook_the_submits_answer_counts_once_the_executor_confirms_its_task(harness):
    harness.start()
    confirmed = harness.on_executor(A, submitted=False)
    unconfirmed = harness.on_executor(A, submitted=False)
    harness.link.task(A, "task-of-another", job_id=999, state="finished")

    harness.report(confirmed, "finished", exit_code=0)
    harness.report(unconfirmed, "finished", exit_code=0, task_id="task-of-another")
    harness.settle()

    assert harness.link.fetches == [(A, f"task-{confirmed}")]
    assert row(confirmed)["status"] == "Completed"
    assert row(unconfirmed)["status"] == "Dispatching"


# --- fetches that do not get the results ---------------------------------------------------------

def test_results_still_being_zipped_are_fetched_again_later_and_never_count_as_failures(harness):
    harness.start(max_fetch_failures=2)
    job_id = harness.on_executor(A)
    harness.link.task(A, f"task-{job_id}", job_id, state="finished", exit_code=0)
    harness.link.results = ["busy", "busy", "busy"]

    harness.report(job_id, "finished", exit_code=0)
    harness.settle()
    for _ in range(3):
        assert row(job_id)["status"] == "Submitted"
        harness.fire("refetch")  # the retriever asks the executor again, which says finished
        harness.settle()

    assert len(harness.link.fetches) == 4
    assert row(job_id)["status"] == "Completed"


def test_a_fetch_the_executor_answers_with_an_error_is_retried_and_the_job_fails_after_max_fetch_failures(harness):
    harness.start(max_fetch_failures=3)
    job_id = harness.on_executor(A)
    harness.link.task(A, f"task-{job_id}", job_id, state="finished", exit_code=0)
    words = f"{A}/retrieve/task-{job_id} answered 409: the folder could not be zipped"
    harness.link.results = [ExecutorUnreachable(words, status=409) for _ in range(3)]

    harness.report(job_id, "finished", exit_code=0)
    harness.settle()
    for _ in range(2):
        assert row(job_id)["status"] == "Submitted"
        assert harness.ended() == []
        harness.fire("refetch")
        harness.settle()

    assert len(harness.link.fetches) == 3
    job = row(job_id)
    assert job["status"] == "Failed"
    assert job["reason"] == f"its results could not be fetched from {A} after 3 tries: {words}"
    assert harness.ended() == [(job_id, A)]
    assert not any(kind(timer[2]) == "refetch" for timer in KEPT_TIMERS)


# --- the sweep ----------------------------------------------------------------------------------------

def test_the_sweep_asks_about_quiet_jobs_only_and_once_per_executor_that_does_not_answer(harness, monkeypatch):
    harness.start()
    start = clock.utcnow()
    quiet_a = [harness.on_executor(A, now=start) for _ in range(2)]
    running_b = harness.on_executor(B, now=start)
    finished_b = harness.on_executor(B, now=start)  # its report never arrived
    recent_b = harness.on_executor(B, now=start + timedelta(seconds=3))
    harness.link.task(B, f"task-{finished_b}", finished_b, state="finished", exit_code=0)
    harness.link.unreachable.add(A)

    monkeypatch.setattr(clock, "utcnow", lambda: start + timedelta(seconds=QUIET_SECONDS + 1))
    harness.fire(None)
    harness.settle()

    asked = harness.link.questions
    assert [url for url, _ in asked].count(A) == 1
    assert sorted(remote for url, remote in asked if url == B) == sorted([f"task-{running_b}", f"task-{finished_b}"])
    assert f"task-{recent_b}" not in {remote for _, remote in asked}
    assert row(finished_b)["status"] == "Completed"
    assert [row(job_id)["status"] for job_id in (*quiet_a, running_b, recent_b)] == ["Submitted"] * 4
    assert harness.ended() == [(finished_b, B)]


def test_the_sweep_looks_up_by_its_attempt_a_running_job_whose_task_id_was_never_recorded(harness, monkeypatch):
    harness.start()
    start = clock.utcnow()
    # The dispatcher stopped between the executor's answer and recording it; the started reports came.
    found = harness.on_executor(A, now=start, submitted=False, user_id=7)
    never_received = harness.on_executor(A, now=start, submitted=False, user_id=8)
    jobs.mark_running([(found, 1), (never_received, 1)], start)
    harness.link.tasks.pop((A, f"task-{never_received}"))
    harness.link.task(A, f"task-{found}", found, job_uid=jobs.get_ref(found).uid)

    monkeypatch.setattr(clock, "utcnow", lambda: start + timedelta(seconds=QUIET_SECONDS + 1))
    harness.fire(None)

    assert (row(found)["status"], jobs.get_ref(found).remote_id) == ("Running", f"task-{found}")
    assert (row(never_received)["status"], row(never_received)["reason"]) == \
        ("Queued", "its executor never received it")
    assert harness.got(harness.queue) == [JobQueued(never_received, SERVICE, 8, None, 0, None, ANY)]
    assert harness.ended() == [(never_received, A)]


# --- GA4GH TES tasks: a failed task's results are fetched too (its logs are read from them) -----------

def as_tes_task(job_id: int) -> int:
    """Make the job a TES task (its row beside the job's, as web/tes/routes.py writes it)."""
    from pony.orm import db_session

    from storage.models import TesTask
    with db_session:
        TesTask(job=job_id, portal=None, name="", document="{}")
    return job_id


@pytest.mark.parametrize("exit_code, reason, expected_reason", [
    (3, None, "run.sh exited with code 3"),
    (0, "TES output /out/a.txt: not found", "TES output /out/a.txt: not found"),
])
def test_a_failed_tes_task_is_written_failed_with_its_results(harness, exit_code, reason, expected_reason):
    harness.start()
    job_id = as_tes_task(harness.on_executor(A))

    harness.report(job_id, "finished", exit_code=exit_code, stderr_tail="boom", reason=reason)
    harness.settle()

    assert harness.link.fetches == [(A, f"task-{job_id}")]
    job = row(job_id)
    assert (job["status"], job["exit_code"], job["reason"], job["stderr_tail"]) == \
        ("Failed", exit_code, expected_reason, "boom")
    assert jobs.download_info(job_id) == (JobState.FAILED, harness.config.result_file(job_id))
    assert harness.ended() == [(job_id, A)]


@pytest.mark.parametrize("error", [ExecutorUnreachable("answered 409: could not zip", status=409),
                                   ExecutorUnreachable("connection refused", delivered=False)])
def test_a_failed_tes_task_whose_results_cannot_be_fetched_is_failed_without_them_at_once(harness, error):
    harness.start(max_fetch_failures=3)
    job_id = as_tes_task(harness.on_executor(A))
    harness.link.results = [error]

    harness.report(job_id, "finished", exit_code=3)
    harness.settle()

    job = row(job_id)
    assert (job["status"], job["reason"]) == ("Failed", "run.sh exited with code 3")
    assert jobs.download_info(job_id) == (JobState.FAILED, None)
    assert len(harness.link.fetches) == 1 and harness.ended() == [(job_id, A)]
    assert not any(kind(timer[2]) == "refetch" for timer in KEPT_TIMERS)


def test_a_failed_tes_task_still_being_zipped_is_failed_without_results_if_its_executor_is_gone_at_the_refetch(harness):
    harness.start()
    job_id = as_tes_task(harness.on_executor(A))
    harness.link.results = ["busy"]

    harness.report(job_id, "finished", exit_code=3)
    harness.settle()
    assert row(job_id)["status"] == "Submitted"  # waits for its zip, as a success does
    harness.link.unreachable.add(A)
    harness.fire("refetch")

    job = row(job_id)
    assert (job["status"], job["reason"], job["attempts"]) == ("Failed", "run.sh exited with code 3", 1)
    assert harness.ended() == [(job_id, A)] and harness.got(harness.queue) == []
