"""JSON request bodies: a body nested too deeply for the parser is 400, one over the cap is 413,
and neither reaches an actor; on the app (falcon.testing) and on a real server."""
from __future__ import annotations

import threading

import falcon.testing
import pytest
import requests

from actors.server.executor_link import ExecutorLink, ExecutorUnreachable
from conf.settings import ServerConfig, ServiceConfig
from tests.harness import StandInGateway
from web.common import MAX_JSON_BYTES
from web.server_app import create_app

INTERNAL = ("/internal/events", "/internal/executors")
DEEP = "[" * 100_000 + "]" * 100_000
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def app():
    gateway = StandInGateway()
    config = ServerConfig(services=(ServiceConfig(name="example", clients=()),))
    return falcon.testing.TestClient(create_app(config, gateway, threading.Event())), gateway


def heartbeat(tasks: list) -> dict:
    return {"service": "example", "url": "http://127.0.0.1:9", "slots": 4, "draining": False, "tasks": tasks}


@pytest.mark.parametrize("path", INTERNAL)
def test_a_body_nested_too_deeply_is_400_with_the_reason_and_reaches_no_actor(app, path):
    client, gateway = app
    response = client.simulate_post(path, body=DEEP, headers=JSON)
    assert response.status_code == 400, response.text
    assert response.json["title"] == "Invalid JSON" and "nested too deeply" in response.json["description"]
    assert gateway.sent == []


@pytest.mark.parametrize("path", INTERNAL)
def test_a_body_over_the_cap_is_413_saying_the_cap_with_or_without_a_length(app, path):
    client, gateway = app
    body = b"[" + b"1," * (MAX_JSON_BYTES // 2) + b"1]"
    sized = client.simulate_post(path, body=body, headers=JSON)
    # No Content-Length (a chunked body): the reader stops one byte past the cap.
    chunked = client.simulate_post(path, body=body, headers={**JSON, "Transfer-Encoding": "chunked"})
    for response in (sized, chunked):
        assert response.status_code == 413, response.text
        assert str(MAX_JSON_BYTES) in response.json["description"]
    assert gateway.sent == []


def test_the_largest_honest_heartbeat_fits_under_the_cap_and_is_accepted(app):
    client, gateway = app
    # The most tasks the server accepts in a heartbeat, with the longest job ids.
    tasks = [[str(10**9 + i), 2**62 + i, 3] for i in range(100_000)]
    response = client.simulate_post("/internal/executors", json=heartbeat(tasks))
    assert response.status_code == 200, response.text
    assert len(gateway.sent) == 1 and len(gateway.sent[0].tasks) == 100_000


class Answer:
    """An executor's HTTP answer, as the link reads it."""

    def __init__(self, data: bytes):
        self.data = data


def test_an_executor_answer_nested_too_deeply_is_not_an_executor_talking_and_raises_nothing_else():
    with pytest.raises(ExecutorUnreachable, match="not an executor's JSON"):
        ExecutorLink._json(Answer(DEEP.encode()), "http://127.0.0.1:9/health", "slots")


def test_a_real_server_answers_a_deeply_nested_report_400_and_keeps_working(module_cluster):
    server = module_cluster.server({"example": {"clients": "http://127.0.0.1:9"}})
    for path in INTERNAL:
        response = requests.post(f"{server.url}{path}", data=DEEP, headers=JSON, timeout=10)
        assert response.status_code == 400, response.text
        assert "nested too deeply" in response.json()["description"]
    too_big = requests.post(f"{server.url}/internal/events", data=b" " * (MAX_JSON_BYTES + 1), headers=JSON,
                            timeout=30)
    assert too_big.status_code == 413, too_big.text
    assert requests.post(f"{server.url}/internal/executors", json=heartbeat([]), timeout=10).status_code == 200
    assert "unexpected error" not in server.log()
