"""The trust boundary: portal tokens, the cluster secret, limits, and what a refusal leaves behind."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import falcon.testing
import pytest
import requests

from tests.harness import ROOT, job, leftovers, processes_with_marker, script, small_disk, wait_until, write_ini
from tests.harness import bearer as auth
from web.auth import ServerAuth
from web.common import new_app

HADDOCK = "haddock-token-0123456789abcdef"
PRODIGY = "prodigy-token-0123456789abcdef"
SECRET = "cluster-secret-0123456789abcdef"


def post(server, token: str | None, files: dict[str, bytes], user_id: int = 1, **extra) -> requests.Response:
    return requests.post(f"{server.url}/upload", headers=auth(token), timeout=30,
                         data={"user_id": str(user_id), "service": "example", **extra},
                         files=[("file", (name, body)) for name, body in files.items()])


@pytest.fixture
def guarded(cluster):
    """A server with two portals and an executor that share a cluster secret."""
    executor = cluster.executor("example", cluster_secret=SECRET)
    server = cluster.server({"example": {"clients": executor.url}}, cluster_secret=SECRET,
                            tokens={"haddock": HADDOCK, "prodigy": PRODIGY})
    return server, executor


def test_jobs_run_end_to_end_across_the_secret_executor_link(guarded):
    server, executor = guarded
    job_id = post(server, PRODIGY, {"run.sh": script("echo linked > out.txt")}).json()["id"]

    wait_until(lambda: requests.head(f"{server.url}/download/{job_id}", headers=auth(PRODIGY),
                                     timeout=5).status_code == 200, 30, 0.05, "the job to complete")


@pytest.mark.parametrize("settings, why", [
    ({"tokens": {"haddock": HADDOCK}}, "while [tokens] has portals"),
    ({"host": "0.0.0.0", "allow_anonymous": "true"}, "while host 0.0.0.0 is not a loopback address"),
])
def test_a_server_with_portals_or_on_a_public_address_refuses_to_start_without_a_cluster_secret(cluster, settings,
                                                                                                 why):
    server = cluster.server({"example": {"clients": "http://127.0.0.1:9"}}, start=False, **settings)

    server.start(wait=False)

    assert server.process.wait(60) == 2
    assert f"run_server.py: [server] cluster_secret is empty {why}; set one" in server.log()
    assert processes_with_marker(server.marker) == []


def test_internal_calls_pass_nobody_when_portals_are_configured_without_a_cluster_secret():
    # The loader refuses this configuration; the middleware does not rely on it.
    app = new_app([ServerAuth((("haddock", HADDOCK),), "")], max_parts=8)
    app.add_route("/internal/events", object())
    client = falcon.testing.TestClient(app)
    for headers in ({}, auth(HADDOCK), auth(SECRET)):
        assert client.simulate_post("/internal/events", json={}, headers=headers).status_code == 401


def test_health_shows_the_actor_processes_only_to_the_cluster_secret(guarded):
    server, _ = guarded
    for headers in ({}, auth(HADDOCK), auth("wrong-secret-wrong-secret")):
        health = requests.get(f"{server.url}/health", headers=headers, timeout=5)
        assert health.status_code == 200 and health.json() == {"status": "ok", "database": "ok", "actors": "ok"}
    operator = requests.get(f"{server.url}/health", headers=auth(SECRET), timeout=5).json()
    assert operator["status"] == "ok" and {"supervisor", "queue", "quota"} <= set(operator["actor_processes"])
    assert all(isinstance(pid, int) and pid > 0 for pid in operator["actor_processes"].values())


def run_briefly(args: list[str], config) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args, "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.processes
def test_a_server_on_a_public_address_without_tokens_refuses_to_start(tmp_path):
    config = tmp_path / "server.ini"
    write_ini(config, {"server": {"host": "0.0.0.0", "data_dir": tmp_path / "data"},
                       "service.example": {"clients": "http://127.0.0.1:9"}})
    result = run_briefly(["run_server.py"], config)
    assert result.returncode == 2
    assert "not a loopback address and [tokens] is empty" in result.stderr
    assert "allow_anonymous = true" in result.stderr


def test_allow_anonymous_serves_on_a_public_address_with_a_warning(cluster):
    server = cluster.server({"example": {"clients": "http://127.0.0.1:9"}}, host="0.0.0.0", allow_anonymous="true",
                            cluster_secret=SECRET)
    assert requests.get(f"{server.url}/jobs/1", timeout=5).status_code == 404  # no token needed
    assert "serving anonymously on 0.0.0.0" in server.log()


@pytest.mark.processes
def test_an_executor_on_a_public_address_without_a_secret_refuses_to_start(tmp_path):
    config = tmp_path / "client.ini"
    write_ini(config, {"client": {"host": "0.0.0.0", "data_dir": tmp_path / "data"}})
    result = run_briefly(["run_client.py", "--service", "example"], config)
    assert result.returncode == 2 and "cluster_secret is empty" in result.stderr


# --- limits ---------------------------------------------------------------------------------------

@pytest.fixture
def limited(cluster):
    # No executor answers: jobs stay queued, so the queue limit can be reached.
    return cluster.server({"example": {"clients": "http://127.0.0.1:9", "max_queued_per_user": 2}},
                          max_upload_mb=1, max_files=3)


def test_an_upload_over_max_upload_mb_is_413_and_stores_nothing(limited):
    response = post(limited, None, {"run.sh": script("true"), "big.bin": os.urandom(2 * 1024 * 1024)})
    assert response.status_code == 413
    assert "larger than" in response.json()["description"]
    assert leftovers(limited) == []


def test_a_client_that_sends_headers_and_stalls_holds_no_worker(cluster):
    server = cluster.server({"example": {"clients": "http://127.0.0.1:9"}}, threads=1)
    stalled = []
    for _ in range(6):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 100000\r\n\r\n--b\r\n")
        stalled.append(sock)
    try:
        started = time.monotonic()
        assert requests.get(f"{server.url}/jobs/1", timeout=5).status_code == 404
        assert time.monotonic() - started < 2
    finally:
        for sock in stalled:
            sock.close()


@pytest.fixture
def one_mb_disk(tmp_path):
    with small_disk(tmp_path / "small-disk", 1) as folder:
        yield folder


def test_a_full_disk_answers_507_and_leaves_no_partial_job(cluster, one_mb_disk, tmp_path):
    server = cluster.server({"example": {"clients": "http://127.0.0.1:9"}}, data_dir=one_mb_disk,
                            database=tmp_path / "db.sqlite")
    response = requests.post(f"{server.url}/upload", timeout=30, data={"user_id": "1", "service": "example"},
                             files=[("file", ("run.sh", script("true"))), ("file", ("big", os.urandom(3 << 20)))])
    assert response.status_code == 507, response.text
    assert "disk is full" in response.json()["description"]
    assert [name for sub in ("jobs", "incoming") for name in os.listdir(one_mb_disk / sub)
            if (one_mb_disk / sub).exists()] == []
    ok = requests.post(f"{server.url}/upload", timeout=30, data={"user_id": "1", "service": "example"},
                       files=[("file", ("run.sh", script("true")))])
    assert ok.status_code == 200
    assert job(server, ok.json()["id"])["status"] == "Queued"
