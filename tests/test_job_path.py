"""One job's whole way over HTTP: upload → queue → executor → results → download, and failures."""
from __future__ import annotations

import io
import os
import zipfile

import requests

from tests.harness import ROOT, job, results, script, submit, upload, wait_for_outcome, wait_until


def example_cluster(cluster, **service):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url, **service}})
    return server, executor


def test_nodes_with_relative_data_folders_as_make_run_starts_them_run_the_readme_example(cluster, tmp_path):
    executor = cluster.executor("example", start=False, data_dir="var/executor-{service}-{port}")
    server = cluster.server({"example": {"clients": executor.url}}, start=False, data_dir="var/server")
    for node in (executor, server):  # started in tmp_path: relative paths are taken from there
        node.cwd, node.args[0] = tmp_path, str(ROOT / node.args[0])
        node.start()
    files = {name: (ROOT / "example" / name).read_bytes() for name in ("run.sh", "input.pdb")}

    job_id = upload(server, files, user_id=1, service="example").json()["id"]

    assert wait_for_outcome(server, job_id) == 200, job(server, job_id)
    assert (tmp_path / "var" / f"executor-example-{executor.port}" / "tasks").is_dir()


def test_the_readme_example_round_trips_to_a_zip_with_the_jobs_own_output(cluster):
    server, _ = example_cluster(cluster)
    files = {name: (ROOT / "example" / name).read_bytes() for name in ("run.sh", "input.pdb")}

    response = upload(server, files, user_id=1, service="example")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "Queued" and body["user_id"] == 1 and body["service"] == "example"
    assert wait_for_outcome(server, body["id"]) == 200
    download = requests.get(f"{server.url}/download/{body['id']}", timeout=10)
    assert download.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    assert archive.testzip() is None
    output = archive.read("output.txt").decode()
    assert "input.pdb: lines=" in output and "atoms=10" in output and "Computation complete!" in output
    assert archive.read("input.pdb") == files["input.pdb"]
    record = job(server, body["id"])
    assert record["status"] == "Completed" and record["exit_code"] == 0 and record["attempts"] == 1
    assert record["executor"] == _.url
    assert record["created_at"] <= record["started_at"] <= record["finished_at"]


def test_each_job_gets_its_own_results(cluster):
    server, _ = example_cluster(cluster)
    ids = {n: submit(server, f"echo job-{n} > mine.txt", user_id=n) for n in range(1, 6)}

    for n, job_id in ids.items():
        assert wait_for_outcome(server, job_id) == 200
        assert results(server, job_id).read("mine.txt") == f"job-{n}\n".encode()


def test_a_failing_script_answers_204_with_its_reason_exit_code_and_stderr(cluster):
    server, _ = example_cluster(cluster)
    job_id = submit(server, "echo 'something broke' >&2\nexit 3")

    assert wait_for_outcome(server, job_id) == 204
    assert requests.get(f"{server.url}/download/{job_id}", timeout=5).status_code == 204
    record = job(server, job_id)
    assert record["status"] == "Failed"
    assert record["exit_code"] == 3
    assert "exited with code 3" in record["reason"]
    assert "something broke" in record["stderr_tail"]


def test_a_job_waits_with_202_and_shows_running_while_its_script_runs(cluster):
    server, _ = example_cluster(cluster)
    job_id = submit(server, "sleep 1.5")

    assert requests.head(f"{server.url}/download/{job_id}", timeout=5).status_code == 202
    wait_until(lambda: job(server, job_id)["status"] == "Running", 10, message="the job to be Running")
    assert requests.head(f"{server.url}/download/{job_id}", timeout=5).status_code == 202
    assert wait_for_outcome(server, job_id) == 200


def test_unknown_and_malformed_job_ids_are_404_and_400(cluster):
    server, _ = example_cluster(cluster)
    for method in (requests.get, requests.head):
        assert method(f"{server.url}/download/999999", timeout=5).status_code == 404
        assert method(f"{server.url}/download/abc", timeout=5).status_code == 400
        assert method(f"{server.url}/download/-1", timeout=5).status_code == 400
        assert method(f"{server.url}/download/99999999999999999999999", timeout=5).status_code == 400
    assert requests.get(f"{server.url}/jobs/12", timeout=5).status_code == 404
    assert requests.get(f"{server.url}/jobs/0", timeout=5).status_code == 400


def test_ping_and_health_answer(cluster):
    server, executor = example_cluster(cluster)
    assert requests.get(f"{server.url}/", timeout=5).json() == {"message": "pong"}
    health = server.health()
    assert health.status_code == 200
    assert health.json()["status"] == "ok" and health.json()["database"] == "ok"
    node = executor.health().json()
    assert node["slots"] == 4 and node["free"] == 4


def test_a_path_in_a_file_name_is_reduced_to_its_base_name(cluster):
    server, _ = example_cluster(cluster)
    response = upload(server, {"run.sh": script("test -f passwd"), "../../etc/passwd": b"x"})
    assert response.status_code == 200
    job_folders = os.listdir(server.folder / "data" / "jobs")
    assert len(job_folders) == 1
    assert sorted(os.listdir(server.folder / "data" / "jobs" / job_folders[0])) == ["passwd", "run.sh"]
