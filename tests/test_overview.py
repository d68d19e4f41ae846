"""`GET /services` and the status page, in process: the figures from a temp SQLite at a known time
(storage/overview.py), the pure summary and throughput (web/overview.py), and who sees what (a
portal only its own jobs and no executors; the page for operators, a browser asking by HTTP Basic).
The page in a real browser is in tests/test_status_page.py.
"""
from __future__ import annotations

import base64
import threading
from datetime import datetime, timedelta

import falcon.testing
import pytest

from conf.settings import ServerConfig, ServiceConfig
from pony.orm import db_session

from storage import executors, jobs, overview
from storage.models import Job, Usage
from storage.states import JobState
from tests.harness import StandInGateway, bearer
from web.overview import WINDOW, summary, throughput, usage_of
from web.server_app import create_app

NOW = datetime(2026, 11, 30, 12, 0, 0)
HADDOCK = "haddock-token-0123456789abcdef"
PRODIGY = "prodigy-token-0123456789abcdef"
SECRET = "cluster-secret-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
SERVICES = (ServiceConfig("example", runs_per_user=2, max_runs=4, max_queued_per_user=10, max_runtime=3600),
            ServiceConfig("prodigy"))


def job(user: int, service: str = "example", portal: str | None = None, created: datetime = NOW - timedelta(minutes=30),
        started_after: float | None = None, ran: float | None = None, outcome: JobState | None = None,
        reason: str | None = None) -> int:
    """A job created at `created`; started `started_after` seconds later on executor E, and ended
    with `outcome` after running `ran` seconds (or at once, never started, if `started_after` is None)."""
    job_id = jobs.create_job(user, service, f"/jobs/{user}", created, portal)[0]
    if started_after is None and outcome is None:
        return job_id
    if started_after is not None:
        started = created + timedelta(seconds=started_after)
        jobs.claim_for_dispatch([job_id], started)
        jobs.begin_attempts([(job_id, "http://e:1")], started)
        jobs.mark_submitted([(job_id, 1, "1")], started)
        jobs.mark_running([(job_id, 1)], started)
        if outcome is not None:
            jobs.finish(job_id, 1, outcome, started + timedelta(seconds=ran or 0), reason=reason,
                        exit_code=0 if outcome is JobState.COMPLETED else 3)
    else:
        jobs.finish(job_id, None, outcome, created, reason=reason)
    return job_id


@pytest.fixture
def history(clean_database):
    """example: user 1 has 3 queued, user 2 has 1 queued and 1 running; in the last hour 2
    completed (waits 10 and 30 s, runs 60 and 120 s), 1 failed; one completed two hours ago.
    prodigy: one queued job of the portal `prodigy`."""
    for _ in range(3):
        job(1)
    job(2)
    job(2, started_after=5)
    job(3, started_after=10, ran=60, outcome=JobState.COMPLETED)
    job(4, started_after=30, ran=120, outcome=JobState.COMPLETED)
    job(5, started_after=2, ran=1, outcome=JobState.FAILED, reason="exit code 3")
    job(6, created=NOW - timedelta(hours=2), started_after=1, ran=1, outcome=JobState.COMPLETED)
    job(7, service="prodigy", portal="prodigy")
    executors.record("http://e:1", "example", 4, "alive", NOW, tier=2)


def test_the_figures_of_a_service_count_its_waiting_and_active_jobs_and_the_last_hours_outcomes(history):
    got = summary(SERVICES, overview.figures(NOW - WINDOW), executors.listing(), NOW)
    example, prodigy = got["services"]

    assert (example["name"], example["queued"], example["active"], example["users_waiting"]) == ("example", 4, 1, 2)
    assert example["top_waiting_users"] == [{"portal": None, "user_id": 1, "queued": 3},
                                            {"portal": None, "user_id": 2, "queued": 1}]
    assert example["finished_last_hour"] == {"Completed": 2, "Failed": 1, "Cancelled": 0}
    assert example["median_wait_seconds"] == 10.0  # of 2, 10 and 30 s
    assert example["median_run_seconds"] == 60.0   # of 1, 60 and 120 s
    assert example["limits"] == {"runs_per_user": 2, "max_runs": 4, "max_queued_per_user": 10,
                                 "max_runtime": 3600, "runs_per_group": None}
    assert (example["policy"], example["top_usage_users"], example["groups"]) == ("round_robin", None, [])
    assert example["executors"] == [{"url": "http://e:1", "state": "alive", "slots": 4, "free_slots": 3, "running": 1,
                                     "tier": 2, "last_seen": "2026-11-30T12:00:00Z"}]
    assert (prodigy["queued"], prodigy["active"], prodigy["median_wait_seconds"]) == (1, 0, None)


def test_a_service_no_longer_configured_is_listed_while_it_has_jobs(history):
    got = summary(SERVICES[1:], overview.figures(NOW - WINDOW), [], NOW)
    assert [(s["name"], s["configured"], s["limits"]) for s in got["services"]] == [
        ("prodigy", True, {"runs_per_user": 5, "max_runs": None, "max_queued_per_user": None, "max_runtime": None,
                           "runs_per_group": None}),
        ("example", False, None)]


def test_throughput_counts_the_jobs_ended_in_each_five_minutes_of_the_last_hour(history):
    buckets = throughput(overview.figures(NOW - WINDOW), NOW)
    assert len(buckets) == 12 and sum(sum(b.values()) for b in buckets) == 3
    # ended at 12:00 - 30 min + wait + run: 11:31:10, 11:32:30 and 11:30:05: the bucket 11:30-11:35
    assert buckets[6] == {"Completed": 2, "Failed": 1, "Cancelled": 0}


def test_recent_failures_are_newest_first_with_their_reasons(history):
    job(8, created=NOW - timedelta(minutes=5), outcome=JobState.FAILED, reason="the executor refused the job")
    failures = overview.recent_failures(10)
    assert [(f["user_id"], f["reason"]) for f in failures] == [(8, "the executor refused the job"),
                                                              (5, "exit code 3")]


# --- over HTTP ---------------------------------------------------------------------------------------

def app(tmp_path, **settings) -> falcon.testing.TestClient:
    config = ServerConfig(data_dir=str(tmp_path / "data"), services=SERVICES, **settings)
    return falcon.testing.TestClient(create_app(config, StandInGateway(), threading.Event()))


def basic(secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"operator:{secret}".encode()).decode()}


def test_a_portal_sees_the_same_shape_for_its_own_jobs_only_and_no_executors(tmp_path, history):
    client = app(tmp_path, tokens=(("haddock", HADDOCK), ("prodigy", PRODIGY)), cluster_secret=SECRET,
                 operators=(("ops", OPERATOR),))
    mine = client.simulate_get("/services", headers=bearer(PRODIGY)).json
    counts = {s["name"]: (s["queued"], s["active"], s["users_waiting"], s["executors"]) for s in mine["services"]}
    assert counts == {"example": (0, 0, 0, []), "prodigy": (1, 0, 1, [])}
    everyone = client.simulate_get("/services", headers=bearer(OPERATOR)).json
    assert [s["queued"] for s in everyone["services"]] == [4, 1] and everyone["services"][0]["executors"]
    assert client.simulate_get("/services").status_code == 401


def test_the_status_page_is_an_operator_view_that_a_browser_opens_with_the_token_as_password(tmp_path, history):
    client = app(tmp_path, tokens=(("haddock", HADDOCK),), cluster_secret=SECRET, operators=(("ops", OPERATOR),))

    asked = client.simulate_get("/status")
    assert asked.status_code == 401 and "Basic" in asked.headers["WWW-Authenticate"]
    assert client.simulate_get("/status", headers=bearer(HADDOCK)).status_code == 403
    assert client.simulate_get("/status", headers=basic("wrong-secret-0123456789")).status_code == 401
    page = client.simulate_get("/status", headers=basic(OPERATOR))
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "http://e:1" in page.text and "exit code 3" in page.text and "<svg" in page.text
    executor_table = page.text.split("id=executors>")[1].split("</table>")[0]
    assert "<th>tier</th>" in executor_table and "<td class=n>2</td>" in executor_table
    assert "https://" not in page.text and "<script" not in page.text  # works on an isolated network


def test_the_status_page_escapes_what_jobs_and_executors_wrote(tmp_path, clean_database):
    job(1, created=NOW, outcome=JobState.FAILED, reason="<script>alert(1)</script>")
    page = app(tmp_path).simulate_get("/status").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


# --- groups and fair share ------------------------------------------------------------------------

FAIR = (ServiceConfig("example", runs_per_group=2, policy="fair_share", fair_share_half_life_hours=1),
        ServiceConfig("prodigy"))


def _grouped(job_id: int, group: str) -> int:
    """Give a job a group, as an upload with `group` does."""
    with db_session:
        Job[job_id].group = group
    return job_id


@pytest.fixture
def classes(clean_database):
    """example: haddock's class-a has 2 queued and 1 running, its class-b 1 queued, and one job
    without a group; prodigy's class-a (its own label) 1 running; an ended class-c job is no longer
    counted. Usage: haddock's user 1 ran 100 s (stored at NOW), user 2 ran 4000 s an hour ago
    (2000 now) and runs a job since 1795 s; prodigy's user 9 runs since 300 s; user 5's 5 s run
    ended half an hour ago (3.5 s now)."""
    _grouped(job(1, portal="haddock"), "class-a")
    _grouped(job(2, portal="haddock"), "class-a")
    _grouped(job(2, portal="haddock", started_after=5), "class-a")
    _grouped(job(3, portal="haddock"), "class-b")
    job(4, portal="haddock")
    running = _grouped(job(9, portal="prodigy", started_after=5), "class-a")
    _grouped(job(5, portal="haddock", started_after=5, ran=5, outcome=JobState.COMPLETED), "class-c")
    with db_session:
        Job[running].dispatched_at = NOW - timedelta(seconds=300)
        Usage(service="example", portal="haddock", user_id=1, slot_seconds=100.0, as_of=NOW)
        Usage(service="example", portal="haddock", user_id=2, slot_seconds=4000.0, as_of=NOW - timedelta(hours=1))


def test_the_overview_counts_each_groups_waiting_and_active_jobs_and_shows_the_policy(classes):
    example = summary(FAIR, overview.figures(NOW - WINDOW), [], NOW, usage_of(FAIR, NOW))["services"][0]
    assert example["groups"] == [{"portal": "haddock", "group": "class-a", "queued": 2, "active": 1},
                                 {"portal": "haddock", "group": "class-b", "queued": 1, "active": 0},
                                 {"portal": "prodigy", "group": "class-a", "queued": 0, "active": 1}]
    assert example["groups_waiting"] == 3
    assert (example["policy"], example["limits"]["runs_per_group"]) == ("fair_share", 2)
    assert example["top_usage_users"] == [{"portal": "haddock", "user_id": 2, "usage": 3795.0},
                                          {"portal": "prodigy", "user_id": 9, "usage": 300.0},
                                          {"portal": "haddock", "user_id": 1, "usage": 100.0},
                                          {"portal": "haddock", "user_id": 5, "usage": 3.542}]


def test_a_portal_sees_only_its_own_groups_and_users_by_usage(tmp_path, classes):
    config = ServerConfig(data_dir=str(tmp_path / "data"), services=FAIR, cluster_secret=SECRET,
                          tokens=(("haddock", HADDOCK), ("prodigy", PRODIGY)), operators=(("ops", OPERATOR),))
    client = falcon.testing.TestClient(create_app(config, StandInGateway(), threading.Event()))
    theirs = client.simulate_get("/services", headers=bearer(PRODIGY)).json["services"][0]
    assert theirs["groups"] == [{"portal": "prodigy", "group": "class-a", "queued": 0, "active": 1}]
    assert [(u["portal"], u["user_id"]) for u in theirs["top_usage_users"]] == [("prodigy", 9)]
    assert "haddock" not in str(theirs)
    everyone = client.simulate_get("/services", headers=bearer(OPERATOR)).json["services"][0]
    assert len(everyone["groups"]) == 3 and len(everyone["top_usage_users"]) == 4
    page = client.simulate_get("/status", headers=basic(OPERATOR)).text
    assert "haddock/class-a (2/1)" in page and "haddock/2 (" in page and "2 per group" in page
