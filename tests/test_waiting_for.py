"""Why a job waits, on real server and executor processes: every `waiting_for` reason produced for
real (no executor, a draining one, full slots, runs_per_user, max_runs), and positions of two users'
jobs checked against the order in which they really started."""
from __future__ import annotations

import signal

from tests.harness import cancel, job, listing, submit, upload, script, wait_for_outcome, wait_until

SLEEPER = "sleep 30"


def waiting(server, job_id) -> dict:
    return job(server, job_id).get("queue") or {}


def running(server, job_id) -> None:
    wait_until(lambda: job(server, job_id)["status"] == "Running", 15, message=f"job {job_id} to run")


def test_an_upload_with_no_executor_alive_says_so_and_runs_once_one_registers(cluster):
    server = cluster.server({"example": {"runs_per_user": 2}})
    answer = upload(server, {"run.sh": script("echo ok > out.txt")})
    assert answer.status_code == 200
    queue = answer.json()["queue"]
    assert queue["waiting_for"] == "no_executor"
    assert "no executor of service example is alive" in queue["detail"]
    assert (queue["position"], queue["position_for_user"], queue["estimated_start"]) == (1, 1, None)

    cluster.executor("example", server_port=server.port)
    job_id = answer.json()["id"]
    assert wait_for_outcome(server, job_id) == 200
    assert "queue" not in job(server, job_id)


def test_a_draining_executor_then_a_gone_one_hold_the_queue(cluster):
    server = cluster.server({"example": {"runs_per_user": 2}})
    executor = cluster.executor("example", server_port=server.port, slots=1)
    wait_until(lambda: listing(server).get(executor.url, {}).get("state") == "alive", 15, 0.05, "registration")
    sleeper = submit(server, SLEEPER)
    running(server, sleeper)
    executor.process.send_signal(signal.SIGTERM)  # drains: finishes the sleeper, takes nothing new
    wait_until(lambda: listing(server)[executor.url]["state"] == "draining", 10, 0.05, "the executor to drain")

    held = submit(server, "echo held > out.txt", user_id=2)
    queue = waiting(server, held)
    assert queue["waiting_for"] == "draining"
    assert "every live executor of service example is draining" in queue["detail"]

    assert cancel(server, sleeper).status_code == 200
    executor.process.wait(15)  # drained: it says it leaves
    wait_until(lambda: waiting(server, held).get("waiting_for") == "no_executor", 10, 0.05, "no executor")
    assert job(server, held)["status"] == "Queued"


def test_full_executors_and_two_users_positions_match_the_order_they_start(cluster):
    executor = cluster.executor("example", slots=1)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 10}})
    sleeper = submit(server, SLEEPER, user_id=1)
    running(server, sleeper)
    first = [submit(server, "echo one > out.txt", user_id=1) for _ in range(3)]
    second = [submit(server, "echo two > out.txt", user_id=2) for _ in range(2)]

    queues = {job_id: waiting(server, job_id) for job_id in first + second}
    assert {q["waiting_for"] for q in queues.values()} == {"executors_full"}
    assert "every slot of the executors of example is taken" in queues[first[0]]["detail"]
    # user 1 was served lately (its sleeper runs): user 2 comes first in each round
    assert [queues[j]["position"] for j in second + first] == [1, 3, 2, 4, 5]
    assert [queues[j]["position_for_user"] for j in first] == [1, 2, 3]

    assert cancel(server, sleeper).status_code == 200
    for job_id in first + second:
        assert wait_for_outcome(server, job_id) == 200
    started = sorted(first + second, key=lambda j: job(server, j)["started_at"])
    assert started == sorted(first + second, key=lambda j: queues[j]["position"])


def test_runs_per_user_and_max_runs_hold_jobs_of_a_busy_user_and_of_another(cluster):
    executor = cluster.executor("example", slots=4)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 1, "max_runs": 1}})
    sleeper = submit(server, SLEEPER, user_id=1)
    running(server, sleeper)
    own = submit(server, "echo own > out.txt", user_id=1)
    other = submit(server, "echo other > out.txt", user_id=2)

    mine, theirs = waiting(server, own), waiting(server, other)
    # both limits hold the busy user's job; its own limit is what still holds after another's job ends
    assert mine["waiting_for"] == "runs_per_user" and "user 1 has 1 of 1 jobs active" in mine["detail"]
    assert theirs["waiting_for"] == "max_runs" and "runs its most jobs at once (1, max_runs)" in theirs["detail"]

    assert cancel(server, sleeper).status_code == 200
    assert wait_for_outcome(server, own) == 200 and wait_for_outcome(server, other) == 200
