"""Webhooks and the change feed on real processes: a real server and executor, and real HTTP
receivers in the test that verify every signature with the `standardwebhooks` package.

Running and Completed delivered and signed; a receiver answering 500 then 200 (retried, same
webhook-id); the server killed -9 while a job's end is still undelivered (delivered after the
restart, once per webhook-id); a slow receiver of one portal does not hold up another portal's;
GET /events paged, per portal, an operator's across portals; callback_url refusals.
"""
from __future__ import annotations

import pytest
import requests

from tests.harness import (WebhookReceiver, add_section, bearer, free_port, job, refused_start, upload_with_callback,
                           wait_for_outcome, wait_until, webhook_secret, write_ini)

pytestmark = pytest.mark.processes

SECRET = webhook_secret()
#: Short backoff and time-out, so that a retry comes within a second.
FAST = {"webhook_backoff_seconds": 0.2, "webhook_timeout": 2}


@pytest.fixture(scope="module")
def receiver():
    found = WebhookReceiver(SECRET)
    yield found
    found.close()


@pytest.fixture(scope="module")
def plain(module_cluster, receiver):
    """A server without tokens whose webhooks go to `receiver` (listed exactly: it is on loopback)."""
    executor = module_cluster.executor("example", slots=4)
    server = module_cluster.server({"example": {"clients": executor.url, "runs_per_user": 10}}, start=False,
                                   webhook_hosts=f"127.0.0.1:{receiver.port}", **FAST)
    return add_section(server, "webhooks", {"default": SECRET}).start()


def webhooks_of(server, job_id, token=None) -> list[dict]:
    answer = requests.get(f"{server.url}/jobs/{job_id}/webhooks", headers=bearer(token), timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()["webhooks"]


def delivered(server, job_id, count: int, token=None):
    """The job's webhooks once `count` of them were delivered (None before)."""
    found = webhooks_of(server, job_id, token)
    return found if sum(1 for hook in found if hook["delivered_at"]) >= count else None


def test_running_and_completed_are_posted_signed_with_the_job_view_and_shown_on_the_job(plain, receiver):
    response = upload_with_callback(plain, "echo done > out.txt", receiver.url("/first"))
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    assert wait_for_outcome(plain, job_id) == 200

    hooks = wait_until(lambda: delivered(plain, job_id, 2), 10, 0.05, "both webhooks to be delivered")
    payloads = receiver.accepted("/first")
    assert [p["type"] for p in payloads] == ["job.running", "job.completed"]
    assert all(p["data"]["id"] == job_id for p in payloads)
    assert payloads[1]["data"]["status"] == "Completed" and payloads[1]["data"]["exit_code"] == 0
    assert [(h["event"], h["attempts"], h["last_status"], h["last_error"], h["next_attempt_at"]) for h in hooks] == \
        [("Running", 1, 200, None, None), ("Completed", 1, 200, None, None)]
    ids = [webhook_id for path, webhook_id, _, _ in receiver.received if path == "/first"]
    assert ids == [h["webhook_id"] for h in hooks] and len(set(ids)) == 2
    assert "webhook_delivered" in plain.log()


def test_a_receiver_that_answers_500_gets_the_same_webhook_again_until_it_answers_200(plain, receiver):
    receiver.answers["/flaky"] = [500, 500]
    response = upload_with_callback(plain, "true", receiver.url("/flaky"))
    job_id = response.json()["id"]

    hooks = wait_until(lambda: delivered(plain, job_id, 2), 15, 0.05, "both webhooks to be delivered")

    # the two 500s went to whichever webhooks came first; each was sent again until it got its 200
    tries = [(webhook_id, status) for path, webhook_id, _, status in receiver.received if path == "/flaky"]
    assert sorted(status for _, status in tries) == [200, 200, 500, 500]
    for hook in hooks:
        mine = [status for webhook_id, status in tries if webhook_id == hook["webhook_id"]]
        assert mine[-1] == 200 and mine.count(200) == 1
        assert hook["attempts"] == len(mine) and hook["last_status"] == 200 and hook["last_error"] is None
    assert "webhook_failed" in plain.log()


def test_the_change_feed_gives_every_change_once_oldest_first_page_by_page(plain):
    response = upload_with_callback(plain, "true", "")
    assert response.status_code == 400  # an empty callback_url is no URL
    ids = []
    for _ in range(3):
        answer = requests.post(f"{plain.url}/upload", data={"user_id": "2", "service": "example"},
                               files=[("file", ("run.sh", b"true\n"))], timeout=30)
        ids.append(answer.json()["id"])
    for job_id in ids:
        assert wait_for_outcome(plain, job_id) == 200

    seen, cursor = [], None
    while True:
        page = requests.get(f"{plain.url}/events", params={"limit": 2, **({"after": cursor} if cursor else {})},
                            timeout=5).json()
        assert len(page["events"]) <= 2
        seen += page["events"]
        if not page["events"]:  # the end: its next_cursor (sealed anew: another string) gives nothing more
            assert requests.get(f"{plain.url}/events", params={"after": page["next_cursor"]},
                                timeout=5).json()["events"] == []
            break
        cursor = page["next_cursor"]
    ours = [(e["job"]["id"], e["status"]) for e in seen if e["job"]["id"] in ids]
    for job_id in ids:
        assert [status for j, status in ours if j == job_id] == ["Queued", "Dispatching", "Submitted", "Running",
                                                                "Completed"] or \
            [status for j, status in ours if j == job_id] == ["Queued", "Dispatching", "Running", "Completed"]
    assert len({e["cursor"] for e in seen}) == len(seen)
    assert requests.get(f"{plain.url}/events", params={"after": "garbage"}, timeout=5).status_code == 400
    assert requests.get(f"{plain.url}/events", params={"limit": 0}, timeout=5).status_code == 400


@pytest.mark.parametrize("url, words", [
    ("http://example.org/hook", "not one this server sends webhooks to"),
    ("ftp://127.0.0.1/hook", "http(s)://host[:port]/path"),
    ("http://127.0.0.1:1/hook", "not one this server sends webhooks to"),
])
def test_a_callback_url_the_server_does_not_admit_is_400_and_stores_nothing(plain, url, words):
    before = requests.get(f"{plain.url}/events", params={"limit": 1000}, timeout=5).json()["events"]
    response = upload_with_callback(plain, "true", url)
    assert response.status_code == 400 and words in response.json()["description"], response.text
    after = requests.get(f"{plain.url}/events", params={"limit": 1000}, timeout=5).json()["events"]
    seen = {(e["job"]["id"], e["status"]) for e in before}  # NOTE: not the cursors: sealed anew at each read
    assert not [e for e in after if e["status"] == "Queued" and (e["job"]["id"], e["status"]) not in seen]


def test_the_webhook_actor_killed_is_re_created_and_the_webhooks_still_go(plain, receiver):
    import os
    import signal

    before = plain.actor_pids()["webhooks"]
    receiver.hold["/after-kill"] = hold = __import__("threading").Event()
    job_id = upload_with_callback(plain, "true", receiver.url("/after-kill")).json()["id"]
    wait_until(lambda: webhooks_of(plain, job_id) and plain.actor_pids().get("webhooks"), 10, 0.05, "a webhook")
    os.kill(before, signal.SIGKILL)  # while its first webhook may be on its way: it is sent again
    wait_until(lambda: plain.actor_pids().get("webhooks") not in (None, before), 10, 0.05, "a new webhook actor")
    hold.set()
    hooks = wait_until(lambda: delivered(plain, job_id, 2), 15, 0.05, "both webhooks from the new actor")
    assert {h["webhook_id"] for h in hooks} <= {r[1] for r in receiver.received if r[0] == "/after-kill"}


# --- portals ----------------------------------------------------------------------------------

CLUSTER_SECRET = "cluster-secret-0123456789abcdef"
TOKENS = {"alpha": "alpha-token-0123456789abcdef", "beta": "beta-token-0123456789abcdef"}
OPERATOR = "operator-token-0123456789abcdef"
BETA_SECRET = webhook_secret()


@pytest.fixture(scope="module")
def portals(module_cluster, receiver):
    """Two portals with a secret each; alpha's webhooks go to `receiver`, beta's to one of its own."""
    beta_receiver = WebhookReceiver(BETA_SECRET)
    executor = module_cluster.executor("example", slots=8, cluster_secret=CLUSTER_SECRET)
    server = module_cluster.server(
        {"example": {"clients": executor.url, "runs_per_user": 10}}, start=False, tokens=TOKENS,
        cluster_secret=CLUSTER_SECRET, webhook_hosts=f"127.0.0.1:{receiver.port}, 127.0.0.1:{beta_receiver.port}",
        **FAST)
    add_section(server, "webhooks", {"alpha": SECRET, "beta": BETA_SECRET})
    add_section(server, "operators", {"ops": OPERATOR})
    yield server.start(), beta_receiver
    beta_receiver.close()


def test_a_slow_receiver_of_one_portal_does_not_hold_up_another_portals_webhooks(portals, receiver):
    import threading

    server, beta_receiver = portals
    receiver.hold["/slow"] = threading.Event()  # alpha's receiver takes every thread alpha has, and more
    slow = [upload_with_callback(server, "true", receiver.url("/slow"), token=TOKENS["alpha"]).json()["id"]
            for _ in range(6)]
    wait_until(lambda: len([s for s in slow if job(server, s, TOKENS["alpha"])["status"] == "Completed"]) == 6,
               20, 0.05, "alpha's jobs to complete")
    try:
        quick = upload_with_callback(server, "true", beta_receiver.url("/quick"), token=TOKENS["beta"]).json()["id"]
        wait_until(lambda: delivered(server, quick, 2, TOKENS["beta"]), 5, 0.05, "beta's webhooks, while alpha's hang")
        assert not [r for r in receiver.received if r[0] == "/slow"]  # alpha's are all still held
        assert [p["type"] for p in beta_receiver.accepted("/quick")] == ["job.running", "job.completed"]
    finally:
        receiver.hold["/slow"].set()
    for job_id in slow:
        wait_until(lambda: delivered(server, job_id, 2, TOKENS["alpha"]), 20, 0.05, "alpha's webhooks in the end")


def test_a_portal_reads_only_its_own_changes_and_an_operator_reads_all(portals):
    server, _ = portals
    mine = {name: [upload_with_callback(server, "true", "", token=token) for _ in range(1)] for name, token in
            TOKENS.items()}
    assert all(r.status_code == 400 for rs in mine.values() for r in rs)  # empty callback_url: refused
    ids = {}
    for name, token in TOKENS.items():
        answer = requests.post(f"{server.url}/upload", data={"user_id": "1", "service": "example"},
                               headers=bearer(token), files=[("file", ("run.sh", b"true\n"))], timeout=30)
        ids[name] = answer.json()["id"]
    feeds = {name: requests.get(f"{server.url}/events", params={"limit": 1000}, headers=bearer(token),
                                timeout=5).json()["events"] for name, token in {**TOKENS, "ops": OPERATOR}.items()}
    assert ids["alpha"] in {e["job"]["id"] for e in feeds["alpha"]}
    assert ids["beta"] not in {e["job"]["id"] for e in feeds["alpha"]}
    assert ids["alpha"] not in {e["job"]["id"] for e in feeds["beta"]}
    assert {ids["alpha"], ids["beta"]} <= {e["job"]["id"] for e in feeds["ops"]}
    assert all(isinstance(e["job"]["id"], str) and e["job"]["id"].startswith("j") for e in feeds["ops"])
    answer = requests.get(f"{server.url}/jobs/{ids['beta']}/webhooks", headers=bearer(TOKENS["alpha"]), timeout=5)
    assert answer.status_code == 404


# --- the server dies before a job's end is delivered -------------------------------------------

def test_a_webhook_not_delivered_when_the_server_is_killed_is_delivered_after_its_restart_once(cluster):
    receiver = WebhookReceiver(SECRET)
    try:
        receiver.down = True  # answers 503: the webhooks wait in the outbox
        executor = cluster.executor("example", slots=2)
        server = cluster.server({"example": {"clients": executor.url}}, start=False,
                                webhook_hosts=f"127.0.0.1:{receiver.port}", webhook_backoff_seconds=0.3,
                                webhook_timeout=2)
        server = add_section(server, "webhooks", {"default": SECRET}).start()
        job_id = upload_with_callback(server, "true", receiver.url("/late")).json()["id"]
        assert wait_for_outcome(server, job_id) == 200
        # NOTE: the Completed waits for the Running to be delivered (a job's webhooks go in order)
        wait_until(lambda: len(webhooks_of(server, job_id)) == 2 and webhooks_of(server, job_id)[0]["attempts"],
                   10, 0.05, "the job to end and its Running to be tried and refused")

        server.kill_everything()
        server.process.wait(10)
        receiver.down = False
        again = server.restart()

        hooks = wait_until(lambda: delivered(again, job_id, 2), 15, 0.05, "both webhooks after the restart")
        accepted = [webhook_id for path, webhook_id, payload, status in receiver.received
                    if path == "/late" and status == 200 and payload is not None]
        assert sorted(accepted) == sorted(h["webhook_id"] for h in hooks)  # each once
        assert [p["type"] for p in receiver.accepted("/late")] == ["job.running", "job.completed"]
    finally:
        receiver.close()


def test_a_server_with_webhook_hosts_and_no_secret_to_sign_with_refuses_to_start_saying_so(tmp_path):
    config = tmp_path / "server.ini"
    write_ini(config, {"server": {"port": free_port(), "data_dir": tmp_path / "data", "webhook_hosts": "*.wenmr.eu"},
                       "service.example": {"clients": "http://127.0.0.1:9"},
                       "webhooks": {"default": "whsec_tooshort"}})
    result = refused_start("run_server.py", "--config", str(config))
    assert result.returncode == 2
    assert "[webhooks] default must be whsec_ followed by 24 to 64 random bytes" in result.stderr
