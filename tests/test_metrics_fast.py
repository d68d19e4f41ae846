"""/metrics without processes: the listener (conf/metrics.py), the database gauges (storage/gauges.py,
web/metrics.py), the HTTP middleware, and who may read it (web/auth.py)."""
from __future__ import annotations

import logging

import falcon.testing
import pytest
from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from conf import logs, metrics
from tests.harness import bearer, new_job, parse_metrics
from web import metrics as web_metrics
from web.auth import ExecutorAuth, ServerAuth
from web.common import new_app

log = logging.getLogger("test")
PORTAL = "haddock-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
SECRET = "cluster-secret-0123456789abcdef"


@pytest.fixture
def counting(tmp_path, monkeypatch):
    """This process counts into tmp_path/metrics as a server of the service `example`; all undone after."""
    monkeypatch.setattr(logs, "LISTENERS", [])
    monkeypatch.setattr(metrics, "METRICS", {})
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    metrics.prepare(str(tmp_path), ["example"])
    yield str(tmp_path)
    monkeypatch.undo()
    values.ValueClass = values.get_value_class()


def counted(data_dir: str) -> dict:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics.folder_of(data_dir))
    return parse_metrics(generate_latest(registry).decode())


def test_the_listener_counts_each_job_event_of_the_contract(counting):
    logs.event(log, "queued", job=1, user=7, portal=None, service="example", files=2, bytes=10)
    logs.event(log, "queued", job=2, user=7, portal=None, service="example", files=2, bytes=10)
    logs.event(log, "rejected", service="example", reason="no_script", status=400)
    logs.event(log, "rejected", service="made-up", reason="unknown_service", status=400)
    logs.event(log, "completed", job=1, user=7, service="example", executor="http://e", attempt=1, exit_code=0,
               reason=None, wait_seconds=0.2, run_seconds=3.0, turnaround_seconds=4.0)
    logs.event(log, "failed", job=2, user=7, service="example", executor=None, attempt=0, exit_code=None,
               reason="lost", wait_seconds=None, run_seconds=None, turnaround_seconds=9.0)
    logs.event(log, "held", logging.DEBUG, service="example", user=7, why="user_quota")
    logs.event(log, "cleaned", job=1, service="example")
    logs.event(log, "dispatched", job=1, service="example", executor="http://e", attempt=1)  # no counter
    for outcome in ("webhook_failed", "webhook_failed", "webhook_delivered", "webhook_gave_up"):
        logs.event(log, outcome, job=1, url="https://a.org/", attempt=1)

    found = counted(counting)
    assert found[("orchestrator_jobs_submitted_total", (("service", "example"),))] == 2
    assert found[("orchestrator_jobs_rejected_total", (("reason", "no_script"), ("service", "example")))] == 1
    # A service the server does not know is not a series of its own.
    assert found[("orchestrator_jobs_rejected_total", (("reason", "unknown_service"), ("service", "other")))] == 1
    assert found[("orchestrator_jobs_finished_total", (("service", "example"), ("state", "Completed")))] == 1
    assert found[("orchestrator_jobs_finished_total", (("service", "example"), ("state", "Failed")))] == 1
    assert found[("orchestrator_job_queue_wait_seconds_count", (("service", "example"),))] == 1
    assert found[("orchestrator_job_queue_wait_seconds_bucket", (("le", "0.5"), ("service", "example")))] == 1
    assert found[("orchestrator_job_run_duration_seconds_count", (("backend", "unknown"), ("service", "example")))] == 1
    assert found[("orchestrator_job_turnaround_seconds_count", (("service", "example"),))] == 2
    assert found[("orchestrator_job_turnaround_seconds_sum", (("service", "example"),))] == 13.0
    assert found[("orchestrator_dispatch_deferred_total", (("reason", "user_quota"), ("service", "example")))] == 1
    assert found[("orchestrator_cleanup_deleted_total", ())] == 1
    assert [found[("orchestrator_webhook_attempts_total", (("outcome", o),))] for o in ("delivered", "failed",
                                                                                       "gave_up")] == [1, 2, 1]
    # The executor node's own metrics are not the server's.
    assert not any(name.startswith(("orchestrator_backend_errors", "orchestrator_slurm")) for name, _ in found)


def test_an_executor_node_counts_backend_errors_and_not_job_events(tmp_path, counting):
    metrics.prepare(str(tmp_path / "node"), ["example"], "executor")
    metrics.backend_error("slurm", "sbatch")
    metrics.slurm_poll(0.02)
    logs.event(log, "queued", job=1, user=7, portal=None, service="example", files=2, bytes=10)

    found = counted(str(tmp_path / "node"))
    assert found[("orchestrator_backend_errors_total", (("backend", "slurm"), ("operation", "sbatch")))] == 1
    assert found[("orchestrator_slurm_poll_seconds_count", ())] == 1
    assert not any(name.startswith("orchestrator_jobs") for name, _ in found)


def test_the_server_gauges_read_the_database(clean_database):
    from storage import executors, jobs
    from storage.clock import utcnow

    for user in (1, 1, 2):
        new_job(user)
    new_job(3, portal="haddock")  # user 3 of a portal: another user
    started = new_job(4)
    executors.record("http://e1", "example", 4, "alive", utcnow())
    executors.record("http://e2", "example", 2, "lost", utcnow())
    jobs.claim_for_dispatch([started], utcnow())
    jobs.begin_attempts([(started, "http://e1")], utcnow())
    state = web_metrics.ServerState(web_metrics.StorageUsage({}, 60), interval=60)

    found = parse_metrics(generate_latest(registry_of(state)).decode())
    assert found[("orchestrator_jobs", (("service", "example"), ("state", "Queued")))] == 4
    assert found[("orchestrator_jobs", (("service", "example"), ("state", "Dispatching")))] == 1
    assert found[("orchestrator_users_waiting", (("service", "example"),))] == 3
    assert found[("orchestrator_executor_up", (("executor", "http://e1"), ("service", "example")))] == 1
    assert found[("orchestrator_executor_up", (("executor", "http://e2"), ("service", "example")))] == 0
    assert found[("orchestrator_executor_slots", (("executor", "http://e1"), ("kind", "capacity")))] == 4
    assert found[("orchestrator_executor_slots", (("executor", "http://e1"), ("kind", "busy")))] == 1
    assert found[("orchestrator_executor_slots", (("executor", "http://e2"), ("kind", "busy")))] == 0


def registry_of(collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def test_ended_jobs_are_counted_at_once_then_again_only_after_the_interval():
    calls = []
    remeasured = web_metrics.Remeasured(lambda: calls.append(1) or [len(calls)], 30.0, at_once=True)

    assert remeasured.value(now=100.0) == [1]  # the first scrape waits for the count
    assert remeasured.value(now=129.0) == [1] and len(calls) == 1  # within the interval: the last count
    remeasured.value(now=130.0)  # due: counted again, in the background
    from tests.harness import wait_until
    wait_until(lambda: remeasured.value(now=131.0) == [2], 5, 0.01, "the count in the background")
    assert len(calls) == 2


def test_requests_are_counted_by_route_template_and_status(counting):
    app = new_app([web_metrics.HttpMetrics()], max_parts=8)

    class Job:
        def on_get(self, req, resp, job_id):
            if job_id == "404":
                raise falcon.HTTPNotFound()
            resp.media = {}

    app.add_route("/jobs/{job_id}", Job())
    client = falcon.testing.TestClient(app)
    for path in ("/jobs/1", "/jobs/2", "/jobs/404", "/nowhere"):
        client.simulate_get(path)

    found = counted(counting)
    assert found[("orchestrator_http_requests_total", (("code", "200"), ("route", "/jobs/{job_id}")))] == 2
    assert found[("orchestrator_http_requests_total", (("code", "404"), ("route", "/jobs/{job_id}")))] == 1
    assert found[("orchestrator_http_requests_total", (("code", "404"), ("route", "unmatched")))] == 1
    assert found[("orchestrator_http_request_duration_seconds_count", (("route", "/jobs/{job_id}"),))] == 3


class Open:
    def on_get(self, req, resp):
        resp.media = {"portal": getattr(req.context, "portal", None)}

    on_post = on_get


def guarded(**options) -> falcon.testing.TestClient:
    app = new_app([ServerAuth(**options)], max_parts=8)
    for path in ("/metrics", "/executors", "/upload", "/jobs"):
        app.add_route(path, Open())
    return falcon.testing.TestClient(app)


def test_operator_views_answer_operators_and_refuse_portals():
    client = guarded(tokens=(("haddock", PORTAL),), cluster_secret=SECRET, operators=(("alice", OPERATOR),))
    for path in ("/metrics", "/executors"):
        assert client.simulate_get(path, headers=bearer(PORTAL)).status_code == 403
        assert client.simulate_get(path).status_code == 401
        assert client.simulate_get(path, headers=bearer(OPERATOR)).status_code == 200
        assert client.simulate_get(path, headers=bearer(SECRET)).status_code == 200
    # The cluster secret opens the views, not the jobs: it is no portal's or operator's token.
    assert client.simulate_get("/jobs", headers=bearer(SECRET)).status_code == 401
    # An operator sees every portal's jobs, and submits none.
    assert client.simulate_get("/jobs", headers=bearer(OPERATOR)).json == {"portal": "*"}
    assert client.simulate_get("/jobs", headers=bearer(PORTAL)).json == {"portal": "haddock"}
    assert client.simulate_post("/upload", headers=bearer(OPERATOR)).status_code == 403


def test_without_any_token_the_callers_on_loopback_are_operators():
    client = guarded(tokens=(), cluster_secret="")
    assert client.simulate_get("/metrics", remote_addr="127.0.0.1").status_code == 200
    assert client.simulate_get("/executors", remote_addr="::1").status_code == 200
    assert client.simulate_get("/metrics", remote_addr="10.1.2.3").status_code == 401
    # With operator tokens, loopback is no longer enough.
    client = guarded(tokens=(), cluster_secret="", operators=(("alice", OPERATOR),))
    assert client.simulate_get("/metrics", remote_addr="127.0.0.1").status_code == 401
    assert client.simulate_get("/metrics", headers=bearer(OPERATOR)).status_code == 200


def test_metrics_public_opens_metrics_only():
    client = guarded(tokens=(("haddock", PORTAL),), cluster_secret=SECRET, metrics_public=True)
    assert client.simulate_get("/metrics").status_code == 200
    assert client.simulate_get("/metrics", headers=bearer(PORTAL)).status_code == 200
    assert client.simulate_get("/executors", headers=bearer(PORTAL)).status_code == 403


@pytest.mark.parametrize("public, expected", [(False, 401), (True, 200)])
def test_an_executor_nodes_metrics_need_the_cluster_secret_unless_public(public, expected):
    app = new_app([ExecutorAuth(SECRET, metrics_public=public)], max_parts=8)
    app.add_route("/metrics", Open())
    app.add_route("/jobs", Open())
    client = falcon.testing.TestClient(app)
    assert client.simulate_get("/metrics").status_code == expected
    assert client.simulate_get("/metrics", headers=bearer(SECRET)).status_code == 200
    assert client.simulate_get("/jobs").status_code == 401
