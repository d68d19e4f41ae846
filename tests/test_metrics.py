"""GET /metrics on real processes: what a known workload leaves in the server's and the executor's
metrics (counted across each node's processes), and who may read them and the operator views."""
from __future__ import annotations

import os

import pytest
import requests

from conf import metrics

from tests.harness import (add_section, bearer, cancel, job, scrape, script, submit, upload, wait_for_outcome,
                           wait_until)

PORTAL = "haddock-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
SECRET = "cluster-secret-0123456789abcdef"


def sample(found: dict, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


@pytest.fixture(scope="module")
def served(module_cluster):
    """A server with a portal and an operator, its executor, and the workload of the module: 3 jobs
    completed, 1 failed, 1 cancelled while it ran, 1 upload refused (no run.sh)."""
    executor = module_cluster.executor("example", cluster_secret=SECRET)
    server = module_cluster.server({"example": {"clients": executor.url}}, cluster_secret=SECRET,
                                   tokens={"haddock": PORTAL}, metrics_cache_seconds=0.1, start=False)
    add_section(server, "operators", {"alice": OPERATOR}).start()
    ended = [submit(server, "echo done > out.txt", token=PORTAL) for _ in range(3)]
    ended.append(submit(server, "exit 3", token=PORTAL))
    sleeper = submit(server, "sleep 300", token=PORTAL)
    assert upload(server, {"input.txt": b"no script"}, token=PORTAL).status_code == 400
    for job_id in ended:
        wait_for_outcome(server, job_id, token=PORTAL)
    wait_until(lambda: job(server, sleeper, PORTAL)["status"] == "Running", 30, 0.05, "the sleeper to run")
    assert cancel(server, sleeper, PORTAL).status_code == 200
    return server, executor, {"ended": ended, "sleeper": sleeper}


def test_the_server_gauges_and_http_counters_after_a_known_workload(served):
    server, executor, _ = served

    def settled():
        found = scrape(server, OPERATOR)
        states = {state: sample(found, "orchestrator_jobs", service="example", state=state)
                  for state in ("Completed", "Failed", "Cancelled")}
        return found if states == {"Completed": 3, "Failed": 1, "Cancelled": 1} and \
            sample(found, "orchestrator_storage_used_bytes", area="results") else None

    found = wait_until(settled, 10, 0.1, "the ended jobs and the disk used in the gauges")
    assert sample(found, "orchestrator_executor_up", executor=executor.url, service="example") == 1
    assert sample(found, "orchestrator_executor_slots", executor=executor.url, kind="capacity") == 4
    assert sample(found, "orchestrator_users_waiting", service="example") is None  # nobody waits
    # Uploads are answered by the web process; counted by route template, never by raw path.
    assert sample(found, "orchestrator_http_requests_total", route="/upload", code="200") == 5
    assert sample(found, "orchestrator_http_requests_total", route="/upload", code="400") == 1
    assert sample(found, "orchestrator_http_requests_total", route="/jobs/{job_id}/cancel", code="200") == 1
    assert not any("/jobs/" in dict(labels).get("route", "") and "{" not in dict(labels)["route"]
                   for _, labels in found)
    assert sample(found, "orchestrator_http_request_duration_seconds_count", route="/upload") == 6


def test_the_executor_serves_its_own_metrics_to_the_cluster_secret(served):
    _, executor, _ = served
    assert requests.get(f"{executor.url}/metrics", timeout=5).status_code == 401

    found = scrape(executor, SECRET)
    assert sample(found, "orchestrator_executor_slots", service="example", kind="capacity") == 4
    assert sample(found, "orchestrator_http_requests_total", route="/submit", code="200") == 5
    assert sample(found, "orchestrator_backend_errors_total", backend="local", operation="start") is None
    assert sample(found, "orchestrator_slurm_poll_seconds_count") == 0


def test_the_job_event_counters_and_histograms_after_a_known_workload(served):
    server, _, _ = served
    found = scrape(server, OPERATOR)
    assert sample(found, "orchestrator_jobs_submitted_total", service="example") == 5
    assert sum(value for (name, _), value in found.items() if name == "orchestrator_jobs_rejected_total") == 1
    for state, count in (("Completed", 3), ("Failed", 1), ("Cancelled", 1)):
        assert sample(found, "orchestrator_jobs_finished_total", service="example", state=state) == count
    assert sample(found, "orchestrator_job_turnaround_seconds_count", service="example") == 5
    assert sample(found, "orchestrator_job_queue_wait_seconds_count", service="example") == 5
    # every job ran on the one executor, a local one (its /health says so; the dispatcher asked)
    assert sample(found, "orchestrator_job_run_duration_seconds_count", service="example", backend="local") == 5


def test_operator_views_answer_operators_only(served):
    server, _, jobs = served
    for path in ("/metrics", "/executors"):
        assert requests.get(f"{server.url}{path}", headers=bearer(PORTAL), timeout=5).status_code == 403
        assert requests.get(f"{server.url}{path}", timeout=5).status_code == 401
        assert requests.get(f"{server.url}{path}", headers=bearer(OPERATOR), timeout=5).status_code == 200
    # The operator sees the portal's jobs (it submits none).
    assert job(server, jobs["sleeper"], OPERATOR)["status"] == "Cancelled"
    assert upload(server, {"run.sh": script("true")}, token=OPERATOR).status_code == 403


def test_without_tokens_loopback_callers_are_operators(module_cluster):
    server = module_cluster.server({"example": {"clients": "http://127.0.0.1:9"}})
    assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 200
    assert requests.get(f"{server.url}/executors", timeout=5).status_code == 200


def test_metrics_public_opens_metrics_to_scrapers_without_a_token(module_cluster):
    server = module_cluster.server({"example": {"clients": "http://127.0.0.1:9"}}, cluster_secret=SECRET,
                                   tokens={"haddock": PORTAL}, metrics_public="true")
    assert "orchestrator_http_requests_total" in requests.get(f"{server.url}/metrics", timeout=5).text
    assert requests.get(f"{server.url}/executors", headers=bearer(PORTAL), timeout=5).status_code == 403


def test_a_node_that_stops_leaves_no_counters_behind_in_shared_memory(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})
    folders = [metrics.folder_of(str(node.folder / "data")) for node in (server, executor)]
    assert submit(server, "true") and all(os.path.isdir(folder) for folder in folders)

    server.stop()
    executor.stop()

    assert [folder for folder in folders if os.path.exists(folder)] == []
