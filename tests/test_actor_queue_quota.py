"""QueueActor + QuotaActor together, on Thespian's in-process `simpleSystemBase`.

The two actors are wired by hand to a `Recorder` standing in for the service's dispatcher. With
simpleSystemBase every message is handled synchronously inside `tell`/`ask`, so after a `tell`
returns, the whole exchange (JobQueued → AdmissionRequest → Admitted + Dispatch) has happened. The
actors' 10 s resync timers never fire during these tests, and nothing depends on them.
"""
from __future__ import annotations


import pytest
from pony.orm import db_session
from thespian.actors import ActorSystem

from actors.messages import ActorStarted, Capacity, Configure, Dispatch, JobEnded, JobQueued, Peers
from actors.server.queue import QueueActor
from actors.server.quota import QuotaActor
from conf.settings import ServerConfig, ServiceConfig
from storage import jobs
from storage.clock import utcnow
from storage.models import Job, Usage
from storage.states import JobState
from tests.harness import Recorder, events_heard, labelled_job, new_job, recorded

SERVICE = "example"
ASK_TIMEOUT = 5


# --- database (the conftest's clean_database) ----------------------------------------------------

def state_of(job_id: int) -> str:
    return jobs.get_ref(job_id).state.value


def states_by_user() -> dict[int, list[str]]:
    with db_session:
        rows = list(Job.select().order_by(Job.id))
        found: dict[int, list[str]] = {}
        for row in rows:
            found.setdefault(row.user_id, []).append(row.state)
        return found


# --- the wired-up pair --------------------------------------------------------------------------

class Harness:
    def __init__(self, system: ActorSystem, database_path: str):
        self.system = system
        self.database_path = database_path
        self.queue = self.quota = self.recorder = None

    def start(self, runs_per_user: int = 2, max_runs: int | None = 3, capacity: int | None = 10,
              **service) -> "Harness":
        config = ServerConfig(database=self.database_path,
                              services=(ServiceConfig(SERVICE, runs_per_user=runs_per_user, max_runs=max_runs,
                                                      **service),))
        self.queue = self.system.createActor(QueueActor)
        self.quota = self.system.createActor(QuotaActor)
        self.recorder = self.system.createActor(Recorder)
        # Each actor answers its Configure with ActorStarted (meant for the supervisor).
        assert isinstance(self.system.ask(self.queue, Configure(config), ASK_TIMEOUT), ActorStarted)
        assert isinstance(self.system.ask(self.quota, Configure(config), ASK_TIMEOUT), ActorStarted)
        peers = Peers(queue=self.queue, quota=self.quota, retriever=None, janitor=None,
                      dispatchers=((SERVICE, self.recorder),))
        self.system.tell(self.queue, peers)
        self.system.tell(self.quota, peers)
        if capacity is not None:
            self.capacity(capacity)
        return self

    def capacity(self, slots: int) -> None:
        self.system.tell(self.quota, Capacity(SERVICE, slots))

    def queued(self, user_id: int, job_id: int, portal: str | None = None, priority: int = 0,
               group: str | None = None) -> None:
        self.system.tell(self.queue, JobQueued(job_id, SERVICE, user_id, portal, priority, group))

    def submit(self, user_id: int, portal: str | None = None, priority: int = 0, group: str | None = None) -> int:
        job_id = labelled_job(user_id, priority, group, portal)
        self.queued(user_id, job_id, portal, priority, group)
        return job_id

    def end(self, job_id: int) -> None:
        """What the retriever does: store the outcome first, then tell the quota."""
        assert jobs.finish(job_id, None, JobState.CANCELLED, utcnow()) is not None
        self.system.tell(self.quota, JobEnded(SERVICE, ((job_id, None),)))

    def dispatched(self) -> list[int]:
        got = [msg for msg in recorded(self.system, self.recorder) if isinstance(msg, Dispatch)]
        assert all(d.service == SERVICE for d in got)
        return [job_id for d in got for job_id in d.job_ids]


@pytest.fixture
def system():
    asys = ActorSystem("simpleSystemBase", transientUnique=True, logDefs=False)
    yield asys
    asys.shutdown()


@pytest.fixture
def harness(system, clean_database) -> Harness:
    return Harness(system, clean_database)


# --- tests --------------------------------------------------------------------------------------

def test_a_queued_job_is_claimed_in_the_database_and_sent_to_the_dispatcher(harness):
    harness.start()

    job_id = harness.submit(user_id=1)

    assert harness.dispatched() == [job_id]
    assert state_of(job_id) == "Dispatching"
    assert jobs.job_view(job_id)["dispatched_at"] is not None


def test_no_user_gets_more_than_runs_per_user_and_the_service_no_more_than_max_runs(harness):
    harness.start(runs_per_user=2, max_runs=3, capacity=10)

    a = [harness.submit(user_id=1) for _ in range(4)]
    b = [harness.submit(user_id=2) for _ in range(3)]
    for _ in range(2):
        harness.submit(user_id=3)

    assert harness.dispatched() == [a[0], a[1], b[0]]
    assert states_by_user() == {
        1: ["Dispatching", "Dispatching", "Queued", "Queued"],
        2: ["Dispatching", "Queued", "Queued"],
        3: ["Queued", "Queued"],  # user 3 waits only because the service is full
    }
    assert sorted(row.id for row in jobs.active_jobs()) == sorted([a[0], a[1], b[0]])


def test_after_a_job_ends_exactly_one_more_is_admitted(harness):
    harness.start(runs_per_user=2, max_runs=3, capacity=10)
    a = [harness.submit(user_id=1) for _ in range(4)]
    b = [harness.submit(user_id=2) for _ in range(2)]
    assert harness.dispatched() == [a[0], a[1], b[0]]

    harness.end(a[0])

    # User 1 was served at turns 1 and 2, user 2 at turn 3: user 1 is served longest ago.
    assert harness.dispatched() == [a[0], a[1], b[0], a[2]]
    assert [state_of(j) for j in a] == ["Cancelled", "Dispatching", "Dispatching", "Queued"]
    assert [state_of(j) for j in b] == ["Dispatching", "Queued"]


def test_a_repeated_job_ended_frees_only_one_slot(harness):
    harness.start(runs_per_user=3, max_runs=2, capacity=10)
    queued = [harness.submit(user_id=1) for _ in range(5)]
    assert harness.dispatched() == queued[:2]

    harness.end(queued[0])
    harness.system.tell(harness.quota, JobEnded(SERVICE, ((queued[0], None),)))
    harness.system.tell(harness.quota, JobEnded(SERVICE, ((999_999, None),)))

    assert harness.dispatched() == queued[:3]
    assert [state_of(j) for j in queued] == ["Cancelled", "Dispatching", "Dispatching", "Queued", "Queued"]


def test_a_repeated_job_queued_message_is_admitted_once(harness):
    harness.start(runs_per_user=5, max_runs=5, capacity=10)
    job_id = harness.submit(user_id=1)

    harness.queued(1, job_id)
    harness.queued(1, job_id)

    assert harness.dispatched() == [job_id]


def test_nothing_is_admitted_before_any_executor_capacity_is_known(harness):
    harness.start(runs_per_user=2, max_runs=3, capacity=None)
    first = harness.submit(user_id=1)
    second = harness.submit(user_id=1)

    assert harness.dispatched() == []
    assert [state_of(first), state_of(second)] == ["Queued", "Queued"]

    harness.capacity(1)

    assert harness.dispatched() == [first]
    assert [state_of(first), state_of(second)] == ["Dispatching", "Queued"]


def test_the_executors_capacity_caps_admission_below_max_runs(harness):
    harness.start(runs_per_user=5, max_runs=10, capacity=2)

    queued = [harness.submit(user_id=u) for u in (1, 2, 3)]

    assert harness.dispatched() == queued[:2]
    assert state_of(queued[2]) == "Queued"


def test_without_max_runs_the_capacity_is_the_limit(harness):
    harness.start(runs_per_user=5, max_runs=None, capacity=3)

    queued = [harness.submit(user_id=1) for _ in range(4)]

    assert harness.dispatched() == queued[:3]


def test_a_user_with_one_job_is_not_held_back_by_a_user_with_many(harness):
    harness.start(runs_per_user=5, max_runs=2, capacity=0)
    many = [harness.submit(user_id=1) for _ in range(6)]
    one = harness.submit(user_id=2)
    assert harness.dispatched() == []

    harness.capacity(2)

    assert harness.dispatched() == [many[0], one]
    assert state_of(one) == "Dispatching"


def test_jobs_already_queued_or_active_in_the_database_are_picked_up_at_start(harness):
    a = [new_job(user_id=1) for _ in range(3)]
    b = [new_job(user_id=2) for _ in range(2)]
    claimed, gone = jobs.claim_for_dispatch([a[0]], utcnow())
    assert (claimed, gone) == ([a[0]], [])

    harness.start(runs_per_user=2, max_runs=3, capacity=10)

    # a[0] already holds a slot for user 1, so two more fit: one per user, longest-waiting job first.
    assert harness.dispatched() == [a[1], b[0]]
    assert [state_of(j) for j in a] == ["Dispatching", "Dispatching", "Queued"]
    assert [state_of(j) for j in b] == ["Dispatching", "Queued"]


def test_a_job_no_longer_queued_in_the_database_is_not_dispatched_and_takes_no_slot(harness):
    harness.start(runs_per_user=5, max_runs=1, capacity=10)
    cancelled = new_job(user_id=1)
    assert jobs.finish(cancelled, None, JobState.CANCELLED, utcnow()) is not None

    harness.queued(1, cancelled)
    waiting = harness.submit(user_id=1)

    assert harness.dispatched() == [waiting]
    assert state_of(cancelled) == "Cancelled"


def test_jobs_of_another_service_are_ignored(harness):
    harness.start(runs_per_user=5, max_runs=5, capacity=10)
    other = new_job(user_id=1, service="other")

    harness.system.tell(harness.queue, JobQueued(other, "other", 1, None))

    assert harness.dispatched() == []
    assert state_of(other) == "Queued"


# --- users are (portal, user_id) ----------------------------------------------------------------

def test_the_same_user_id_of_two_portals_is_two_users_for_runs_per_user(harness):
    harness.start(runs_per_user=1, max_runs=10, capacity=10)

    a = [harness.submit(user_id=7, portal="a") for _ in range(2)]
    b = harness.submit(user_id=7, portal="b")

    assert harness.dispatched() == [a[0], b]
    assert state_of(a[1]) == "Queued"
    assert sorted(row.user for row in jobs.active_jobs()) == [("a", 7), ("b", 7)]


def test_round_robin_turns_are_per_portal_and_user(harness):
    harness.start(runs_per_user=5, max_runs=1, capacity=10)
    a = [harness.submit(user_id=7, portal="a") for _ in range(3)]
    b = [harness.submit(user_id=7, portal="b") for _ in range(2)]
    assert harness.dispatched() == [a[0]]

    harness.end(a[0])
    # Portal a's user 7 was just served: portal b's user 7, who waits too, goes first.
    assert harness.dispatched() == [a[0], b[0]]
    harness.end(b[0])
    assert harness.dispatched() == [a[0], b[0], a[1]]


def test_max_queued_per_user_counts_the_jobs_of_one_portals_user(clean_database):
    new_job(user_id=7, portal="a")

    with pytest.raises(jobs.QueueFull):
        jobs.create_job(7, SERVICE, "/jobs/again", utcnow(), "a", max_queued=1)
    assert jobs.create_job(7, SERVICE, "/jobs/b7", utcnow(), "b", max_queued=1)
    assert jobs.create_job(7, SERVICE, "/jobs/anonymous7", utcnow(), None, max_queued=1)
    with pytest.raises(jobs.QueueFull):
        jobs.create_job(7, SERVICE, "/jobs/anonymous7-again", utcnow(), None, max_queued=1)


def test_each_admission_is_an_admitted_event_and_each_job_held_back_a_held_one_saying_why(harness):
    harness.start(runs_per_user=2, max_runs=3, capacity=10)
    with events_heard() as heard:
        a = [harness.submit(user_id=1) for _ in range(3)]
        b = [harness.submit(user_id=2) for _ in range(2)]

    admitted = [(fields["job"], fields["user"], fields["active"], fields["runs_per_user"])
                for name, fields in heard if name == "admitted"]
    assert admitted == [(a[0], 1, 1, 2), (a[1], 1, 2, 2), (b[0], 2, 1, 2)]
    held = {(fields["user"], fields["why"]) for name, fields in heard if name == "held"}
    assert held == {(1, "user_quota"), (2, "service_capacity")}


# --- priorities, groups, fair share ---------------------------------------------------------------

def test_a_users_jobs_start_by_priority_first_in_first_out_among_equals_and_never_pass_another_user(harness):
    harness.start(runs_per_user=1, max_runs=1, capacity=None)
    first = [harness.submit(user_id=1, priority=p) for p in (0, 5, -3, 5)]
    other = harness.submit(user_id=2)
    harness.capacity(1)

    order = []
    for _ in range(5):
        order += harness.dispatched()[len(order):]
        harness.end(order[-1])

    assert order == [first[1], other, first[3], first[0], first[2]]


def test_a_group_at_runs_per_group_holds_its_jobs_while_others_run_and_a_held_event_says_so(harness):
    harness.start(runs_per_user=5, max_runs=10, capacity=10, runs_per_group=2)
    with events_heard() as heard:
        students = {user: [harness.submit(user_id=user, group="class-a") for _ in range(2)] for user in (1, 2, 3)}
        research = [harness.submit(user_id=4) for _ in range(2)]
        elsewhere = harness.submit(user_id=5, portal="other", group="class-a")  # another portal's class-a

    started = harness.dispatched()
    assert len([j for ids in students.values() for j in ids if j in started]) == 2
    assert set(research) <= set(started) and elsewhere in started
    assert {fields["why"] for name, fields in heard if name == "held"} == {"group_quota"}
    admitted = {fields["job"]: fields.get("group") for name, fields in heard if name == "admitted"}
    assert admitted[research[0]] is None and admitted[students[1][0]] == "class-a"

    ended = started[0]
    harness.end(ended)
    assert len(harness.dispatched()) == len(started) + 1  # one class-a job more, no third at once


def test_fair_share_serves_a_light_user_before_a_heavy_users_backlog_and_round_robin_alternates(system,
                                                                                                 clean_database):
    def order_under(policy: str) -> list[int]:
        harness = Harness(system, clean_database)
        with db_session:
            for row in Job.select():
                row.delete()
            Usage.select().delete(bulk=True)
            Usage(service=SERVICE, portal=None, user_id=1, slot_seconds=3600.0, as_of=utcnow())
        harness.start(runs_per_user=1, max_runs=1, capacity=None, policy=policy)
        heavy = [harness.submit(user_id=1) for _ in range(3)]
        for _ in range(2):
            harness.submit(user_id=2)
        harness.capacity(1)
        order = []
        for _ in range(5):
            order += harness.dispatched()[len(order):]
            harness.end(order[-1])
        return ["heavy" if j in heavy else "light" for j in order]

    assert order_under("fair_share") == ["light", "light", "heavy", "heavy", "heavy"]
    assert order_under("round_robin") == ["heavy", "light", "heavy", "light", "heavy"]


def test_a_job_cancelled_while_queued_gives_its_turn_to_the_next_at_once(harness):
    harness.start(runs_per_user=1, max_runs=1)
    running, cancelled, waiting = harness.submit(user_id=1), harness.submit(user_id=1), harness.submit(user_id=1)
    assert jobs.cancel(cancelled, None, utcnow()) is not None  # what POST /jobs/{id}/cancel writes

    harness.end(running)

    assert harness.dispatched() == [running, waiting]
    assert state_of(waiting) == "Dispatching"


def test_a_users_job_outside_a_full_group_starts_though_their_group_jobs_come_first(harness):
    harness.start(runs_per_user=5, max_runs=None, capacity=20, runs_per_group=2)
    in_class = [harness.submit(user_id=1, group="class-a") for _ in range(7)]
    outside = harness.submit(user_id=1)  # queued behind five class-a jobs: more than runs_per_user

    assert harness.dispatched() == in_class[:2] + [outside]


def test_usage_that_cannot_be_folded_delays_no_admission(harness, monkeypatch):
    def busy(*args):
        raise OSError("database is locked")
    monkeypatch.setattr("storage.usage.fold", busy)
    harness.start(runs_per_user=1, max_runs=1, policy="fair_share")
    first, second = harness.submit(user_id=1), harness.submit(user_id=2)

    harness.end(first)

    assert harness.dispatched() == [first, second]
