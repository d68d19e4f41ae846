"""The `orchestrator` command as a subprocess against a real server and executor: submit (and wait,
and download), status, download, cancel, its exit codes and one-sentence errors; list, logs -f and
watch once their endpoints are served; and once in a real terminal (tmux) for the live display."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import uuid

import pytest

from tests.harness import (ROOT, free_port, job_folder, let_go, needs, orchestrator, orchestrator_started, script,
                           wait_until, waiting_for_flag)

#: ANSI escape: output to a pipe must have none (no live display).
ESCAPE = "\x1b["


@pytest.fixture(scope="module")
def server(module_cluster):
    executor = module_cluster.executor("example", slots=4)
    return module_cluster.server({"example": {"clients": executor.url, "runs_per_user": 4}})


@pytest.fixture(scope="module")
def executor_folder(module_cluster, server):
    """Where the executor of `server` runs its jobs (for `let_go`)."""
    return next(node.folder for node in module_cluster.nodes if node.kind == "executor")


def job_files(folder, body: str, **extra: bytes) -> list[str]:
    """run.sh with `body` (and `extra` files) written into `folder`: their paths, for the command line."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.sh").write_bytes(script(body))
    for name, content in extra.items():
        (folder / name).write_bytes(content)
    return [str(folder / name) for name in ("run.sh", *extra)]


def submitted(server, files: list[str], user: int = 1) -> str:
    """Submit without waiting; the job's id."""
    done = orchestrator(server, "submit", *files, "--service", "example", "--user", str(user), "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["id"])


def one_sentence(stderr: str) -> str:
    """The command's error: one line, no traceback."""
    assert "Traceback" not in stderr and stderr.count("\n") == 1, stderr
    return stderr.strip()


def test_submit_wait_shows_each_state_downloads_the_results_and_exits_0(server, tmp_path):
    files = job_files(tmp_path / "job", "sleep 0.5\ncat input.txt > out.txt", **{"input.txt": b"hello\n"})

    done = orchestrator(server, "submit", *files, "--service", "example", "--user", "1", "--wait",
                        "-o", str(tmp_path / "results"), "--poll", "0.1")

    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and ESCAPE not in done.stdout
    lines = done.stdout.splitlines()
    assert lines[0].startswith("job ") and ": Queued" in lines[0], lines
    assert all(line != after for line, after in zip(lines, lines[1:])), lines  # each change once
    assert any(": Running on http://" in line for line in lines), lines
    assert lines[-2].endswith(": Completed") and lines[-1].startswith("results of job "), lines
    assert (tmp_path / "results" / "out.txt").read_text() == "hello\n"


def test_a_job_that_fails_exits_1_with_its_reason(server, tmp_path):
    done = orchestrator(server, "submit", *job_files(tmp_path, "echo broken >&2\nexit 3"), "--service", "example",
                        "--user", "2", "--wait", "--poll", "0.1")

    assert done.returncode == 1, done.stdout + done.stderr
    assert ": Failed" in done.stdout.splitlines()[-1] and "exit code 3" in done.stdout.splitlines()[-1]


def test_status_and_download_of_a_completed_job(server, tmp_path):
    job_id = submitted(server, job_files(tmp_path, "echo done > out.txt"))
    wait_until(lambda: orchestrator(server, "status", job_id).stdout.strip().endswith("Completed"), 20, 0.2,
               "the job to complete")

    status = orchestrator(server, "status", job_id, "--json")
    fetched = orchestrator(server, "download", job_id, "-o", str(tmp_path / "got"))

    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "Completed"
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "got" / "out.txt").read_text() == "done\n"


def test_cancel_ends_a_running_job_which_then_exits_1_and_has_no_results(server, tmp_path):
    job_id = submitted(server, job_files(tmp_path, "sleep 60"), user=3)

    cancelled = orchestrator(server, "cancel", job_id)
    status = orchestrator(server, "status", job_id)
    fetched = orchestrator(server, "download", job_id, "-o", str(tmp_path / "got"))
    again = orchestrator(server, "cancel", job_id)

    assert cancelled.returncode == 0 and cancelled.stdout.startswith(f"job {job_id}: Cancelled"), cancelled
    assert status.returncode == 1 and ": Cancelled" in status.stdout
    assert fetched.returncode == 2 and "no results: it is Cancelled" in one_sentence(fetched.stderr)
    assert again.returncode == 2 and "only a job that has not ended can be cancelled" in one_sentence(again.stderr)


def test_refusals_and_a_server_that_is_not_there_exit_2_with_one_sentence(server, tmp_path):
    unknown = orchestrator(server, "status", "999999")
    no_service = orchestrator(server, "submit", *job_files(tmp_path, "true"), "--service", "nowhere", "--user", "1")
    missing_file = orchestrator(server, "submit", str(tmp_path / "absent.sh"), "--service", "example", "--user", "1")
    usage = orchestrator(server, "submit", *job_files(tmp_path, "true"), "--user", "1")
    nobody = orchestrator(f"http://127.0.0.1:{free_port()}", "status", "1")

    assert unknown.returncode == 2 and one_sentence(unknown.stderr) == "orchestrator: there is no job 999999."
    assert no_service.returncode == 2 and "nowhere" in one_sentence(no_service.stderr)
    assert missing_file.returncode == 2 and "cannot read" in one_sentence(missing_file.stderr)
    assert usage.returncode == 2 and "--service" in one_sentence(usage.stderr)
    assert nobody.returncode == 2 and "cannot reach the orchestrator" in one_sentence(nobody.stderr)


def test_list_pages_through_a_users_jobs_newest_first(server, tmp_path):
    ids = [submitted(server, job_files(tmp_path / str(n), "true"), user=77) for n in range(3)]

    listed = orchestrator(server, "list", "--user", "77", "--json")
    limited = orchestrator(server, "list", "--user", "77", "--limit", "2")

    assert listed.returncode == 0, listed.stderr
    assert [str(json.loads(line)["id"]) for line in listed.stdout.splitlines()] == ids[::-1]
    assert limited.returncode == 0 and len(limited.stdout.splitlines()) == 2


def test_logs_follow_prints_the_whole_log_of_a_running_job_then_exits_with_its_outcome(server, tmp_path):
    job_id = submitted(server, job_files(tmp_path, "for i in 1 2 3 4 5; do echo line $i; sleep 0.3; done"), user=4)
    wait_until(lambda: ": Running" in orchestrator(server, "status", job_id).stdout, 20, 0.1, "the job to run")

    followed = orchestrator(server, "logs", job_id, "-f", "--poll", "0.1")

    assert followed.returncode == 0, followed.stderr
    assert followed.stdout == "".join(f"line {i}\n" for i in range(1, 6))


#: 3 MiB of numbered lines: more than the 1 MiB one answer of GET /jobs/{id}/log holds.
BIG_LOG = "seq 1 1000000 | head -c 3145728"


def big_log() -> bytes:
    return b"".join(b"%d\n" % n for n in range(1, 1000001))[:3 << 20]


def test_logs_of_a_log_longer_than_one_answer_print_all_of_it_running_and_ended(server, executor_folder, tmp_path):
    token = uuid.uuid4().hex
    job_id = submitted(server, job_files(tmp_path, waiting_for_flag(token, before=BIG_LOG, after="echo end")), user=8)
    last_line = big_log().rsplit(b"\n", 1)[1].decode()
    wait_until(lambda: orchestrator(server, "logs", job_id, "--tail", "1").stdout == last_line, 20, 0.1,
               "the job to write its 3 MiB")

    running = orchestrator(server, "logs", job_id)  # NOTE: from the executor's live log
    follower = orchestrator_started(server, "logs", job_id, "-f", "--poll", "0.1")
    let_go(executor_folder, token)
    followed, follow_err = follower.communicate(timeout=60)
    ended = orchestrator(server, "logs", job_id)  # NOTE: from the result zip, on the server
    ended_followed = orchestrator(server, "logs", job_id, "-f")

    whole = big_log() + b"end\n"
    assert running.returncode == 0 and running.stdout.encode() == big_log(), (len(running.stdout), running.stderr)
    assert follower.returncode == 0 and followed == whole, (len(followed), follow_err)
    assert ended.returncode == 0 and ended.stdout.encode() == whole, len(ended.stdout)
    assert ended_followed.returncode == 0 and ended_followed.stdout.encode() == whole, len(ended_followed.stdout)


def test_watch_once_shows_the_services_and_the_jobs_not_ended(server, tmp_path):
    job_id = submitted(server, job_files(tmp_path, "sleep 60"), user=5)

    shown = orchestrator(server, "watch", "--once")
    orchestrator(server, "cancel", job_id)

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].startswith("example\t")
    assert any(line.startswith(f"{job_id}\texample\t5\t") for line in shown.stdout.splitlines())


@needs("tmux", "a real terminal for the live display")
def test_in_a_terminal_submit_wait_draws_a_progress_bar_and_a_live_status_line(server, tmp_path):
    files = job_files(tmp_path / "job", "sleep 1.5\necho ok > out.txt", **{"big.bin": b"x" * (4 << 20)})
    session = f"orchestrator-cli-{uuid.uuid4().hex[:8]}"
    command = shlex.join([sys.executable, "-m", "orchestrator_client", "submit", *files, "--service", "example",
                          "--user", "6", "--wait", "--poll", "0.1", "-o", str(tmp_path / "results")])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "40",
                    "-e", f"ORCHESTRATOR_URL={server.url}", "-e", f"PYTHONPATH={ROOT}",
                    f"{command}; echo EXIT=$?; sleep 600"], cwd=ROOT, check=True)
    screens: list[str] = []
    try:
        def ended() -> bool:
            screens.append(subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                                          text=True).stdout)
            return "EXIT=" in screens[-1]
        wait_until(ended, 30, 0.05, "the command to end in its terminal")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)

    final = screens[-1]
    assert "EXIT=0" in final, final
    assert "uploading 2 file(s)" in final and "━" in final and "4.2/4.2 MB" in final, final
    assert any(": Running on http://" in screen for screen in screens), screens[-1]
    assert "Running → Completed" in final and (tmp_path / "results" / "out.txt").read_text() == "ok\n"


def test_submit_wait_rides_out_a_server_restart_and_prints_the_ended_job_as_json(cluster, tmp_path):
    executor = cluster.executor("example", slots=1)
    server = cluster.server({"example": {"clients": executor.url}})
    token = uuid.uuid4().hex
    files = job_files(tmp_path, waiting_for_flag(token, after="echo ok > out.txt"))
    waiter = orchestrator_started(server, "submit", *files, "--service", "example", "--user", "1", "--wait", "--json",
                                  "--poll", "0.1", "-o", str(tmp_path / "results"))
    job_folder(executor.folder, token)  # NOTE: running: the waiter polls it every 0.1 s

    server.stop()  # NOTE: the waiter's polls are refused while it is down, and while it starts again
    let_go(executor.folder, token)
    server.restart()
    out, err = waiter.communicate(timeout=60)

    assert waiter.returncode == 0, err
    ended = json.loads(out)  # NOTE: the whole of stdout is one JSON document
    assert ended["status"] == "Completed" and (tmp_path / "results" / "out.txt").read_text() == "ok\n"
