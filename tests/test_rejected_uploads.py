"""Every rejected upload answers 4xx with a JSON reason and leaves nothing on disk or in the database."""
from __future__ import annotations

import pytest
import requests

from tests.harness import leftovers, script

RUN = {"run.sh": script("echo hi")}


@pytest.fixture(scope="module")
def server(module_cluster):
    executor = module_cluster.executor("example")
    return module_cluster.server({"example": {"clients": executor.url}})


def assert_rejected(server, response, status: int, words: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert words in body["description"], body
    assert leftovers(server) == []
    assert requests.get(f"{server.url}/jobs/1", timeout=5).status_code == 404


# NOTE: every check is in tests/test_server_http.py (in process); here, one of each kind (a field
# checked after the files were stored, a file missing, a field refused) on a real server.
@pytest.mark.parametrize("fields, files, words", [
    ({"user_id": "1", "service": "nosuchservice"}, RUN, "not configured"),
    ({"user_id": "1", "service": "example"}, {"input.pdb": b"ATOM"}, "do not include run.sh"),
    ({"user_id": "1", "service": "example", "colour": "blue"}, RUN, "not accepted"),
])
def test_a_bad_upload_is_refused_with_a_reason_and_leaves_nothing(server, fields, files, words):
    parts = [(key, (None, value)) for key, value in fields.items()]
    parts += [("file", (name, content)) for name, content in files.items()]
    response = requests.post(f"{server.url}/upload", files=parts, timeout=10)
    assert_rejected(server, response, 400, words)


def test_an_upload_without_a_length_is_refused_with_411(server):
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Connection: close\r\n\r\n")
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 411"), answer
    assert leftovers(server) == []
