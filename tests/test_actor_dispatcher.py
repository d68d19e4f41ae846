"""DispatcherActor's decisions, on Thespian's in-process `simpleSystemBase`.

The executors are HTTP services on other nodes: `Executors` stands in for `ExecutorLink` (installed
on actors.server.dispatcher), answering, refusing or unreachable as a test tells it. Recorder actors
stand in for the quota and the queue. Covered: where jobs go (registration by heartbeat, spread by
free slots, draining executors), what an unreachable or refusing executor does to a job and its
attempt count, CancelJob, an executor declared lost after executor_timeout, and the tasks of stale
attempts it holds when it comes back; the states GET /executors shows and the executor events logged.

Time: the dispatcher reads `storage.clock.monotonic`, which `Ticks` replaces, and its timers with a
delay ("probe", "check") are kept by the test and fired when it says (`Harness.fire`): in
simpleSystemBase they would fire only at a later tell once wall-clock time passed. The flush timer
(delay 0) runs as in Thespian, within the same tell. Sends of several jobs go through the dispatcher's
thread pool; `CallPool.each` waits for them, so a tell returns once they are answered.
"""
from __future__ import annotations

import logging
import threading

import pytest
from unittest.mock import ANY
from thespian.actors import ActorSystem

from actors.messages import (ActorStarted, CancelJob, Capacity, Configure, Dispatch, ExecutorHeartbeat, JobEnded,
                             JobQueued, Peers)
from actors.server import dispatcher as dispatcher_module
from actors.server.dispatcher import PIN_TIMEOUT_SECONDS, DispatcherActor
from actors.server.executor_link import ExecutorRefused, ExecutorUnreachable
from conf.settings import ServerConfig, ServiceConfig
from storage import clock, executors, jobs
from storage.states import JobState
from tests.harness import KEPT_TIMERS, Recorder, fire_timers, keeping_timers, new_job, recorded

SERVICE = "example"
A = "http://executor-a.test:9000"
B = "http://executor-b.test:9000"
ASK_TIMEOUT = 5


# --- stand-ins: the peers, the executors, the time and the timers ----------------------------------

class Executors:
    """Stands in for ExecutorLink: every executor answers (with `slots`) unless told to refuse
    submits or to be unreachable. Submits arrive on the dispatcher's pool threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.failure: dict[str, Exception] = {}
        self.slots: dict[str, int] = {}
        self.submits: list[tuple[str, int, int]] = []
        self.kills: list[tuple[str, str]] = []
        #: The tasks each executor's /health lists: [task id, job id, attempt].
        self.held: dict[str, list] = {}
        #: The status each executor's /health says ("ok" unless set).
        self.status: dict[str, str] = {}
        #: The tier each executor's /health says (none unless set, as an earlier version's).
        self.tiers: dict[str, int] = {}

    def answer(self, url: str) -> None:
        self.failure.pop(url, None)

    def refuse(self, url: str, status: int, words: str = "no") -> None:
        self.failure[url] = ExecutorRefused(f"{url}/submit answered {status}: {words}", status)

    def unreachable(self, url: str, delivered: bool) -> None:
        self.failure[url] = ExecutorUnreachable(f"{url}: connection failed", delivered)

    def sent_to(self, url: str) -> list[int]:
        return [job_id for where, job_id, _ in self.submits if where == url]

    def _reachable(self, url: str) -> None:
        if isinstance(self.failure.get(url), ExecutorUnreachable):
            raise self.failure[url]

    # the ExecutorLink methods the dispatcher calls
    def health(self, base: str) -> dict:
        self._reachable(base)
        tier = {"tier": self.tiers[base]} if base in self.tiers else {}
        return {"service": SERVICE, "slots": self.slots.get(base, 1), "status": self.status.get(base, "ok"),
                "tasks": self.held.get(base, []), **tier}

    def submit(self, base: str, job_id: int, job_uid: str, attempt: int, callback_url: str, folder: str,
               max_runtime: int | None = None) -> str:
        with self.lock:
            self.submits.append((base, job_id, attempt))
        if base in self.failure:
            raise self.failure[base]
        return f"task-{job_id}-{attempt}"

    def kill(self, base: str, remote_id: str) -> None:
        self._reachable(base)
        with self.lock:
            self.kills.append((base, remote_id))


class Ticks:
    """storage.clock.monotonic, stepped by the test."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


#: The real DispatcherActor, whose timers with a delay wait for the test to fire them.
Dispatcher = keeping_timers(DispatcherActor)


# --- the wired-up dispatcher ----------------------------------------------------------------------

class Harness:
    def __init__(self, system: ActorSystem, database_path: str, data_dir: str, link: Executors, ticks: Ticks):
        self.system, self.database_path, self.data_dir = system, database_path, data_dir
        self.link, self.ticks = link, ticks
        self.dispatcher = self.quota = self.queue = None

    def start(self, executor_timeout: float = 30.0, max_attempts: int = 3, clients: tuple[str, ...] = ()) -> "Harness":
        config = ServerConfig(database=self.database_path, data_dir=self.data_dir, executor_timeout=executor_timeout,
                              max_attempts=max_attempts, services=(ServiceConfig(SERVICE, clients),))
        self.dispatcher = self.system.createActor(Dispatcher)
        self.quota = self.system.createActor(Recorder)
        self.queue = self.system.createActor(Recorder)
        assert isinstance(self.system.ask(self.dispatcher, Configure(config, SERVICE), ASK_TIMEOUT), ActorStarted)
        # As in production, the dispatcher is among its own peers: a job it ends frees its slot there too.
        self.system.tell(self.dispatcher, Peers(queue=self.queue, quota=self.quota, retriever=None, janitor=None,
                                                dispatchers=((SERVICE, self.dispatcher),)))
        return self

    def heartbeat(self, url: str, slots: int = 1, draining: bool = False, leaving: bool = False, tier: int = 1) -> None:
        self.link.slots[url] = slots
        self.system.tell(self.dispatcher, ExecutorHeartbeat(SERVICE, url, slots, draining, leaving=leaving, tier=tier))

    def admit(self, count: int = 1, user_id: int = 1) -> list[int]:
        """What the quota does: jobs made Dispatching, then one Dispatch for all of them."""
        job_ids = [new_job(user_id) for _ in range(count)]
        claimed, _ = jobs.claim_for_dispatch(job_ids, clock.utcnow())
        assert claimed == job_ids
        self.system.tell(self.dispatcher, Dispatch(SERVICE, tuple(job_ids)))
        return job_ids

    def fire(self, payload) -> None:
        """Deliver the armed timers of that payload now (each handler may arm the next one)."""
        fire_timers(self.system, lambda armed: armed == payload)

    def quota_got(self) -> list:
        return recorded(self.system, self.quota)

    def queue_got(self) -> list:
        return recorded(self.system, self.queue)

    def ended(self) -> list[tuple[int, str | None]]:
        """Every (job, executor) the quota was told ended, in order."""
        return [held for msg in self.quota_got() if isinstance(msg, JobEnded) for held in msg.ended]

    def capacity(self) -> int | None:
        told = [msg.slots for msg in self.quota_got() if isinstance(msg, Capacity)]
        return told[-1] if told else None


@pytest.fixture
def harness(clean_database, tmp_path, monkeypatch):
    link, ticks = Executors(), Ticks()
    monkeypatch.setattr(dispatcher_module, "ExecutorLink", lambda cluster_secret="": link)
    monkeypatch.setattr(clock, "monotonic", ticks)
    KEPT_TIMERS.clear()
    system = ActorSystem("simpleSystemBase", transientUnique=True, logDefs=False)
    yield Harness(system, clean_database, str(tmp_path / "data"), link, ticks)
    system.shutdown()
    KEPT_TIMERS.clear()


def row(job_id: int) -> jobs.JobRef:
    return jobs.get_ref(job_id)


# --- where jobs go --------------------------------------------------------------------------------

def test_a_heartbeat_registers_an_executor_and_an_admitted_job_is_sent_there(harness):
    harness.start()
    harness.heartbeat(A, slots=2)

    [job_id] = harness.admit()

    assert harness.link.submits == [(A, job_id, 1)]
    job = row(job_id)
    assert (job.state, job.executor, job.remote_id, job.attempts) == (JobState.SUBMITTED, A, f"task-{job_id}-1", 1)
    assert harness.capacity() == 2
    assert [(e["url"], e["state"], e["slots"]) for e in executors.listing()] == [(A, "alive", 2)]


def test_jobs_go_to_the_executor_with_the_most_free_slots_and_wait_when_all_are_full(harness):
    harness.start()
    harness.heartbeat(A, slots=2)
    harness.heartbeat(B, slots=1)
    assert harness.capacity() == 3

    first, second, third, fourth = harness.admit(4)

    # Three sends in one batch (on the pool's threads): A has two slots, B one; the fourth waits.
    assert sorted(harness.link.sent_to(A)) == sorted([first, third])
    assert harness.link.sent_to(B) == [second]
    assert row(fourth).state is JobState.DISPATCHING and row(fourth).attempts == 0

    # What the retriever does when B's job ends: the row first, then JobEnded; B's slot takes the fourth.
    jobs.finish(second, 1, JobState.COMPLETED, clock.utcnow())
    harness.system.tell(harness.dispatcher, JobEnded(SERVICE, ((second, B),)))

    assert harness.link.sent_to(B) == [second, fourth]
    assert (row(fourth).state, row(fourth).executor) == (JobState.SUBMITTED, B)


def test_jobs_fill_tier_1_first_overflow_to_tier_2_and_come_back_when_tier_1_frees(harness):
    """B's tier comes from its /health (a configured executor, probed), A's from its heartbeat."""
    harness.link.slots[B], harness.link.tiers[B] = 2, 2
    harness.start(clients=(B,))
    harness.heartbeat(A, slots=1, tier=1)
    assert harness.capacity() == 3  # every tier's slots

    first, second, third, fourth = harness.admit(4)

    assert harness.link.sent_to(A) == [first]
    assert sorted(harness.link.sent_to(B)) == sorted([second, third])
    assert row(fourth).state is JobState.DISPATCHING
    assert {e["url"]: e["tier"] for e in executors.listing()} == {A: 1, B: 2}

    # B's job ends: tier 1 is still full, so B takes the fourth.
    jobs.finish(second, 1, JobState.COMPLETED, clock.utcnow())
    harness.system.tell(harness.dispatcher, JobEnded(SERVICE, ((second, B),)))
    assert harness.link.sent_to(B)[-1] == fourth

    # Every job ends: B has more free slots than A, yet the next job goes back to tier 1.
    for job_id in (first, third, fourth):
        jobs.finish(job_id, 1, JobState.COMPLETED, clock.utcnow())
    harness.system.tell(harness.dispatcher, JobEnded(SERVICE, ((first, A), (third, B), (fourth, B))))
    [fifth] = harness.admit()
    assert harness.link.sent_to(A) == [first, fifth]


def test_a_job_that_never_reached_an_unreachable_executor_goes_to_another_without_losing_an_attempt(harness):
    harness.start()
    harness.heartbeat(A, slots=2)
    harness.heartbeat(B, slots=1)
    harness.link.unreachable(A, delivered=False)

    [job_id] = harness.admit()
    assert harness.link.submits == [(A, job_id, 1)]
    assert (row(job_id).state, row(job_id).attempts, row(job_id).executor) == (JobState.DISPATCHING, 0, None)
    assert harness.capacity() == 1  # only B is counted now

    harness.fire("probe")  # A still does not answer; the job may go anywhere else

    assert harness.link.submits == [(A, job_id, 1), (B, job_id, 1)]
    job = row(job_id)
    assert (job.state, job.executor, job.attempts) == (JobState.SUBMITTED, B, 1)


def test_a_job_waits_while_its_only_executor_is_unreachable_and_goes_there_when_it_answers(harness):
    harness.start()
    harness.heartbeat(A, slots=1)
    harness.link.unreachable(A, delivered=False)
    [job_id] = harness.admit()

    harness.fire("probe")
    assert harness.link.submits == [(A, job_id, 1)]  # the probe found it down: nothing sent
    assert (row(job_id).state, row(job_id).attempts) == (JobState.DISPATCHING, 0)

    harness.link.answer(A)
    harness.fire("probe")

    assert harness.link.submits == [(A, job_id, 1), (A, job_id, 1)]
    assert (row(job_id).state, row(job_id).attempts) == (JobState.SUBMITTED, 1)


def test_a_send_that_may_have_arrived_is_repeated_only_to_that_executor_with_the_same_attempt(harness):
    harness.start(executor_timeout=600)  # no loss here: only the pin
    harness.heartbeat(A, slots=2)
    harness.heartbeat(B, slots=1)
    harness.link.unreachable(A, delivered=True)
    [job_id] = harness.admit()

    harness.fire("probe")
    # It may run on A: B, free, does not get it.
    assert harness.link.sent_to(B) == []
    assert (row(job_id).state, row(job_id).executor, row(job_id).attempts) == (JobState.DISPATCHING, A, 1)

    harness.link.answer(A)
    harness.fire("probe")

    assert harness.link.submits == [(A, job_id, 1), (A, job_id, 1)]
    assert (row(job_id).state, row(job_id).executor, row(job_id).attempts) == (JobState.SUBMITTED, A, 1)


def test_a_job_pinned_to_an_executor_away_past_the_pin_timeout_goes_elsewhere_as_a_new_attempt(harness):
    harness.start(executor_timeout=600)
    harness.heartbeat(A, slots=2)
    harness.heartbeat(B, slots=1)
    harness.link.unreachable(A, delivered=True)
    [job_id] = harness.admit()

    harness.ticks.now += PIN_TIMEOUT_SECONDS - 1
    harness.fire("probe")
    assert harness.link.sent_to(B) == []

    harness.ticks.now += 2
    harness.fire("probe")

    assert harness.link.sent_to(B) == [job_id]
    assert (row(job_id).state, row(job_id).executor, row(job_id).attempts) == (JobState.SUBMITTED, B, 2)


@pytest.mark.parametrize("status", [400, 413])
def test_a_refused_job_fails_with_the_executors_words_and_its_slots_are_freed(harness, status):
    harness.start()
    harness.heartbeat(A, slots=1)
    harness.link.refuse(A, status, "run.sh is missing")

    [refused] = harness.admit()

    job = row(refused)
    assert job.state is JobState.FAILED
    assert jobs.job_view(refused)["reason"] == (f"the executor refused the job: {A}/submit answered {status}: "
                                                "run.sh is missing")
    assert harness.ended() == [(refused, A)]

    harness.link.answer(A)
    [next_job] = harness.admit()
    assert harness.link.sent_to(A) == [refused, next_job]  # A's one slot is free again
    assert row(next_job).state is JobState.SUBMITTED


def test_an_executor_that_answers_503_gets_nothing_new_and_the_job_goes_elsewhere(harness):
    harness.start()
    harness.heartbeat(A, slots=2)
    harness.heartbeat(B, slots=1)
    harness.link.refuse(A, 503, "draining")

    [first] = harness.admit()
    assert (row(first).state, row(first).attempts, row(first).executor) == (JobState.DISPATCHING, 0, None)
    assert harness.capacity() == 1

    [second] = harness.admit()  # the next event sends what waits: oldest first, to B

    assert harness.link.sent_to(A) == [first]
    assert harness.link.sent_to(B) == [first]
    assert (row(first).state, row(first).executor, row(first).attempts) == (JobState.SUBMITTED, B, 1)
    assert row(second).state is JobState.DISPATCHING  # B is full; A takes nothing new


def test_an_executor_whose_heartbeat_says_draining_gets_nothing_new(harness):
    harness.start()
    harness.heartbeat(A, slots=4)
    harness.heartbeat(B, slots=1)
    harness.heartbeat(A, slots=4, draining=True)
    assert harness.capacity() == 1

    first, second = harness.admit(2)

    assert harness.link.sent_to(A) == []
    assert harness.link.sent_to(B) == [first]
    assert row(second).state is JobState.DISPATCHING
    assert {e["url"]: e["state"] for e in executors.listing()} == {A: "draining", B: "alive"}


# --- cancelling -----------------------------------------------------------------------------------

def test_cancelling_a_job_ends_it_for_the_quota_kills_its_task_and_frees_its_slot(harness):
    harness.start()
    harness.heartbeat(A, slots=1)
    [cancelled] = harness.admit()
    [waiting] = harness.admit()
    assert row(waiting).state is JobState.DISPATCHING  # A is full

    # What the web layer does: the row is Cancelled first, then the dispatcher is told.
    assert jobs.cancel(cancelled, None, clock.utcnow())[1] is not None
    harness.system.tell(harness.dispatcher, CancelJob(cancelled))

    assert harness.ended() == [(cancelled, A)]
    assert harness.link.kills == [(A, f"task-{cancelled}-1")]
    assert harness.link.sent_to(A) == [cancelled, waiting]
    assert row(waiting).state is JobState.SUBMITTED


def test_a_cancel_message_for_a_job_that_is_not_cancelled_changes_nothing(harness):
    harness.start()
    harness.heartbeat(A, slots=1)
    [running] = harness.admit()
    [waiting] = harness.admit()

    harness.system.tell(harness.dispatcher, CancelJob(running))

    assert harness.ended() == []
    assert harness.link.kills == []
    assert (row(running).state, row(waiting).state) == (JobState.SUBMITTED, JobState.DISPATCHING)


# --- losing an executor ---------------------------------------------------------------------------

def test_an_executor_silent_past_executor_timeout_is_lost_and_its_jobs_are_queued_again(harness):
    harness.start(executor_timeout=30)
    harness.heartbeat(A, slots=2)
    harness.heartbeat(B, slots=1)
    harness.admit(3)
    on_a, on_b = sorted(harness.link.sent_to(A)), harness.link.sent_to(B)
    assert len(on_a) == 2 and len(on_b) == 1
    harness.link.unreachable(A, delivered=False)

    harness.ticks.now += 20
    harness.fire("check")  # A does not answer, but is not lost yet
    assert harness.queue_got() == []
    assert all(row(job_id).state is JobState.SUBMITTED for job_id in on_a)

    harness.ticks.now += 11
    harness.fire("check")

    assert sorted(msg.job_id for msg in harness.queue_got()) == on_a
    assert all(msg == JobQueued(msg.job_id, SERVICE, 1, None, 0, None, ANY) for msg in harness.queue_got())
    assert sorted(harness.ended()) == sorted((job_id, A) for job_id in on_a)
    for job_id in on_a:
        job = row(job_id)
        assert (job.state, job.executor) == (JobState.QUEUED, None)
        assert jobs.job_view(job_id)["reason"] == f"executor {A} was lost"
    assert row(on_b[0]).state is JobState.SUBMITTED
    assert {e["url"]: e["state"] for e in executors.listing()} == {A: "lost", B: "alive"}



def test_an_executor_back_from_a_loss_is_told_to_kill_the_task_of_an_attempt_that_no_longer_counts(harness):
    harness.start(executor_timeout=30)
    harness.heartbeat(A, slots=2)
    harness.heartbeat(B, slots=1)
    [job_id] = harness.admit()
    assert harness.link.sent_to(A) == [job_id]
    harness.link.unreachable(A, delivered=False)
    harness.ticks.now += 31
    harness.fire("check")  # A is lost: the job is queued again, and the quota admits it again
    assert jobs.claim_for_dispatch([job_id], clock.utcnow())[0] == [job_id]
    harness.system.tell(harness.dispatcher, Dispatch(SERVICE, (job_id,)))
    assert (row(job_id).executor, row(job_id).attempts) == (B, 2)

    # A answers again, still holding attempt 1; B holds attempt 2, the one that counts.
    harness.link.answer(A)
    harness.link.held[A] = [[f"task-{job_id}-1", job_id, 1]]
    harness.fire("probe")
    harness.system.tell(harness.dispatcher,
                        ExecutorHeartbeat(SERVICE, B, 1, False, tasks=((f"task-{job_id}-2", job_id, 2),)))

    assert harness.link.kills == [(A, f"task-{job_id}-1")]
    assert row(job_id).state is JobState.SUBMITTED


# --- what the registry says of each executor, and the events logged --------------------------------

def states() -> dict[str, tuple[str, str | None]]:
    """Each executor's (state, last_error) in the registry, as GET /executors shows them."""
    return {e["url"]: (e["state"], e["last_error"]) for e in executors.listing()}


def events(caplog) -> list[tuple[str, int, dict]]:
    """The executor events logged so far: (name, level, fields)."""
    return [(r.event, r.levelno, r.fields) for r in caplog.records if getattr(r, "event", None)]


def test_a_configured_executor_that_never_answers_stays_unknown_said_once_at_info(harness, caplog):
    caplog.set_level(logging.INFO, logger="orchestrator")
    harness.link.unreachable(A, delivered=False)
    harness.start(executor_timeout=30, clients=(A,))

    for _ in range(4):  # two minutes of probes and checks
        harness.ticks.now += 31
        harness.fire("check")

    assert states() == {A: ("unknown", f"{A}: connection failed")}
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "has not answered since the server started" in caplog.records[0].getMessage()
    assert events(caplog) == []

    harness.link.answer(A)
    harness.fire("probe")
    assert states()[A][0] == "alive"
    assert events(caplog) == [("alive", logging.INFO, {"executor": A, "service": SERVICE, "slots": 1})]


def test_a_registered_executor_silent_past_the_timeout_is_lost_with_why_and_logged_alive_when_back(harness, caplog):
    caplog.set_level(logging.INFO, logger="orchestrator")
    harness.start(executor_timeout=30)
    harness.heartbeat(A, slots=2)
    harness.link.unreachable(A, delivered=False)
    harness.ticks.now += 31
    harness.fire("check")

    reason = f"not heard from for 30 s (last error: {A}: connection failed)"
    assert states() == {A: ("lost", reason)}
    harness.link.answer(A)
    harness.fire("probe")

    assert states() == {A: ("alive", reason)}  # the last failure's reason stays
    assert events(caplog) == [
        ("registered", logging.INFO, {"executor": A, "service": SERVICE, "slots": 2}),
        ("lost", logging.WARNING, {"executor": A, "service": SERVICE, "slots": 2, "reason": reason}),
        ("alive", logging.INFO, {"executor": A, "service": SERVICE, "slots": 2})]


def test_an_executor_that_says_it_leaves_is_gone_not_lost_until_it_starts_again(harness, caplog):
    caplog.set_level(logging.INFO, logger="orchestrator")
    harness.start(executor_timeout=30)
    harness.heartbeat(A)
    harness.heartbeat(A, draining=True)
    harness.heartbeat(A, draining=True, leaving=True)
    assert states()[A][0] == "gone"
    assert harness.capacity() == 0

    harness.link.status[A] = "draining"
    harness.fire("probe")  # it still answers, draining, for the moment it takes to stop: still gone
    assert states()[A][0] == "gone"
    harness.link.unreachable(A, delivered=False)
    for _ in range(3):
        harness.ticks.now += 31
        harness.fire("check")
    assert states()[A][0] == "gone"
    assert [name for name, _, _ in events(caplog)] == ["registered", "draining", "gone"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    harness.link.answer(A)
    harness.link.status[A] = "ok"
    harness.heartbeat(A)  # started again: its heartbeat alone does not count until it answers
    harness.fire("probe")
    assert states()[A][0] == "alive"
    assert [name for name, _, _ in events(caplog)][-1] == "alive"
    assert harness.capacity() == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_never_heard_executor_holding_jobs_from_before_the_restart_is_lost_and_its_jobs_queued_again(harness):
    # Given: a job on A from before the server's restart, and A does not answer the new server
    [job_id] = [new_job(1)]
    jobs.claim_for_dispatch([job_id], clock.utcnow())
    jobs.begin_attempts([(job_id, A)], clock.utcnow())
    jobs.mark_submitted([(job_id, 1, "7")], clock.utcnow())
    harness.link.unreachable(A, delivered=False)
    harness.start(executor_timeout=30)

    harness.ticks.now += 31
    harness.fire("check")

    assert states()[A][0] == "lost"
    assert [msg.job_id for msg in harness.queue_got()] == [job_id]
