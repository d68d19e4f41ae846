"""Why a job waits (storage/queue_view.py), without processes: the pure decision on small cases with
known answers, the reads on a temp SQLite file, and `GET /jobs/{id}` / `POST /upload` in process."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from pony.orm import db_session

from conf.settings import ServiceConfig
from storage import executors, jobs, queue_view
from storage.models import Job, Usage
from storage.queue_view import QueueFacts, explain, last_turns, positions
from storage.states import JobState
from tests.harness import make_server, new_job

NOW = datetime(2026, 11, 30, 12, 0, 0)
ALIVE = (("alive", 4),)
WAITING = QueueFacts(service="example", user_id=7, admitted=False, ahead_of_user=0, others=(), user_active=0,
                     service_active=0, runs_per_user=5, max_runs=None, executors=ALIVE, recent_runs=())


# --- positions under round-robin ------------------------------------------------------------------

@pytest.mark.parametrize("ahead_of_user, others, expected", [
    (0, (), (1, 1)),                       # alone: next
    (2, (), (3, 3)),                       # alone, its third job: FIFO within the user
    (0, ((5, True),), (2, 1)),             # another user served first in round 1 takes one job first
    (0, ((5, False),), (1, 1)),            # ...served after it: it goes first
    (2, ((5, True), (1, False)), (7, 3)),  # round 3: own 2 + first user's 3 + the other's only one
    (2, ((5, False), (1, True)), (6, 3)),  # served after it: only 2 of the first user's before round 3's turn
    (4, ((2, True), (2, True)), (9, 5)),   # users with few jobs hold back at most their few
])
def test_position_counts_each_other_users_first_k_jobs_and_its_own_k_minus_one(ahead_of_user, others, expected):
    assert positions(ahead_of_user, others) == expected


def test_turns_go_first_to_users_not_served_lately_then_to_those_served_longest_ago():
    oldest = {"lately": 1, "never_new": 9, "long_ago": 1, "never_old": 5}
    admitted = {"lately": NOW, "long_ago": NOW - timedelta(hours=1)}
    assert last_turns(admitted) == {"long_ago": 0, "lately": 1}
    assert queue_view.ranked(oldest, admitted) == ["never_old", "never_new", "long_ago", "lately"]


def test_fair_share_ranks_by_score_before_turns():
    oldest = {"light": 9, "heavy": 1, "never": 5}
    assert queue_view.ranked(oldest, {"light": NOW}, {"light": 10.0, "heavy": 500.0, "never": 10.0}) == \
        ["never", "light", "heavy"]  # equal scores: round-robin between them


def test_the_policy_object_gives_the_rank_and_under_fair_share_usage_and_share():
    others = ((3, True), (1, False), (2, True))
    assert explain(replace(WAITING, others=others), NOW)["policy"] == \
        {"name": "round_robin", "rank": 3, "share": None, "usage": None}
    fair = replace(WAITING, others=others, policy="fair_share", usage=1234.56789, share=2)
    assert explain(fair, NOW)["policy"] == {"name": "fair_share", "rank": 3, "share": 2, "usage": 1234.568}
    assert "least usage per share first" in explain(fair, NOW)["detail"]
    assert explain(replace(fair, admitted=True), NOW)["policy"]["rank"] == 0  # admitted: as its position


# --- what holds it --------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, waiting_for, words", [
    ({}, None, "next to start"),
    ({"ahead_of_user": 1}, None, "1 jobs ahead"),
    ({"executors": ()}, "no_executor", "no executor of service example is alive"),
    ({"executors": (("lost", 4), ("unknown", 2))}, "no_executor", "the job starts once one is"),
    ({"executors": (("draining", 4), ("lost", 4))}, "draining", "every live executor of service example is draining"),
    ({"user_active": 5}, "runs_per_user", "user 7 has 5 of 5 jobs active in example"),
    ({"max_runs": 2, "service_active": 2}, "max_runs", "runs its most jobs at once (2, max_runs)"),
    ({"service_active": 4}, "executors_full", "every slot of the executors of example is taken"),
    # a max_runs above the slots is not what binds: the executors are full first
    ({"max_runs": 10, "service_active": 4}, "executors_full", "every slot"),
    # precedence: operator-only causes, then the user's own limit, then the service's
    ({"user_active": 5, "service_active": 4, "executors": ()}, "no_executor", "no executor"),
    ({"user_active": 5, "service_active": 4, "executors": (("draining", 4),)}, "draining", "draining"),
    ({"user_active": 5, "service_active": 4}, "runs_per_user", "user 7 has 5 of 5"),
    ({"max_runs": 3, "service_active": 4}, "max_runs", "(3, max_runs)"),
    # admitted (Dispatching): position 0; only executors can still hold it
    ({"admitted": True, "user_active": 5, "service_active": 4}, None, "being sent to an executor"),
    ({"admitted": True, "executors": ()}, "no_executor", "no executor"),
])
def test_waiting_for_names_what_holds_the_job_and_says_it_in_words(changes, waiting_for, words):
    queue = explain(replace(WAITING, **changes), NOW)
    assert queue["waiting_for"] == waiting_for
    assert words in queue["detail"]


def test_a_dispatching_job_is_at_position_zero():
    queue = explain(replace(WAITING, admitted=True, ahead_of_user=3, others=((4, True),)), NOW)
    assert (queue["position"], queue["position_for_user"]) == (0, 0)


# --- estimated start ------------------------------------------------------------------------------

RUNS = (10.0, 20.0, 30.0, 40.0, 50.0)  # median 30 s


@pytest.mark.parametrize("changes, seconds", [
    ({"recent_runs": RUNS[:4]}, None),                                    # too little history
    ({"recent_runs": RUNS, "executors": ()}, None),                       # nothing can start it
    ({"recent_runs": RUNS, "executors": (("draining", 4),)}, None),
    ({"recent_runs": RUNS}, 0),                                           # a free slot: now
    ({"recent_runs": RUNS, "service_active": 4}, 30),                     # full: one run from now
    ({"recent_runs": RUNS, "service_active": 4, "others": ((9, True),)}, 30),   # 2nd of 4 freed slots
    ({"recent_runs": RUNS, "service_active": 4, "others": ((9, True),), "ahead_of_user": 4}, 90),  # 10th: 3rd wave
    ({"recent_runs": RUNS, "user_active": 5}, 30),                        # waits for its own job
    ({"recent_runs": RUNS, "user_active": 5, "ahead_of_user": 5, "runs_per_user": 5}, 60),
    ({"recent_runs": RUNS, "max_runs": 1, "service_active": 1, "ahead_of_user": 1}, 60),
    ({"recent_runs": RUNS, "admitted": True, "service_active": 4}, 0),
])
def test_estimated_start_is_rounds_of_freed_slots_times_the_median_run(changes, seconds):
    queue = explain(replace(WAITING, **changes), NOW)
    expected = None if seconds is None else (NOW + timedelta(seconds=seconds)).isoformat() + "Z"
    assert queue["estimated_start"] == expected


# --- the reads ------------------------------------------------------------------------------------

EXAMPLE = ServiceConfig("example", runs_per_user=1)


def _set(job_id: int, state: JobState, **columns) -> None:
    with db_session:
        job = Job[job_id]
        job.state = state.value
        for name, value in columns.items():
            setattr(job, name, value)


def test_the_reads_count_turns_users_portals_and_history(clean_database):
    executors.record("http://e1", "example", 2, "alive", NOW)
    executors.record("http://e2", "other", 8, "alive", NOW)
    first = [new_job(1) for _ in range(3)]         # user 1: three queued, the oldest
    second = [new_job(2) for _ in range(2)]        # user 2: two queued
    elsewhere = new_job(1, portal="other")        # user 1 of another portal: its own user
    new_job(3, service="other")                    # another service: not counted
    running = new_job(2)
    _set(running, JobState.RUNNING, dispatched_at=NOW)  # user 2 was served lately: after the others
    for seconds in (5, 6, 7, 8, 9):
        done = new_job(4)
        _set(done, JobState.COMPLETED, started_at=NOW, finished_at=NOW + timedelta(seconds=seconds))

    queue = queue_view.queue_of(second[1], EXAMPLE, NOW)["queue"]
    # round 2: user 1 (waiting longer) takes 2, the other portal's user 1 its 1, user 2 its first
    assert (queue["position"], queue["position_for_user"]) == (5, 2)
    assert queue["waiting_for"] == "runs_per_user" and "user 2 has 1 of 1" in queue["detail"]
    assert queue["estimated_start"] == (NOW + timedelta(seconds=2 * 7)).isoformat() + "Z"
    assert queue_view.queue_of(first[0], EXAMPLE, NOW)["queue"]["position"] == 1
    # after user 1's first (never served, older); before user 2's (served lately)
    assert queue_view.queue_of(elsewhere, EXAMPLE, NOW)["queue"]["position"] == 2

    _set(first[0], JobState.DISPATCHING)
    assert queue_view.queue_of(first[0], EXAMPLE, NOW)["queue"]["position"] == 0
    assert queue_view.queue_of(running, EXAMPLE, NOW) == {}
    assert queue_view.queue_of(first[1], None, NOW) == {}  # a service no longer configured


def test_the_estimate_takes_the_latest_completed_runs_and_needs_five(clean_database):
    executors.record("http://e1", "example", 1, "alive", NOW)
    for seconds in [1000] * 10 + [4] * (queue_view.HISTORY - 1):  # the oldest ten ran long
        _set(new_job(4), JobState.COMPLETED, started_at=NOW, finished_at=NOW + timedelta(seconds=seconds))
    running = new_job(1)
    _set(running, JobState.RUNNING, dispatched_at=NOW)
    waiting = new_job(2)
    # one slot, taken: one round of the median of the latest 20 runs (19 of 4 s, one of 1000 s)
    assert queue_view.queue_of(waiting, EXAMPLE, NOW)["queue"]["estimated_start"] == \
        (NOW + timedelta(seconds=4)).isoformat() + "Z"

    with db_session:
        for done in Job.select(lambda j: j.state == JobState.COMPLETED.value).order_by(lambda j: j.id)[5:]:
            done.state = JobState.FAILED.value
    assert queue_view.queue_of(waiting, EXAMPLE, NOW)["queue"]["estimated_start"] is not None
    with db_session:
        Job.select(lambda j: j.state == JobState.COMPLETED.value).first().state = JobState.FAILED.value
    assert queue_view.queue_of(waiting, EXAMPLE, NOW)["queue"]["estimated_start"] is None  # four runs: too few


FAIR = ServiceConfig("example", runs_per_user=5, policy="fair_share", fair_share_half_life_hours=1)


def _usage(portal: str | None, user_id: int, slot_seconds: float, as_of: datetime) -> None:
    with db_session:
        Usage(service="example", portal=portal, user_id=user_id, slot_seconds=slot_seconds, as_of=as_of)


def test_fair_share_ranks_users_by_usage_per_portal_share(clean_database):
    """Two users with known usage: portal a's 1000 slot-seconds and portal b's 1500 (an hour ago:
    750 now, with a half-life of an hour). Share 1 each: b goes first; b's portal with share 2 weighs
    its 750 as 375; round-robin ignores usage and serves the older job first."""
    executors.record("http://e1", "example", 1, "alive", NOW)
    first, second = new_job(1, portal="a"), new_job(1, portal="b")
    for job_id in (first, second):
        _set(job_id, JobState.QUEUED, created_at=NOW)
    _usage("a", 1, 1000.0, NOW)
    _usage("b", 1, 1500.0, NOW - timedelta(hours=1))

    def policy(job_id, settings=FAIR, shares=None):
        queue = queue_view.queue_of(job_id, settings, NOW, (shares or {}).get)["queue"]
        return queue["position"], queue["policy"]

    one_each = {"a": 1, "b": 1}
    assert policy(second, shares=one_each) == (1, {"name": "fair_share", "rank": 1, "share": 1, "usage": 750.0})
    assert policy(first, shares=one_each) == (2, {"name": "fair_share", "rank": 2, "share": 1, "usage": 1000.0})
    assert policy(second, shares={"a": 1, "b": 2})[1]["rank"] == 1
    assert policy(first, shares={"a": 4, "b": 1}) == \
        (1, {"name": "fair_share", "rank": 1, "share": 4, "usage": 1000.0})  # 250 per share < 750
    assert policy(first, EXAMPLE) == (1, {"name": "round_robin", "rank": 1, "share": None, "usage": None})


def test_fair_share_counts_running_jobs_and_the_oldest_jobs_wait(clean_database):
    executors.record("http://e1", "example", 4, "alive", NOW)
    light, heavy = new_job(1), new_job(2)
    _set(light, JobState.QUEUED, created_at=NOW)
    _set(heavy, JobState.QUEUED, created_at=NOW)
    _usage(None, 1, 100.0, NOW)
    running = new_job(1)
    _set(running, JobState.RUNNING, dispatched_at=NOW - timedelta(seconds=50))  # 50 s of run so far
    _set(new_job(2), JobState.RUNNING, dispatched_at=NOW - timedelta(seconds=120))
    assert queue_view.queue_of(heavy, FAIR, NOW)["queue"]["policy"]["usage"] == 120.0
    assert queue_view.queue_of(light, FAIR, NOW)["queue"]["policy"] == \
        {"name": "fair_share", "rank": 2, "share": 1, "usage": 150.0}
    _set(light, JobState.QUEUED, created_at=NOW - timedelta(seconds=31))  # 150 - 31 < 120: its wait makes up
    assert queue_view.queue_of(light, FAIR, NOW)["queue"]["policy"]["rank"] == 1
    assert queue_view.queue_of(heavy, FAIR, NOW)["queue"]["policy"]["rank"] == 2


def test_a_portal_sees_its_users_rank_but_no_other_portals_user(clean_database, tmp_path):
    server = make_server(tmp_path, tokens=(("alpha", "a" * 20), ("beta", "b" * 20)), cluster_secret="s" * 20,
                         shares=(("alpha", 3),), services=(replace(FAIR, clients=()),))
    mine = server.upload(token="a" * 20).json["id"]
    theirs = server.upload(token="b" * 20).json["id"]
    with db_session:
        number = Job.get(public_id=theirs).id
    _set(number, JobState.QUEUED, created_at=NOW - timedelta(days=1))  # waited a day: served first
    queue = server.client.simulate_get(f"/jobs/{mine}", headers={"Authorization": "Bearer " + "a" * 20}).json["queue"]
    assert queue["policy"] == {"name": "fair_share", "rank": 2, "share": 3, "usage": 0.0}
    assert queue["position"] == 2
    assert "beta" not in str(queue) and theirs not in str(queue)


# --- the HTTP answers -----------------------------------------------------------------------------

def test_job_view_and_upload_answer_carry_the_queue_only_before_the_job_starts(clean_database, tmp_path):
    server = make_server(tmp_path)
    answer = server.upload()
    assert answer.status_code == 200
    queue = answer.json["queue"]
    assert queue["waiting_for"] == "no_executor" and "no executor of service example is alive" in queue["detail"]
    assert queue["position"] == 1
    job_id = answer.json["id"]
    assert server.client.simulate_get(f"/jobs/{job_id}").json["queue"] == queue
    _set(job_id, JobState.RUNNING)
    assert "queue" not in server.client.simulate_get(f"/jobs/{job_id}").json
    assert jobs.job_view(job_id)["status"] == "Running"


def test_an_upload_answers_its_queue_only_when_no_executor_takes_jobs(clean_database, tmp_path):
    """Working out an upload's place costs more than the upload itself with thousands queued: the
    answer carries it only when the job cannot start (GET /jobs/{id} always has it)."""
    server = make_server(tmp_path)
    with db_session:
        executors.record("http://127.0.0.1:9", "example", 2, "draining", NOW)
    assert server.upload().json["queue"]["waiting_for"] == "draining"
    with db_session:
        executors.record("http://127.0.0.1:9", "example", 2, "alive", NOW)
    answer = server.upload().json
    assert "queue" not in answer
    assert server.client.simulate_get(f"/jobs/{answer['id']}").json["queue"]["position"] == 2
