"""Following a running job through the server: its logs (tail, offset), a file, a zip of its folder
so far, then the same from its results once it ended; POST /terminate; links out of the folder
refused; another portal's job unseen. Real server and executor processes, one pair for the module.
"""
from __future__ import annotations

import io
import zipfile

import pytest
import requests

from tests.harness import bearer, job, let_go, submit, wait_for_outcome, wait_until, waiting_for_flag

SECRET = "follow-secret-0123456789abcdef"
ONE, OTHER = "follow-portal-one-0123456789", "follow-portal-two-0123456789"


@pytest.fixture(scope="module")
def stack(module_cluster):
    executor = module_cluster.executor("example", cluster_secret=SECRET, slots=4)
    # NOTE: `idle` has no executor: its jobs stay Queued.
    server = module_cluster.server({"example": {"clients": executor.url, "runs_per_user": 4}, "idle": {}},
                                   cluster_secret=SECRET, tokens={"one": ONE, "other": OTHER})
    return server, executor


def get(server, path: str, token: str = ONE, **params) -> requests.Response:
    return requests.get(f"{server.url}{path}", params=params, headers=bearer(token), timeout=30)


def running(server, executor, token: str, before: str, after: str = "") -> str:
    job_id = submit(server, waiting_for_flag(token, before, after), token=ONE)
    wait_until(lambda: job(server, job_id, ONE)["status"] == "Running", 20, 0.02, "the job to run")
    return job_id


def tasks_root(executor):
    return executor.folder / "data" / "tasks"


def test_a_running_jobs_logs_files_and_folder_are_served_then_its_results(stack):
    server, executor = stack
    job_id = running(server, executor, "follow-main",
                     # NOTE: line2 last: once it is in the log, everything before it was done
                     "echo err1 >&2\necho so-far > partial.txt\nmkdir sub\necho deep > sub/deep.txt\n"
                     "echo line1\necho line2", "echo after\necho done > final.txt")
    wait_until(lambda: get(server, f"/jobs/{job_id}/log", tail=5).text == "line1\nline2\n", 20, 0.02,
               "the job's first lines")

    tail = get(server, f"/jobs/{job_id}/log", tail=1)
    assert tail.status_code == 200 and tail.text == "line2\n"
    assert tail.headers["Content-Type"].startswith("text/plain") and tail.headers["X-Log-Size"] == "12"
    assert get(server, f"/jobs/{job_id}/log", stream="stderr").text == "err1\n"
    assert get(server, f"/jobs/{job_id}/log", offset=6).text == "line2\n"
    assert get(server, f"/jobs/{job_id}/files/partial.txt").content == b"so-far\n"
    assert get(server, f"/jobs/{job_id}/files/sub/deep.txt").content == b"deep\n"
    assert get(server, f"/jobs/{job_id}/files/final.txt").status_code == 404
    partial = get(server, f"/download_partial/{job_id}")
    assert partial.status_code == 200 and partial.headers["Content-Type"] == "application/zip"
    assert set(zipfile.ZipFile(io.BytesIO(partial.content)).namelist()) == {
        "run.sh", "stdout.log", "stderr.log", "partial.txt", "sub/deep.txt"}

    let_go(tasks_root(executor), "follow-main")  # a follower asks from where it stopped, and misses nothing
    follow = wait_until(lambda: (r := get(server, f"/jobs/{job_id}/log", offset=12)).text and r, 20, 0.05,
                        "the line written after the flag")
    assert follow.text == "after\n" and follow.headers["X-Log-Size"] == "18"
    assert wait_for_outcome(server, job_id, token=ONE) == 200

    # The executor forgets the task: what follows comes from the result zip on the server.
    number = next(t["id"] for t in executor.tasks() if t["state"] == "finished")  # the module's first job
    assert requests.delete(f"{executor.url}/jobs/{number}", headers=bearer(SECRET), timeout=10).status_code == 200
    assert get(server, f"/jobs/{job_id}/log", tail=2).text == "line2\nafter\n"
    assert get(server, f"/jobs/{job_id}/log", stream="stderr").text == "err1\n"
    assert get(server, f"/jobs/{job_id}/files/final.txt").content == b"done\n"
    assert "final.txt" in zipfile.ZipFile(io.BytesIO(get(server, f"/download_partial/{job_id}").content)).namelist()


def test_links_out_of_the_folder_and_names_outside_it_are_refused(stack):
    server, executor = stack
    job_id = running(server, executor, "follow-links", "ln -s /etc/passwd leak\nln -s /etc etc\nmkfifo pipe\necho ready")
    wait_until(lambda: get(server, f"/jobs/{job_id}/log").text == "ready\n", 20, 0.02, "the links to be made")

    for name in ("leak", "etc/passwd", "pipe"):
        answer = get(server, f"/jobs/{job_id}/files/{name}")
        assert answer.status_code == 403, (name, answer.text)
        assert "root:" not in answer.text
    for name in ("..%2F..%2Fexecutor.sqlite", "sub%2F..%2Frun.sh", "%2Fetc%2Fpasswd"):
        assert get(server, f"/jobs/{job_id}/files/{name}").status_code in (400, 404), name
    names = zipfile.ZipFile(io.BytesIO(get(server, f"/download_partial/{job_id}").content)).namelist()
    assert "leak" not in names and not any(n.startswith("etc/") for n in names)
    # The executor's own routes answer its server alone.
    assert requests.get(f"{executor.url}/jobs/1/files/run.sh", timeout=10).status_code == 401
    let_go(tasks_root(executor), "follow-links")
    assert wait_for_outcome(server, job_id, token=ONE) == 200


def test_terminate_is_cancel_and_other_portals_see_nothing(stack):
    server, executor = stack
    job_id = running(server, executor, "follow-terminate", "echo mine")

    for path in (f"/jobs/{job_id}/log", f"/jobs/{job_id}/files/run.sh", f"/download_partial/{job_id}"):
        assert get(server, path, token=OTHER).status_code == 404, path
    assert requests.post(f"{server.url}/terminate/{job_id}", headers=bearer(OTHER), timeout=10).status_code == 404

    stopped = requests.post(f"{server.url}/terminate/{job_id}", headers=bearer(ONE), timeout=10)
    assert stopped.status_code == 200 and stopped.json()["status"] == "Cancelled"
    again = requests.post(f"{server.url}/terminate/{job_id}", headers=bearer(ONE), timeout=10)
    assert again.status_code == 409
    assert job(server, job_id, ONE)["status"] == "Cancelled"


def test_a_job_not_started_answers_409_and_bad_queries_400(stack):
    server, _ = stack
    queued = submit(server, "echo never", service="idle", token=ONE)

    answer = get(server, f"/jobs/{queued}/log")
    assert answer.status_code == 409 and "Queued" in answer.json()["description"]
    assert get(server, f"/download_partial/{queued}").status_code == 409
    assert get(server, f"/jobs/{queued}/log", stream="stdin").status_code == 400
    assert get(server, f"/jobs/{queued}/log", offset="x").status_code == 400
    assert get(server, f"/jobs/{queued}/log", tail=-1).status_code == 400


def test_a_failed_jobs_log_comes_from_its_executor_which_keeps_its_folder(stack):
    server, _ = stack
    failed = submit(server, "echo oops >&2\nexit 3", token=ONE)
    assert wait_for_outcome(server, failed, token=ONE) == 204  # failed: no results were fetched

    answer = get(server, f"/jobs/{failed}/log", stream="stderr")
    assert answer.status_code == 200 and answer.text == "oops\n"
