"""Nothing lost: every accepted job ends in exactly one terminal state with its own result,
whatever process is killed when. Each scenario puts 40 jobs in flight and kills real processes."""
from __future__ import annotations

import os
import signal
import uuid

import pytest

from actors.runtime.processes import start_time
from tests.harness import Node, job, listing, results, still_running, upload, wait_for_outcome, wait_until

JOBS = 40
TIMEOUT = 2  # executor_timeout of these servers, seconds
# Each job turns its own token into its result, taking a little while so that many are in flight.
SCRIPT = b"#!/usr/bin/env bash\nset -e\nsleep 0.$((RANDOM % 5))\ntr a-z A-Z < token.txt > result.txt\n"
#: Long enough that the scripts running when a node is killed are still running when its actor
#: system has been stopped (its admin sees the main process go at once; stopping takes a moment).
SLOW_SCRIPT = SCRIPT.replace(b"sleep 0.", b"sleep 3.")


def two_executor_cluster(cluster, **server):
    left = cluster.executor("example", slots=4)
    right = cluster.executor("example", slots=4)
    node = cluster.server({"example": {"clients": f"{left.url}, {right.url}", "runs_per_user": 10}},
                          executor_timeout=TIMEOUT, **server)
    return node, left, right


def launch(server: Node, count: int = JOBS, script: bytes = SCRIPT) -> dict[int, str]:
    batch = {}
    for n in range(count):
        token = uuid.uuid4().hex
        response = upload(server, {"run.sh": script, "token.txt": token.encode()}, user_id=1 + n % 4)
        assert response.status_code == 200, response.text
        batch[response.json()["id"]] = token
    return batch


def started(server: Node, batch: dict[int, str]) -> int:
    return sum(job(server, j)["status"] not in ("Queued", "Dispatching") for j in batch)


def assert_every_job_completed_with_its_own_result(server: Node, batch: dict[int, str]) -> None:
    for job_id, token in batch.items():
        try:
            outcome = wait_for_outcome(server, job_id, 90)
        except BaseException:
            print(job(server, job_id), server.log()[-4000:], sep="\n")
            raise
        assert outcome == 200, job(server, job_id)
        assert results(server, job_id).read("result.txt").decode().strip() == token.upper()
        record = job(server, job_id)
        assert record["status"] == "Completed" and record["exit_code"] == 0


# --- the server dies -----------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["process group", "main process alone", "every process"])
def test_a_server_killed_mid_flight_finishes_every_job_after_a_restart(cluster, how):
    server, _, _ = two_executor_cluster(cluster)
    batch = launch(server)
    wait_until(lambda: started(server, batch) >= 8, 30, 0.05, "jobs to be under way")

    if how == "process group":
        server.kill_group()  # the actor system stops itself (or is stopped by the restart)
    elif how == "main process alone":
        server.kill_main()  # its admin shuts the actor system down
    else:
        server.kill_everything()
        server.process.wait(10)

    again = server.restart()
    assert_every_job_completed_with_its_own_result(again, batch)


# --- an executor dies, is cut off, or restarts ---------------------------------------------------

def test_an_executor_killed_mid_flight_is_declared_lost_and_its_jobs_run_elsewhere(cluster):
    server, left, right = two_executor_cluster(cluster)
    batch = launch(server)
    wait_until(lambda: any(job(server, j)["executor"] == left.url and job(server, j)["status"] == "Running"
                           for j in batch), 30, 0.05, "a job to run on the left executor")

    left.kill_everything()  # the machine is gone: node, actors and scripts
    left.process.wait(10)

    assert_every_job_completed_with_its_own_result(server, batch)
    assert any(job(server, j)["attempts"] >= 2 for j in batch)
    executors = listing(server)
    assert executors[left.url]["state"] == "lost" and executors[right.url]["state"] == "alive"


def test_an_executor_restarted_mid_flight_runs_its_lost_jobs_again(cluster):
    executor = cluster.executor("example", slots=4)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 10}}, executor_timeout=TIMEOUT)
    batch = launch(server, 12, SLOW_SCRIPT)
    wait_until(lambda: started(server, batch) >= 4, 30, 0.05, "jobs to be under way")

    executor.kill_main()  # its admin stops its actors and their scripts; the restart reports them lost
    again = executor.restart()

    assert_every_job_completed_with_its_own_result(server, batch)
    held = again.tasks()
    lost = [task for task in held if task["state"] == "lost"]
    assert lost, "the tasks running at the kill are reported lost, not completed"
    for task in lost:  # and the job of each ran again, to completion
        assert job(server, task["job_id"])["attempts"] > task["attempt"]


def test_an_executor_cut_off_and_back_has_its_stale_task_killed_and_its_late_report_ignored(cluster, tmp_path):
    # NOTE: without a sandbox: the script marks its first run outside its folder.
    left = cluster.executor("example", slots=1, sandbox="none")
    right = cluster.executor("example", slots=1, sandbox="none")
    server = cluster.server({"example": {"clients": f"{left.url}, {right.url}"}}, executor_timeout=TIMEOUT)
    marker = tmp_path / "ran"
    # The first run sleeps long (it is the one to be killed); the second ends at once.
    script = f"if [ ! -e {marker} ]; then touch {marker}; sleep 20; fi\necho $$ > out.txt"
    job_id = upload(server, {"run.sh": script.encode()}).json()["id"]
    wait_until(lambda: job(server, job_id)["status"] == "Running", 10, message="the job to run")
    first = job(server, job_id)["executor"]
    frozen = left if first == left.url else right
    node_pids = [p for p in sorted(frozen.pids()) if not _is_script(p)]

    for pid in node_pids:  # cut off: the node stops answering, its script keeps running
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: job(server, job_id)["attempts"] == 2, 20, 0.1, "the job to be sent elsewhere")
    finally:
        for pid in node_pids:
            os.kill(pid, signal.SIGCONT)

    assert wait_for_outcome(server, job_id, 30) == 200
    record = job(server, job_id)
    assert record["attempts"] == 2 and record["executor"] != first
    wait_until(lambda: frozen.task_state(1) == "killed", 20, 0.1,
               "the stale task to be killed when its executor came back")


def _runner(executor: Node) -> int | None:
    """The pid of the executor's actor process that runs its scripts (the parent of a script's launcher)."""
    for pid in sorted(executor.pids()):
        if _is_script(pid):
            with open(f"/proc/{pid}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            if not _is_script(parent):
                return parent
    return None


def _is_script(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"python" not in handle.read()
    except OSError:
        return False


def test_a_job_that_keeps_losing_its_executor_fails_after_max_attempts(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}}, executor_timeout=TIMEOUT, max_attempts=2)
    job_id = upload(server, {"run.sh": b"sleep 600"}).json()["id"]
    fine = upload(server, {"run.sh": b"sleep 1\necho fine > out.txt"}, user_id=2).json()["id"]

    for attempt in (1, 2):  # the executor's actor dies under every attempt: each is lost
        wait_until(lambda: job(server, job_id)["attempts"] == attempt and job(server, job_id)["status"] == "Running",
                   60, 0.05, f"attempt {attempt} to run")
        os.kill(wait_until(lambda: _runner(executor), 10, 0.05, "the script's runner"), signal.SIGKILL)

    assert wait_for_outcome(server, job_id, 90) == 204
    record = job(server, job_id)
    assert record["status"] == "Failed" and record["attempts"] == 2
    assert "lost" in record["reason"]
    assert wait_for_outcome(server, fine, 90) in (200, 204)


# --- actors die or fail --------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["dispatcher:example", "retriever", "quota", "queue"])
def test_a_single_actor_killed_mid_flight_is_re_created_and_every_job_completes(cluster, role):
    server, _, _ = two_executor_cluster(cluster)
    batch = launch(server)
    wait_until(lambda: started(server, batch) >= 8, 30, 0.05, "jobs to be under way")
    before = server.actor_pids()[role]

    os.kill(before, signal.SIGKILL)

    wait_until(lambda: server.actor_pids().get(role) not in (None, before), 2, 0.02,
               f"the {role} actor to be re-created within a second or two")
    assert_every_job_completed_with_its_own_result(server, batch)


def test_the_server_re_creates_its_supervisor_and_every_actor_if_the_supervisor_dies(cluster):
    server, _, _ = two_executor_cluster(cluster)
    batch = launch(server, 12)
    before = server.actor_pids()
    born = {pid: start_time(pid) for pid in before.values()}  # pids get reused; start times do not

    os.kill(before["supervisor"], signal.SIGKILL)

    wait_until(lambda: server.health(timeout=10).status_code == 200
               and server.actor_pids()["supervisor"] != before["supervisor"], 30, 0.2, "a new supervisor")
    assert_every_job_completed_with_its_own_result(server, batch)
    assert not any(still_running(pid, started) for pid, started in born.items())


def test_a_message_that_crashes_an_actor_twice_fails_its_job_with_the_reason(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}},
                            env={"ORCHESTRATOR_FAULTS": "retriever:ExecutorEvent:2"})
    healthy = upload(server, {"run.sh": b"echo ok > out.txt"}).json()["id"]
    poisoned = upload(server, {"run.sh": b"echo ok > out.txt"}).json()["id"]
    after = upload(server, {"run.sh": b"echo ok > out.txt"}).json()["id"]
    assert poisoned == 2

    assert wait_for_outcome(server, poisoned) == 204
    record = job(server, poisoned)
    assert record["status"] == "Failed" and "internal error" in record["reason"]
    assert "injected fault" in record["reason"]
    assert wait_for_outcome(server, healthy) == 200 and wait_for_outcome(server, after) == 200


def test_an_actor_that_fails_once_on_a_message_recovers_and_the_job_completes(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}},
                            env={"ORCHESTRATOR_FAULTS": "quota:JobEnded:1:once,dispatcher:Dispatch:1:once"})
    first = upload(server, {"run.sh": b"echo ok > out.txt"}).json()["id"]
    second = upload(server, {"run.sh": b"echo ok > out.txt"}).json()["id"]

    assert wait_for_outcome(server, first) == 200 and wait_for_outcome(server, second) == 200
    assert job(server, first)["attempts"] == 1
