"""Priorities, fair share and group caps on real processes: one server with three services (one
per policy under test) and an executor each, shared by the module; the order jobs start in is read
from their own `dispatched_at` stamps (the quota's, written when it admits them)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.harness import job, let_go, submit_labelled, wait_for_outcome, wait_until, waiting_for_flag

ACTIVE = ("Dispatching", "Submitted", "Running")


@pytest.fixture(scope="module")
def nodes(module_cluster):
    # NOTE: the four nodes start at once, then are waited for: a start costs about two seconds.
    executors = {"prio": module_cluster.executor("prio", slots=1, start=False),
                 "fair": module_cluster.executor("fair", slots=1, start=False),
                 "groups": module_cluster.executor("groups", slots=8, start=False)}
    server = module_cluster.server({
        "prio": {"clients": executors["prio"].url, "runs_per_user": 5},
        "fair": {"clients": executors["fair"].url, "runs_per_user": 1, "policy": "fair_share"},
        "groups": {"clients": executors["groups"].url, "runs_per_user": 5, "runs_per_group": 2}}, start=False)
    for node in (*executors.values(), server):
        node.start(wait=False)
    for node in (*executors.values(), server):
        wait_until(node.healthy, 30, 0.05, f"{node.kind} on port {node.port} to be healthy")
    return server, executors


def blocker(server, executor, service: str, user_id: int, token: str) -> int:
    """A job that holds its service's one slot until `let_go`; returned once it runs."""
    job_id = submit_labelled(server, waiting_for_flag(token), user_id, service=service)
    wait_until(lambda: job(server, job_id)["status"] == "Running", 20, 0.02, f"{token} to run")
    return job_id


def start_order(server, job_ids: list[int]) -> list[int]:
    for job_id in job_ids:
        assert wait_for_outcome(server, job_id, 30) == 200
    return sorted(job_ids, key=lambda j: stamp(job(server, j)["dispatched_at"]))


def stamp(text: str) -> datetime:
    """A job view's time (ISO 8601 with Z) as the naive UTC datetime the server stores."""
    return datetime.fromisoformat(text.rstrip("Z"))


def test_a_users_jobs_start_by_priority_and_never_before_another_users_turn(nodes):
    server, executors = nodes
    held = blocker(server, executors["prio"], "prio", 1, "prio-block")
    mine = [submit_labelled(server, "true", 1, priority=p, service="prio") for p in (0, 5, -3, 5)]
    other = submit_labelled(server, "true", 2, service="prio")
    urgent = submit_labelled(server, "true", 1, priority=10, service="prio")

    let_go(executors["prio"].folder / "data", "prio-block")

    # user 1 was served last (the blocker): user 2's turn first; then user 1's by priority, FIFO among equals
    assert start_order(server, [held, *mine, other, urgent]) == [held, other, urgent, mine[1], mine[3], mine[0],
                                                                 mine[2]]


def test_a_group_never_has_more_than_runs_per_group_active_while_research_jobs_run_beside_it(nodes):
    server, executors = nodes
    root = executors["groups"].folder / "data"
    students = {f"class-a-{user}-{n}": submit_labelled(server, waiting_for_flag(f"class-a-{user}-{n}"), user,
                                                       group="class-a", service="groups")
                for user in (11, 12, 13) for n in (1, 2)}
    research = {f"research-{n}": submit_labelled(server, waiting_for_flag(f"research-{n}"), 14, service="groups")
                for n in (1, 2)}

    def states(ids: dict[str, int]) -> dict[str, str]:
        return {token: job(server, job_id)["status"] for token, job_id in ids.items()}

    wait_until(lambda: all(s == "Running" for s in states(research).values()), 20, 0.02, "research jobs to run")
    ended: set[str] = set()
    for _ in students:
        def two_running() -> list[str] | None:
            now = states(students)
            active = [token for token, state in now.items() if state in ACTIVE]
            assert len(active) <= 2, now  # at every look, so also each time a job starts
            running = [token for token in active if now[token] == "Running"]
            return running if len(running) >= min(2, len(students) - len(ended)) else None

        running = wait_until(two_running, 20, 0.02, "the group's next jobs to run")
        assert all(s == "Running" for s in states(research).values())
        let_go(root, running[0])
        wait_until(lambda: job(server, students[running[0]])["status"] == "Completed", 20, 0.02, running[0])
        ended.add(running[0])
    for token in research:
        let_go(root, token)
    assert all(wait_for_outcome(server, job_id, 30) == 200 for job_id in [*students.values(), *research.values()])


def test_fair_share_starts_a_light_users_jobs_before_a_heavy_users_backlog_and_usage_survives_a_restart(nodes):
    server, executors = nodes
    root = executors["fair"].folder / "data"
    heavy = blocker(server, executors["fair"], "fair", 21, "fair-heavy")
    backlog = [submit_labelled(server, "true", 21, service="fair") for _ in range(2)]
    light = [submit_labelled(server, "true", 22, service="fair") for _ in range(2)]
    # the heavy user's usage: the run time of its job, which must outweigh how much longer its backlog
    # waited than the light user's jobs (the age credit); half a second is ten times that
    started = stamp(job(server, heavy)["started_at"])
    wait_until(lambda: (datetime.now(timezone.utc).replace(tzinfo=None) - started).total_seconds() > 0.5, 10, 0.05,
               "the heavy job to have run half a second")
    let_go(root, "fair-heavy")

    assert start_order(server, [heavy, *backlog, *light]) == [heavy, *light, *backlog]

    # the server stops and starts again on its data: the usage it stored is read back
    again = server.restart()
    other = blocker(again, executors["fair"], "fair", 23, "fair-other")
    heavy_next = submit_labelled(again, "true", 21, service="fair")
    light_next = submit_labelled(again, "true", 22, service="fair")
    let_go(root, "fair-other")
    assert start_order(again, [other, heavy_next, light_next]) == [other, light_next, heavy_next]
