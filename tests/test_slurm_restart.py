"""A Slurm executor that restarts, crashes between sbatch and recording the job id, or loses its
controller: its jobs are re-attached, never submitted twice, and it takes no work it cannot run."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import uuid
from datetime import datetime

import requests

from actors.node.backends.slurm import job_name
from tests.harness import Node, job, listing, results, submit, wait_for_outcome, wait_until
from tests.slurm_cluster import start_controller, stop_controller
from tests.slurm_helpers import POLL_INTERVAL, slurm_executor, slurm_state, task_of

OUTCOME_WAIT = 60.0


def test_an_executor_killed_mid_job_re_attaches_to_its_slurm_jobs_and_reports_their_real_outcome(
        slurm, cluster, tmp_path):
    server = cluster.server({"example": {}})
    executor = slurm_executor(cluster, "example", server, read_only_paths=tmp_path)  # gates
    wait_until(lambda: listing(server).get(executor.url, {}).get("state") == "alive", 20, 0.1, "registration")
    # Each job waits for its own gate file: one ends while no executor watches, one after the restart.
    early, late = tmp_path / "early", tmp_path / "late"
    ends_early = submit(server, f"until [ -e {early} ]; do sleep 0.1; done\necho early > out.txt")
    ends_late = submit(server, f"until [ -e {late} ]; do sleep 0.1; done\necho late > out.txt")
    for job_id in (ends_early, ends_late):
        wait_until(lambda: job(server, job_id)["status"] == "Running", OUTCOME_WAIT, 0.1, f"job {job_id} to run")
    slurm_ids = {job_id: task_of(executor, job_id)["slurm_id"] for job_id in (ends_early, ends_late)}

    executor.kill_main()  # kill -9; its admin stops its actors; Slurm runs the jobs on
    early.touch()
    wait_until(lambda: slurm_state(slurm_ids[ends_early]) == "COMPLETED", 30, 0.1, "the early job to end in Slurm")
    again = executor.restart()
    late.touch()

    for job_id, text in ((ends_early, b"early\n"), (ends_late, b"late\n")):
        assert wait_for_outcome(server, job_id, OUTCOME_WAIT) == 200
        assert results(server, job_id).read("out.txt") == text
        record = job(server, job_id)
        assert record["status"] == "Completed" and record["attempts"] == 1
        task = task_of(again, job_id)
        assert task["state"] == "finished" and task["slurm_id"] == slurm_ids[job_id]


def test_a_task_submitted_just_before_a_crash_is_found_by_its_job_name_and_not_submitted_again(
        slurm, cluster, tmp_path):
    executor = cluster.executor("example", backend="slurm", max_jobs=4, poll_interval=POLL_INTERVAL)  # no server
    executor.stop()
    # The crash window: the task row says accepted, yet sbatch had already taken its job.
    folder = executor.folder / "data" / "tasks" / "crashed"
    folder.mkdir(parents=True)
    (folder / "run.sh").write_text("echo once >> out.txt\n")
    uid = f"crashed-{uuid.uuid4().hex}"  # the cluster may hold jobs of earlier runs
    name = job_name(uid, 1)
    slurm_id = subprocess.run(["sbatch", "--parsable", f"--chdir={folder}", f"--job-name={name}",
                               f"--output={folder}/stdout.log", f"--error={folder}/stderr.log", "--wrap=bash run.sh"],
                              capture_output=True, text=True, check=True, timeout=20).stdout.strip()
    with sqlite3.connect(executor.folder / "data" / "executor.sqlite") as database:
        database.execute("INSERT INTO Task (job_id, job_uid, attempt, dir, state, created_at, reported) "
                         "VALUES (1, ?, 1, ?, 'accepted', ?, 1)", (uid, str(folder), datetime.utcnow()))

    again = executor.restart()

    wait_until(lambda: again.task_state(1) == "finished", OUTCOME_WAIT, 0.1, "the re-attached task to finish")
    task = again.task(1)
    assert task["slurm_id"] == slurm_id and task["exit_code"] == 0
    assert (folder / "out.txt").read_text() == "once\n"
    listed = subprocess.run(["squeue", "-h", "-t", "all", "-n", name, "-o", "%i"], capture_output=True, text=True,
                            timeout=20).stdout.split()
    assert listed == [slurm_id], "the job was submitted a second time"


def test_a_down_controller_makes_the_executor_unhealthy_and_it_takes_no_work_until_it_is_back(
        slurm, cluster, tmp_path):
    server = cluster.server({"example": {}})
    executor = slurm_executor(cluster, "example", server, read_only_paths=tmp_path)  # gates
    wait_until(lambda: listing(server).get(executor.url, {}).get("state") == "alive", 20, 0.1, "registration")
    gate = tmp_path / "gate"
    in_slurm = submit(server, f"until [ -e {gate} ]; do sleep 0.1; done\necho survived > out.txt")
    wait_until(lambda: job(server, in_slurm)["status"] == "Running", OUTCOME_WAIT, 0.1, "the first job to run")

    stop_controller()
    gate.touch()  # it ends while nobody can ask Slurm about it
    try:
        wait_until(lambda: executor.health().status_code == 503, 30, 0.2, "the executor to say it is unhealthy")
        answer = executor.health().json()
        assert answer["status"] == "unhealthy" and "Slurm controller" in answer["reason"]
        refused = requests.post(f"{executor.url}/submit", data={"job_id": "7", "job_uid": "direct", "attempt": "1"},
                                files=[("file", ("run.sh", b"true\n"))], timeout=10)
        assert refused.status_code == 503 and "Slurm controller" in refused.json()["description"]
        wait_until(lambda: listing(server)[executor.url]["state"] == "draining", 30, 0.2,
                   "the server to see the executor take no work")
        job_id = submit(server, "echo later > out.txt")
        assert job(server, job_id)["status"] == "Queued"
    finally:
        start_controller()

    wait_until(lambda: executor.health().status_code == 200, 30, 0.2, "the executor to be healthy again")
    for ended in (in_slurm, job_id):
        assert wait_for_outcome(server, ended, OUTCOME_WAIT) == 200
        assert job(server, ended)["attempts"] == 1
    assert results(server, in_slurm).read("out.txt") == b"survived\n"


def test_an_executor_without_sbatch_says_it_is_unhealthy_and_refuses_jobs(cluster, tmp_path):
    # No Slurm fixture: this is what a login node without Slurm's tools looks like (it has the
    # tools that wrap a job: prlimit and bwrap).
    tools = tmp_path / "bin"
    tools.mkdir()
    for program in ("prlimit", "bwrap"):
        if shutil.which(program):
            (tools / program).symlink_to(shutil.which(program))
    executor = cluster.executor("example", backend="slurm", start=False, env={"PATH": str(tools)})
    executor.start(wait=False)

    wait_until(lambda: executor.process.poll() is None and _answers(executor), 30, 0.1, "the executor to answer")
    answer = executor.health()
    assert answer.status_code == 503 and answer.json()["status"] == "unhealthy"
    assert "sbatch is not installed" in answer.json()["reason"]
    refused = requests.post(f"{executor.url}/submit", data={"job_id": "7", "job_uid": "direct", "attempt": "1"},
                            files=[("file", ("run.sh", b"true\n"))], timeout=10)
    assert refused.status_code == 503 and "sbatch is not installed" in refused.json()["description"]


def _answers(executor: Node) -> bool:
    try:
        return executor.health().json()["status"] != "unavailable"
    except requests.RequestException:
        return False
