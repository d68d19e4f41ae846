"""Priorities and groups without processes: the upload's fields (falcon.testing with a stand-in
gateway), the job view and the list, the queue's per-user order (actors/server/queue.py
ServiceQueue), and why a grouped job waits (storage/queue_view.py)."""
from __future__ import annotations

import pytest
from pony.orm import db_session, select

from actors.server.queue import ServiceQueue
from conf.settings import ServiceConfig
from storage import executors, jobs, job_list, queue_view
from storage.clock import utcnow
from storage.models import Job
from tests.harness import GOOD, labelled_job, make_server


@pytest.fixture
def server(tmp_path, clean_database):
    return make_server(tmp_path)


@db_session
def stored() -> list[tuple[int, int | None, str | None]]:
    return list(select((j.id, j.priority, j.group) for j in Job))


# --- the upload ------------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, words", [
    ("priority", "-11", "priority must be an integer from -10 to 10"),
    ("priority", "11", "priority must be an integer from -10 to 10"),
    ("priority", "x", "got 'x'"),
    ("priority", "1.5", "got '1.5'"),
    ("priority", "", "priority must be"),
    ("priority", "\u0661", "priority must be"),  # an Arabic-Indic digit one
    ("group", "class a", "group must be 1 to 64 characters of A-Z, a-z, 0-9"),
    ("group", "x" * 65, "group must be 1 to 64 characters"),
    ("group", "", "group must be"),
    ("group", "caf\u00e9", "group must be"),
])
def test_a_bad_priority_or_group_is_400_saying_what_is_accepted_and_stores_and_tells_nothing(server, field, value,
                                                                                              words):
    response = server.upload({**GOOD, field: value})

    assert response.status_code == 400, response.text
    assert words in response.json["description"]
    assert stored() == [] and server.leftovers() == [] and server.gateway.sent == [] and server.gateway.posted == []


def test_priority_and_group_are_stored_shown_and_told_to_the_queue(server):
    labelled = server.upload({**GOOD, "priority": "-10", "group": "Class_2026.a-" + "x" * 51})
    plain = server.upload(GOOD)

    assert labelled.status_code == plain.status_code == 200
    group = "Class_2026.a-" + "x" * 51
    assert (labelled.json["priority"], labelled.json["group"]) == (-10, group)
    assert (plain.json["priority"], plain.json["group"]) == (0, None)
    first, second = labelled.json["id"], plain.json["id"]
    assert stored() == [(first, -10, group), (second, 0, None)]
    assert [(m.job_id, m.priority, m.group) for _, m in server.gateway.posted] == [(first, -10, group),
                                                                                  (second, 0, None)]
    assert server.client.simulate_get(f"/jobs/{first}").json["group"] == group
    with db_session:
        assert [(v["priority"], v["group"]) for v in job_list.views_of([first, second])] == [(-10, group), (0, None)]


def test_a_job_stored_before_priorities_shows_priority_0_and_queues_as_0(clean_database):
    job_id = labelled_job(1)
    with db_session:
        Job[job_id].priority = None  # as an upgraded database's old rows have it
    assert jobs.job_view(job_id)["priority"] == 0
    assert [row.priority for row in jobs.queued_jobs("example")] == [0]


# --- the queue's order ---------------------------------------------------------------------------

def test_the_queue_gives_each_users_jobs_by_priority_then_arrival_and_removes_any():
    queue = ServiceQueue()
    alice, bob = (None, 1), ("portal", 1)
    for job_id, priority in ((10, 0), (11, 5), (12, -3), (13, 5)):
        queue.add(alice, job_id, priority, "class-a" if job_id == 12 else None, 100.0 + job_id)
    queue.add(bob, 14, 10, None, 50.0)  # a requeued job keeps its (earlier) upload time
    assert not queue.add(alice, 11, 5)  # already queued

    # each group's next 2 (and of no group): the class-a job is a candidate beside the others
    assert queue.request("example", 2).candidates == ((alice, (11, 13, 12)), (bob, (14,)))
    request = queue.request("example", 4)
    assert request.candidates == ((alice, (11, 13, 10, 12)), (bob, (14,)))
    assert sorted(request.labels) == [(11, 5, None), (12, -3, "class-a"), (13, 5, None), (14, 10, None)]
    # the age credit counts from each user's next job, not from a low-priority job left waiting
    assert request.waiting_since == ((alice, 111.0), (bob, 50.0))

    queue.remove(13)
    queue.remove(10)
    queue.remove(99)  # not queued: nothing happens
    assert queue.request("example", 5).candidates == ((alice, (11, 12)), (bob, (14,)))
    queue.remove(11)
    assert queue.request("example", 5).waiting_since == ((alice, 112.0), (bob, 50.0))
    queue.add(alice, 11, 5, None, 111.0)
    queue.remove(14)
    assert queue.request("example", 5).candidates == ((alice, (11, 12)),) and len(queue) == 2


# --- why a grouped job waits -----------------------------------------------------------------------

def test_a_job_whose_group_is_at_runs_per_group_waits_for_runs_per_group(clean_database):
    settings = ServiceConfig("example", runs_per_user=5, runs_per_group=2)
    executors.record("http://e:9000", "example", 8, "alive", utcnow())
    running = [labelled_job(user, group="class-a") for user in (1, 2)]
    other_portal = labelled_job(3, group="class-a", portal="other")
    jobs.claim_for_dispatch(running + [other_portal], utcnow())
    waiting = labelled_job(4, group="class-a")
    free = labelled_job(5, group="class-b")
    mine_first = labelled_job(4, priority=3, group="class-b")

    with db_session:
        held = queue_view.of_job(Job[waiting], settings, utcnow())["queue"]
        loose = queue_view.of_job(Job[free], settings, utcnow())["queue"]
        ahead = queue_view.of_job(Job[mine_first], settings, utcnow())["queue"]
    assert held["waiting_for"] == "runs_per_group"
    assert "group class-a has 2 of 2 jobs active in example (runs_per_group)" in held["detail"]
    assert loose["waiting_for"] is None
    assert ahead["position_for_user"] == 1  # its priority puts it before its user's older job
    with db_session:
        assert queue_view.of_job(Job[waiting], settings, utcnow())["queue"]["position_for_user"] == 2
