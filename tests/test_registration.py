"""Executors that register themselves, heartbeat, drain on SIGTERM; the server's graceful stop."""
from __future__ import annotations

import signal
import threading
import time

import requests

from tests.harness import (free_port, job, listing, processes_with_marker, script, submit, upload, wait_for_outcome,
                            wait_until)


def test_an_executor_with_a_server_url_registers_itself_and_the_server_remembers_it(cluster):
    server = cluster.server({"example": {"runs_per_user": 2}})
    executor = cluster.executor("example", server_port=server.port)

    wait_until(lambda: listing(server).get(executor.url, {}).get("state") == "alive", 15, 0.1,
               "the executor to register")
    entry = listing(server)[executor.url]
    assert entry["registered"] and entry["slots"] == 4 and entry["service"] == "example"
    job_id = submit(server, "echo registered > out.txt")
    assert wait_for_outcome(server, job_id) == 200

    server.stop()
    again = server.restart()
    assert executor.url in listing(again)
    assert wait_for_outcome(again, submit(again, "echo again > out.txt")) == 200


def test_sigterm_drains_an_executor_it_finishes_its_jobs_takes_no_new_ones_then_exits(cluster):
    server = cluster.server({"example": {"runs_per_user": 4}}, executor_timeout=3)
    left = cluster.executor("example", server_port=server.port, slots=1)
    right = cluster.executor("example", server_port=server.port, slots=1)
    wait_until(lambda: len(listing(server)) == 2, 15, 0.1, "both executors to register")
    first = submit(server, "sleep 2\necho first > out.txt")
    wait_until(lambda: job(server, first)["status"] == "Running", 10, message="the first job to run")
    busy = left if job(server, first)["executor"] == left.url else right
    idle = right if busy is left else left

    busy.process.send_signal(signal.SIGTERM)

    wait_until(lambda: listing(server)[busy.url]["state"] == "draining", 10, 0.05, "the executor to drain")
    assert requests.get(f"{busy.url}/health", timeout=5).json()["status"] == "draining"
    second = submit(server, "echo second > out.txt", user_id=2)
    assert wait_for_outcome(server, second) == 200
    assert job(server, second)["executor"] == idle.url
    assert wait_for_outcome(server, first) == 200
    assert job(server, first)["attempts"] == 1
    busy.process.wait(15)
    wait_until(lambda: not processes_with_marker(busy.marker), 10, 0.05, "the drained executor to be gone")


def test_sigterm_on_the_server_answers_every_upload_then_exits_within_ten_seconds(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 50}})
    answers: list[tuple[int, int | None]] = []
    go = threading.Event()

    def sender(user: int) -> None:
        for _ in range(40):
            try:
                response = upload(server, {"run.sh": script("echo ok > out.txt")}, user_id=user)
                answers.append((response.status_code, response.json().get("id")))
            except requests.RequestException:
                answers.append((0, None))  # refused: the server is gone
            go.set()

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    go.wait(10)
    wait_until(lambda: len(answers) >= 20, 20, 0.01, "uploads to be under way")

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(15)
    took = time.monotonic() - started
    for thread in threads:
        thread.join(60)

    assert took < 10, f"the server took {took:.1f} s to stop"
    wait_until(lambda: not processes_with_marker(server.marker), 10, 0.05, "every server process to exit")
    assert {code for code, _ in answers} <= {200, 503, 0}
    accepted = [job_id for code, job_id in answers if code == 200]
    assert accepted
    again = server.restart()
    for job_id in accepted:
        assert wait_for_outcome(again, job_id, 60) == 200


def test_an_executor_known_under_two_urls_does_not_lose_its_jobs(cluster):
    # Given: the configuration names it by "localhost", while it registers as "127.0.0.1"
    port = free_port()
    server = cluster.server({"example": {"clients": f"http://localhost:{port}"}}, executor_timeout=3)
    cluster.executor("example", server_port=server.port, port=port)
    wait_until(lambda: len(listing(server)) == 2, 15, 0.1, "the executor under both names")

    ids = [submit(server, "sleep 1.5\necho ok > out.txt", user_id=n) for n in range(1, 4)]

    for job_id in ids:
        assert wait_for_outcome(server, job_id, 30) == 200
        assert job(server, job_id)["attempts"] == 1


def test_an_executor_whose_heartbeats_arrive_but_whose_url_does_not_answer_is_declared_lost(cluster):
    # Its advertise_url names a port nothing listens on: its heartbeats reach the server, the
    # server's calls to it do not. Its jobs must not wait for it as if it were alive.
    server = cluster.server({"example": {"runs_per_user": 2}}, executor_timeout=2)
    wrong = f"http://127.0.0.1:{free_port()}"
    cluster.executor("example", server_port=server.port, advertise_url=wrong)
    wait_until(lambda: wrong in listing(server), 15, 0.1, "the executor to register")
    job_id = submit(server, "echo one-way > out.txt")

    wait_until(lambda: listing(server)[wrong]["state"] == "lost", 20, 0.1, "the one-way executor to be lost")
    assert "cannot reach it at that URL" in server.log_path.read_text()
    assert job(server, job_id)["status"] in ("Queued", "Dispatching")  # waiting, not sent anywhere
    reachable = cluster.executor("example", server_port=server.port)
    assert wait_for_outcome(server, job_id, 30) == 200
    assert job(server, job_id)["executor"] == reachable.url
