"""The trust boundary: portal tokens, the cluster secret, limits, and what a refusal leaves behind."""
from __future__ import annotations

import os
import re
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


def test_every_call_but_ping_health_and_the_docs_needs_a_portal_token(guarded):
    server, _ = guarded
    for path in ("/", "/health", "/api-docs/openapi.json", "/swagger-ui/"):
        assert requests.get(f"{server.url}{path}", timeout=5).status_code == 200, path
    for method, path in (("GET", "/jobs/1"), ("GET", "/download/1"), ("HEAD", "/download/1"),
                         ("GET", "/executors"), ("POST", "/upload"), ("POST", "/jobs/1/cancel")):
        for headers in ({}, auth("wrong-token-wrong-token"), {"Authorization": HADDOCK}):
            response = requests.request(method, f"{server.url}{path}", headers=headers, timeout=5)
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert leftovers(server) == []


def test_a_portal_sees_only_the_jobs_it_submitted(guarded):
    server, _ = guarded
    response = post(server, HADDOCK, {"run.sh": script("echo mine > out.txt")})
    assert response.status_code == 200
    job_id = response.json()["id"]
    head = requests.head(f"{server.url}/download/{job_id}", headers=auth(HADDOCK), timeout=5)
    assert head.status_code in (200, 202)

    for path in (f"/download/{job_id}", f"/jobs/{job_id}"):
        theirs = requests.get(f"{server.url}{path}", headers=auth(PRODIGY), timeout=5)
        missing = requests.get(f"{server.url}{path.replace(str(job_id), '999')}", headers=auth(PRODIGY), timeout=5)
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json()["title"] == missing.json()["title"]
    assert requests.head(f"{server.url}/download/{job_id}", headers=auth(PRODIGY), timeout=5).status_code == 404
    cancel = requests.post(f"{server.url}/jobs/{job_id}/cancel", headers=auth(PRODIGY), timeout=5)
    assert cancel.status_code == 404 and requests.get(f"{server.url}/jobs/{job_id}", headers=auth(HADDOCK),
                                                      timeout=5).json()["status"] != "Cancelled"


def test_with_portal_tokens_job_ids_are_random_and_tell_a_portal_nothing_of_the_others(guarded):
    server, _ = guarded
    first = post(server, HADDOCK, {"run.sh": script("sleep 300")}).json()["id"]
    theirs = [post(server, PRODIGY, {"run.sh": script("true")}).json()["id"] for _ in range(5)]
    second = post(server, HADDOCK, {"run.sh": script("true")}).json()["id"]

    for job_id in [first, second, *theirs]:
        assert isinstance(job_id, str) and re.fullmatch("j[a-z2-7]{24}", job_id), job_id
    assert len({first, second, *theirs}) == 7
    # Every answer about a job names it so: status, download's 202, cancel.
    assert requests.get(f"{server.url}/jobs/{first}", headers=auth(HADDOCK), timeout=5).json()["id"] == first
    waiting = requests.get(f"{server.url}/download/{first}", headers=auth(HADDOCK), timeout=5)
    assert waiting.status_code == 202 and waiting.json()["id"] == first
    cancelled = requests.post(f"{server.url}/jobs/{first}/cancel", headers=auth(HADDOCK), timeout=5)
    assert cancelled.status_code == 200 and cancelled.json()["id"] == first


def test_with_portal_tokens_numbers_and_other_portals_ids_are_unknown_jobs_and_malformed_ids_400(guarded):
    server, _ = guarded
    mine = post(server, HADDOCK, {"run.sh": script("true")}).json()["id"]
    theirs = post(server, PRODIGY, {"run.sh": script("true")}).json()["id"]
    missing = "j" + "a" * 24

    for job_id in (1, 2, theirs, missing):  # 1 and 2 are the jobs' numbers inside the server
        for method, path in (("GET", f"/jobs/{job_id}"), ("GET", f"/download/{job_id}"),
                             ("HEAD", f"/download/{job_id}"), ("POST", f"/jobs/{job_id}/cancel")):
            response = requests.request(method, f"{server.url}{path}", headers=auth(HADDOCK), timeout=5)
            assert response.status_code == 404, (method, path)
            if method != "HEAD":
                assert response.json() == {"title": "Unknown job", "description": f"there is no job {job_id}."}
    assert requests.get(f"{server.url}/jobs/{theirs}", headers=auth(PRODIGY), timeout=5).json()["id"] == theirs
    for malformed in ("abc", "j" + "a" * 23, mine.upper(), "0", "-1"):
        response = requests.get(f"{server.url}/jobs/{malformed}", headers=auth(HADDOCK), timeout=5)
        assert response.status_code == 400, malformed
        assert "'j' followed by 24 characters from a-z and 2-7" in response.json()["description"]


def test_jobs_run_end_to_end_across_the_secret_executor_link(guarded):
    server, executor = guarded
    job_id = post(server, PRODIGY, {"run.sh": script("echo linked > out.txt")}).json()["id"]

    wait_until(lambda: requests.head(f"{server.url}/download/{job_id}", headers=auth(PRODIGY),
                                     timeout=5).status_code == 200, 30, 0.05, "the job to complete")


def test_the_executor_and_the_servers_internal_calls_refuse_anyone_without_the_cluster_secret(guarded):
    server, executor = guarded
    for method, path in (("GET", "/health"), ("POST", "/submit"), ("GET", "/retrieve/1"), ("GET", "/jobs/1"),
                         ("POST", "/jobs/1/kill"), ("DELETE", "/jobs/1")):
        assert requests.request(method, f"{executor.url}{path}", timeout=5).status_code == 401, path
        wrong = requests.request(method, f"{executor.url}{path}", headers=auth(HADDOCK), timeout=5)
        assert wrong.status_code == 401, path
    assert requests.get(f"{executor.url}/", timeout=5).status_code == 200
    for path in ("/internal/events", "/internal/executors"):
        assert requests.post(f"{server.url}{path}", json={}, headers=auth(HADDOCK), timeout=5).status_code == 401
        assert requests.post(f"{server.url}{path}", json={}, headers=auth(SECRET), timeout=5).status_code == 400


def test_a_stranger_can_neither_register_an_executor_nor_report_and_changes_nothing(guarded):
    server, executor = guarded
    job_id = post(server, HADDOCK, {"run.sh": script("sleep 300")}).json()["id"]
    wait_until(lambda: requests.get(f"{server.url}/jobs/{job_id}", headers=auth(HADDOCK), timeout=5)
               .json()["status"] == "Running", 20, 0.05, "the job to run")
    before = requests.get(f"{server.url}/jobs/{job_id}", headers=auth(HADDOCK), timeout=5).json()
    registration = {"service": "example", "url": "http://127.0.0.1:9", "slots": 64, "draining": False, "tasks": []}
    forged = {"event": "finished", "job_id": 1, "attempt": 1, "task_id": "1", "exit_code": 0}

    for headers in ({}, auth(HADDOCK), auth("wrong-secret-wrong-secret")):
        for path, body in (("/internal/executors", registration), ("/internal/events", forged)):
            response = requests.post(f"{server.url}{path}", json=body, headers=headers, timeout=5)
            assert response.status_code == 401, (path, headers)
            assert "cluster secret" in response.json()["description"]

    listing = requests.get(f"{server.url}/executors", headers=auth(SECRET), timeout=5).json()["executors"]
    assert [e["url"] for e in listing] == [executor.url]
    assert requests.get(f"{server.url}/jobs/{job_id}", headers=auth(HADDOCK), timeout=5).json() == before


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


def test_with_portal_tokens_the_executors_are_an_operator_view_for_the_cluster_secret_only(guarded):
    server, executor = guarded
    post(server, HADDOCK, {"run.sh": script("sleep 300")})

    for token in (HADDOCK, PRODIGY):
        refused = requests.get(f"{server.url}/executors", headers=auth(token), timeout=5)
        assert refused.status_code == 403
        assert refused.json()["title"] == "Operators only" and "operator view" in refused.json()["description"]
    assert requests.get(f"{server.url}/executors", timeout=5).status_code == 401
    operator = requests.get(f"{server.url}/executors", headers=auth(SECRET), timeout=5)
    assert operator.status_code == 200 and [e["url"] for e in operator.json()["executors"]] == [executor.url]


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


def test_an_upload_over_max_files_is_413_and_stores_nothing(limited):
    files = {"run.sh": script("true"), **{f"in{n}.txt": b"x" for n in range(4)}}
    response = post(limited, None, files)
    assert response.status_code == 413 and "at most 3 files" in response.json()["description"]
    assert leftovers(limited) == []


def test_a_user_over_max_queued_per_user_gets_429_with_retry_after_and_others_do_not(limited):
    assert [post(limited, None, {"run.sh": script("true")}).status_code for _ in range(2)] == [200, 200]
    refused = post(limited, None, {"run.sh": script("true")})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "max_queued_per_user" in refused.json()["description"]
    assert len(os.listdir(limited.folder / "data" / "jobs")) == 2
    assert post(limited, None, {"run.sh": script("true")}, user_id=2).status_code == 200


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


# --- the API's own description --------------------------------------------------------------------

def test_the_openapi_document_describes_every_route_and_the_security_schemes(guarded):
    server, _ = guarded
    spec = requests.get(f"{server.url}/api-docs/openapi.json", timeout=5).json()
    assert spec["openapi"] == "3.1.0"
    assert set(spec["paths"]) == {"/", "/health", "/upload", "/download/{job_id}", "/jobs/{job_id}",
                                  "/jobs/{job_id}/cancel", "/executors",
                                  "/internal/events", "/internal/executors"}
    assert set(spec["components"]["securitySchemes"]) == {"portalToken", "clusterSecret"}
    assert spec["security"] == [{"portalToken": []}]
    assert spec["paths"]["/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
        "properties"]["service"]["enum"] == ["example"]


def test_swagger_ui_is_served_from_local_files_with_no_cdn(guarded):
    server, _ = guarded
    page = requests.get(f"{server.url}/swagger-ui/", timeout=5)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    initializer = requests.get(f"{server.url}/swagger-ui/swagger-initializer.js", timeout=5).text
    assert '"/api-docs/openapi.json"' in initializer and "https://" not in initializer
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css", "index.css"):
        assert requests.get(f"{server.url}/swagger-ui/{asset}", timeout=5).status_code == 200, asset
