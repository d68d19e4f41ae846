"""Jobs through server → executor (backend = slurm) → a real Slurm cluster: every outcome.

One server and three Slurm executors serve the whole module: `example` (plain), `limited` (its
service's max_runtime = 60, which the executor passes to Slurm as --time=1) and `nowhere` (a
partition Slurm does not have). The job over its time limit is submitted first and checked last, so
its minute runs while the other tests do.
"""
from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
import requests
import tes

from tests.harness import (add_section, cancel, file_host, job, let_go, listing, results, submit, wait_for_outcome,
                           wait_until, waiting_for_flag)
from tests.slurm_helpers import cancel_slurm_jobs, slurm_executor, slurm_state, task_of

#: Slurm rounds time limits up to whole minutes and kills at about 1:02 (then KillWait).
TIME_LIMIT_WAIT = 150.0
#: The first job after a fresh cluster start waits ~3 s in Slurm's queue; then ~1 s.
OUTCOME_WAIT = 60.0


@pytest.fixture(scope="module")
def stack(slurm, module_cluster):
    server = add_section(module_cluster.server({"example": {"runs_per_user": 10}, "limited": {"max_runtime": 60},
                                                "nowhere": {}}, start=False), "tes", {"images": "alpine=example",
                                                                                 "url_hosts": "127.0.0.1"}).start()
    executors = SimpleNamespace(
        example=slurm_executor(module_cluster, "example", server),
        limited=slurm_executor(module_cluster, "limited", server),
        nowhere=slurm_executor(module_cluster, "nowhere", server, partition="nosuch"),
    )
    for name in ("example", "limited", "nowhere"):
        wait_until(lambda: _registered(server, name), 20, 0.1, f"the {name} executor to register")
    overtime = submit(server, "echo before > before.txt\nsleep 600", service="limited")
    yield SimpleNamespace(server=server, executors=executors, overtime=overtime)
    # NOTE: a run of some of these tests leaves Slurm jobs running (the overtime one); their
    # processes carry the executor's environment, so the leak check would count them as its own.
    cancel_slurm_jobs()


def _registered(server, service: str) -> bool:
    return any(e["service"] == service and e["state"] == "alive" for e in listing(server).values())


def test_a_job_runs_in_slurm_and_its_results_are_served(stack):
    job_id = submit(stack.server, "echo hello > output.txt\necho \"$SLURM_JOB_ID\" > slurm_job.txt\necho to-stderr >&2")

    assert wait_for_outcome(stack.server, job_id, OUTCOME_WAIT) == 200
    archive = results(stack.server, job_id)
    assert archive.read("output.txt") == b"hello\n"
    assert {"stdout.log", "stderr.log", "run.sh"} <= set(archive.namelist())
    assert archive.read("stderr.log") == b"to-stderr\n"
    task = task_of(stack.executors.example, job_id)
    assert archive.read("slurm_job.txt").decode().strip() == task["slurm_id"]  # it ran as that Slurm job
    record = job(stack.server, job_id)
    assert record["status"] == "Completed" and record["exit_code"] == 0 and record["attempts"] == 1


def test_a_tes_task_fetches_maps_and_puts_its_files_inside_its_slurm_allocation(stack):
    with file_host({"/in.txt": b"from the web\n"}) as host:
        client = tes.HTTPClient(stack.server.url, timeout=10)
        task_id = client.create_task(tes.Task(
            name="tes-slurm", tags={"user_id": "3"},
            inputs=[tes.Input(path="/data/in.txt", url=f"{host.url}/in.txt"),
                    tes.Input(path="/data/note.txt", content="from slurm\n")],
            outputs=[tes.Output(path="/out/copy.txt", url=f"{host.url}/up/copy.txt")],
            executors=[tes.Executor(image="alpine", command=["sh", "-c", "tr a-z A-Z < /data/in.txt > /out/copy.txt"]),
                       tes.Executor(image="alpine", command=["cat"], stdin="/data/note.txt"),
                       tes.Executor(image="alpine", command=["sh", "-c", 'echo "third $SLURM_JOB_ID"'])]))

        assert client.wait(task_id, timeout=OUTCOME_WAIT).state == "COMPLETE"
        assert host.received == {"/up/copy.txt": b"FROM THE WEB\n"}
    logs = client.get_task(task_id, "FULL").logs[0].logs
    assert [log.exit_code for log in logs] == [0, 0, 0] and logs[1].stdout == "from slurm\n"
    # It ran as that Slurm job, the stage inside the allocation.
    assert logs[2].stdout == f"third {task_of(stack.executors.example, int(task_id))['slurm_id']}\n"


def test_a_running_slurm_jobs_log_tail_is_served_through_the_server(stack):
    job_id = submit(stack.server, waiting_for_flag("slurm-follow", "echo first\necho second"))

    def tail():
        answer = requests.get(f"{stack.server.url}/jobs/{job_id}/log", params={"tail": "1"}, timeout=10)
        return answer.status_code == 200 and answer.text == "second\n"
    wait_until(tail, OUTCOME_WAIT, 0.1, "the Slurm job's last line")
    # NOTE: the log is served from the job's folder as soon as it writes; the server hears it runs
    # when the node's next squeue poll sees it, which may come a moment after its first lines.
    wait_until(lambda: job(stack.server, job_id)["status"] == "Running", OUTCOME_WAIT, 0.1, "the job running")
    let_go(stack.executors.example.folder, "slurm-follow")
    assert wait_for_outcome(stack.server, job_id, OUTCOME_WAIT) == 200


def test_a_slurm_job_runs_in_the_executors_sandbox_inside_its_allocation(stack):
    private = stack.executors.example.folder / "data" / "executor.sqlite"
    script = (f"if [ -e {private} ]; then echo seen; else echo hidden; fi > probe.txt\n"
              "grep CapEff /proc/self/status >> probe.txt\nenv > env.txt")
    job_id = submit(stack.server, script)

    assert wait_for_outcome(stack.server, job_id, OUTCOME_WAIT) == 200
    archive = results(stack.server, job_id)
    probe = archive.read("probe.txt").decode().splitlines()
    assert probe[0] == "hidden" and probe[1].split()[1] == "0000000000000000"
    names = {line.partition("=")[0] for line in archive.read("env.txt").decode().splitlines()}
    assert {"PATH", "HOME", "SLURM_JOB_ID"} <= names  # the job's own, and Slurm's
    assert not {"VIRTUAL_ENV", "PYTHONUNBUFFERED"} & names  # nothing else of the executor's


def test_a_script_without_a_shebang_runs_as_bash_run_sh_does(stack):
    response = requests.post(f"{stack.server.url}/upload", data={"user_id": "2", "service": "example"},
                             files=[("file", ("run.sh", b"[[ 1 == 1 ]] && echo bash > shell.txt\n"))], timeout=30)
    job_id = response.json()["id"]

    assert wait_for_outcome(stack.server, job_id, OUTCOME_WAIT) == 200
    archive = results(stack.server, job_id)
    assert archive.read("shell.txt") == b"bash\n"


def test_a_non_zero_exit_fails_the_job_with_its_code_stderr_and_slurms_verdict(stack):
    job_id = submit(stack.server, "echo something broke >&2\nexit 3")

    assert wait_for_outcome(stack.server, job_id, OUTCOME_WAIT) == 204
    record = job(stack.server, job_id)
    assert record["status"] == "Failed" and record["exit_code"] == 3
    assert "exited with code 3" in record["reason"]
    assert record["stderr_tail"].startswith("something broke\n")
    assert record["stderr_tail"].endswith("FAILED (NonZeroExitCode), ExitCode 3:0")


def test_a_job_cancelled_in_slurm_ends_cancelled_on_the_server(stack):
    job_id = submit(stack.server, "sleep 600")
    wait_until(lambda: job(stack.server, job_id)["status"] == "Running", OUTCOME_WAIT, 0.1, "the job to run")
    slurm_id = task_of(stack.executors.example, job_id)["slurm_id"]
    assert slurm_state(slurm_id) == "RUNNING"

    subprocess.run(["scancel", slurm_id], check=True, timeout=20)

    assert wait_for_outcome(stack.server, job_id, OUTCOME_WAIT) == 204
    record = job(stack.server, job_id)
    assert record["status"] == "Cancelled" and record["outcome"] == "Cancelled" and record["attempts"] == 1
    assert f"slurm: job {slurm_id} CANCELLED" in record["stderr_tail"]
    assert task_of(stack.executors.example, job_id)["state"] == "cancelled"


def test_a_job_the_portal_cancels_has_its_slurm_job_cancelled(stack):
    job_id = submit(stack.server, "sleep 600")
    wait_until(lambda: job(stack.server, job_id)["status"] == "Running", OUTCOME_WAIT, 0.1, "the job to run in Slurm")
    slurm_id = task_of(stack.executors.example, job_id)["slurm_id"]

    response = cancel(stack.server, job_id)

    assert response.status_code == 200 and response.json()["status"] == "Cancelled"
    wait_until(lambda: slurm_state(slurm_id) == "CANCELLED", 30, 0.1, "scancel of the job's Slurm job")
    assert task_of(stack.executors.example, job_id)["state"] == "killed"
    assert job(stack.server, job_id)["status"] == "Cancelled"


def test_a_job_sbatch_refuses_fails_at_once_with_slurms_message(stack):
    job_id = submit(stack.server, "echo never > out.txt", service="nowhere")

    assert wait_for_outcome(stack.server, job_id, 30) == 204
    record = job(stack.server, job_id)
    assert record["status"] == "Failed" and record["attempts"] == 1
    assert "sbatch refused the job" in record["stderr_tail"]
    assert "Invalid partition name specified" in record["stderr_tail"]
    assert task_of(stack.executors.nowhere, job_id)["slurm_id"] is None


def test_the_executor_advertises_max_jobs_as_its_slots_and_its_backend(stack):
    health = stack.executors.example.health().json()
    assert health["status"] == "ok" and health["backend"] == "slurm" and health["slots"] == 4


def test_a_job_over_its_max_runtime_fails_with_slurms_timeout_as_its_time_limit(stack):
    assert wait_for_outcome(stack.server, stack.overtime, TIME_LIMIT_WAIT) == 204
    record = job(stack.server, stack.overtime)
    assert record["status"] == "Failed" and record["attempts"] == 1, record
    assert record["reason"] == "time limit (60 s)" and record["max_runtime"] == 60
    # Killed by SIGTERM: Slurm says ExitCode 0:15, or 143:0 when bash reported the signal itself;
    # either way the job's exit code is 143, as a shell reports it.
    assert record["exit_code"] == 128 + 15
    assert f"slurm: job {task_of(stack.executors.limited, stack.overtime)['slurm_id']} TIMEOUT (TimeLimit), " \
           f"ExitCode " in record["stderr_tail"]
    assert record["stderr_tail"].endswith(("ExitCode 0:15", "ExitCode 143:0"))
