"""The supervisor re-creates an actor whose process dies, and the work it held goes on."""
from __future__ import annotations

import os
import signal

import pytest

from tests.harness import submit, wait_for_outcome, wait_until


@pytest.mark.parametrize("role", ["queue", "quota", "dispatcher:example", "retriever", "janitor"])
def test_a_killed_actor_is_re_created_and_jobs_still_complete(cluster, role):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 2}})
    waiting = [submit(server, "sleep 0.5") for _ in range(4)]
    before = server.actor_pids()

    os.kill(before[role], signal.SIGKILL)

    wait_until(lambda: server.actor_pids().get(role) not in (None, before[role]), 10, 0.05,
               f"the {role} actor to be re-created")
    later = submit(server, "echo later > out.txt", user_id=2)
    for job_id in waiting + [later]:
        assert wait_for_outcome(server, job_id, 60) == 200


def test_health_is_503_when_the_actor_system_does_not_answer(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})

    os.kill(server.actor_pids()["supervisor"], signal.SIGKILL)

    def unavailable():
        response = server.health(timeout=10)
        return response.json() if response.status_code == 503 else None

    # NOTE: the body of that very answer: the watchdog soon re-creates the supervisor.
    body = wait_until(unavailable, 15, 0.05, "/health to answer 503")
    assert body["actors"] == "unavailable" and body["database"] == "ok"
    wait_until(lambda: server.health(timeout=10).status_code == 200, 15, 0.1,
               "/health to answer 200 again once the watchdog re-created the supervisor")
