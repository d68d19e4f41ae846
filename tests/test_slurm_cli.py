"""Slurm's CLI output parsed, its states mapped, and the Slurm keys of [client]; no Slurm needed.

The sample lines are what Slurm 22.05 printed on the local test cluster (docs/slurm.md)."""
from __future__ import annotations

import re
import subprocess

import pytest

from actors.node.backends import slurm_cli
from actors.node.backends.slurm_cli import SlurmJob
from conf.settings import ConfigError, load_client_config

SCONTROL = ("JobId=12 JobName=orch-ab12-1 UserId=root(0) GroupId=root(0) MCS_label=N/A JobState=TIMEOUT "
            "Reason=TimeLimit Dependency=(null) ExitCode=0:15 RunTime=00:01:02 WorkDir=/srv/jobs/with space "
            "StdErr=/srv/jobs/with space/stderr.log")
JOBCOMP = [
    "JobId=3 UserId=root(0) GroupId=root(0) Name=orch-old-1 JobState=COMPLETED Partition=debug "
    "TimeLimit=UNLIMITED NodeList=vm ExitCode=0:0 \n",
    "JobId=4 UserId=root(0) GroupId=root(0) Name=orch-x-2 JobState=FAILED Partition=debug ExitCode=3:0 \n",
    "JobId=3 UserId=root(0) GroupId=root(0) Name=orch-new-1 JobState=CANCELLED Partition=debug ExitCode=0:0 \n",
]


@pytest.mark.parametrize("state, phase", [
    ("PENDING", "pending"), ("CONFIGURING", "pending"), ("RUNNING", "running"), ("COMPLETING", "running"),
    ("COMPLETED", "completed"), ("FAILED", "failed"), ("OUT_OF_MEMORY", "failed"), ("TIMEOUT", "failed"),
    ("CANCELLED", "cancelled"), ("CANCELLED by 0", "cancelled"), ("NODE_FAIL", "lost"), ("PREEMPTED", "lost"),
    ("BOOT_FAIL", "lost"), ("SOMETHING_NEW", "pending"),
])
def test_slurm_states_map_onto_the_task_phases(state, phase):
    assert slurm_cli.phase(state) == phase


def test_squeue_lines_give_state_reason_and_the_exit_code_from_the_raw_wait_status():
    text = ("7|FAILED|768|NonZeroExitCode          \n"
            "8|TIMEOUT|15|TimeLimit   \n"
            "9|PENDING|0|(ReqNodeNotAvail, Reserved for maintenance)   \n"
            "10|COMPLETED|0|None\n"
            "garbage\n")
    found = slurm_cli.parse_squeue(text)
    assert found["7"] == SlurmJob("7", "FAILED", "NonZeroExitCode", 3, 0)
    assert found["8"] == SlurmJob("8", "TIMEOUT", "TimeLimit", 0, 15)
    assert found["9"] == SlurmJob("9", "PENDING", "(ReqNodeNotAvail, Reserved for maintenance)", None, None)
    assert found["10"].exit_status == 0 and set(found) == {"7", "8", "9", "10"}


def test_scontrol_lines_keep_values_with_spaces_and_split_the_exit_code():
    record = slurm_cli.parse_key_values(SCONTROL)
    assert record["WorkDir"] == "/srv/jobs/with space" and record["JobName"] == "orch-ab12-1"
    assert slurm_cli.status_from_record(record) == SlurmJob("12", "TIMEOUT", "TimeLimit", 0, 15)
    assert slurm_cli.status_from_record({"JobName": "x"}) is None


def test_the_jobcomp_log_gives_final_states_by_id_and_ids_by_name_the_latest_line_winning():
    found = slurm_cli.parse_jobcomp(JOBCOMP, {"3", "4", "99"})
    assert found["3"] == SlurmJob("3", "CANCELLED", "", 0, 0)  # ids restart after a wiped cluster
    assert found["4"].state == "FAILED" and found["4"].exit_status == 3 and "99" not in found
    assert slurm_cli.parse_jobcomp_names(JOBCOMP, {"orch-x-2", "orch-none-1"}) == {"orch-x-2": "4"}


def test_sbatch_parsable_output_and_exit_codes_parse():
    assert slurm_cli.parse_sbatch("42\n") == "42"
    assert slurm_cli.parse_sbatch("42;cluster\n") == "42"
    with pytest.raises(slurm_cli.SlurmUnavailable):
        slurm_cli.parse_sbatch("")
    assert slurm_cli.parse_exit_code("3:0") == (3, 0)
    assert slurm_cli.parse_exit_code("") == (None, None)


@pytest.mark.parametrize("status, code", [
    (SlurmJob("1", "COMPLETED", "None", 0, 0), 0),
    (SlurmJob("1", "FAILED", "NonZeroExitCode", 3, 0), 3),
    (SlurmJob("1", "TIMEOUT", "TimeLimit", 0, 15), 143),
    (SlurmJob("1", "OUT_OF_MEMORY", "OutOfMemory", 0, 0), 1),  # a failure is never reported as exit 0
    (SlurmJob("1", "FAILED", "JobLaunchFailure", None, None), 1),
])
def test_a_failed_job_always_gets_a_non_zero_exit_code(status, code):
    assert slurm_cli.exit_code(status) == code


def test_slurms_verdict_names_the_job_state_reason_and_exit_code():
    assert slurm_cli.describe(SlurmJob("8", "TIMEOUT", "TimeLimit", 0, 15)) == \
        "slurm: job 8 TIMEOUT (TimeLimit), ExitCode 0:15"
    assert slurm_cli.describe(SlurmJob("9", "CANCELLED", "None", None, None)) == "slurm: job 9 CANCELLED"


def test_the_sbatch_call_runs_the_wrapped_command_in_the_folder_with_the_local_backends_log_names():
    args = slurm_cli.sbatch_command("/shared/50%/t1", "orch-u-1", ["prlimit", "--core=0:0", "bash", "run.sh"],
                                    "short", ("--time=5", "--mem=1G"), ("PATH", "HOME"))
    assert args == ["sbatch", "--parsable", "--no-requeue", "--chdir=/shared/50%/t1", "--job-name=orch-u-1",
                    "--output=/shared/50%%/t1/stdout.log", "--error=/shared/50%%/t1/stderr.log",
                    "--partition=short", "--export=PATH,HOME", "--time=5", "--mem=1G",
                    "--wrap=exec prlimit --core=0:0 bash run.sh"]
    assert "--partition" not in " ".join(slurm_cli.sbatch_command("/d", "n", ["bash", "run.sh"]))


def test_a_sandboxed_slurm_job_fails_saying_so_where_the_compute_node_lacks_bubblewrap(tmp_path):
    wrap = slurm_cli.sbatch_command("/d", "n", ["/no/such/bwrap", "--", "bash", "run.sh"],
                                    needs="/no/such/bwrap")[-1].removeprefix("--wrap=")
    done = subprocess.run(["sh", "-c", wrap], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 126 and "/no/such/bwrap is missing" in done.stderr


def test_a_tes_task_on_a_compute_node_without_the_executors_python_fails_with_a_reason_saying_so(tmp_path):
    wrap = slurm_cli.sbatch_command("/d", "n", ["/no/such/python", "-I", "-c", "..."],
                                    stage=(("/no/such/python", "/bin/sh"), "tes/reason.txt"))[-1].removeprefix("--wrap=")
    done = subprocess.run(["sh", "-c", wrap], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 126
    assert (tmp_path / "tes" / "reason.txt").read_text().startswith(
        "orchestrator: TES tasks on Slurm need the executor's Python and code at the same paths on the compute nodes: "
        "one of /no/such/python, /bin/sh is missing on ")


def client(tmp_path, body: str, **options):
    path = tmp_path / "client.ini"
    path.write_text(f"[client]\n{body}\n")
    return load_client_config(str(path), {}, **options)


def test_backend_slurm_takes_its_slots_from_max_jobs_and_splits_sbatch_args(tmp_path):
    config = client(tmp_path, "backend = slurm\nslots = 2\nmax_jobs = 40\nsbatch_args = --time=60 --comment='a b'\n"
                              "partition = short\npoll_interval = 0.5\nslurm_workdir = /shared/{service}")
    assert config.slots == 40 and config.sbatch_args == ("--time=60", "--comment=a b")
    assert config.partition == "short" and config.poll_interval == 0.5
    assert config.tasks_path == "/shared/example"
    local = client(tmp_path, "slots = 2\nmax_jobs = 40")
    assert local.backend == "local" and local.slots == 2 and local.tasks_path.endswith("/tasks")
    assert client(tmp_path, "backend = local", backend="slurm").backend == "slurm"


@pytest.mark.parametrize("body, options, key", [
    ("backend = pbs", {}, "[client] backend"),
    ("", {"backend": "pbs"}, "--backend"),
    ("max_jobs = 0", {}, "[client] max_jobs"),
    ("poll_interval = -1", {}, "[client] poll_interval"),
    ("sbatch_args = --comment='unclosed", {}, "[client] sbatch_args"),
    ("sbatch_args = --time=5 --output=x.log", {}, "[client] sbatch_args"),
    ("sbatch_args = -J name", {}, "[client] sbatch_args"),
    ("partition = a b", {}, "[client] partition"),
    ("slurm_workdir = /x/{nope}", {}, "[client] slurm_workdir"),
])
def test_bad_slurm_keys_stop_start_up_naming_the_key(tmp_path, body, options, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        client(tmp_path, body, **options)
