"""Every rejected upload answers 4xx with a JSON reason and leaves nothing on disk or in the database."""
from __future__ import annotations

import pytest
import requests

from tests.harness import leftovers, script, upload

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


@pytest.mark.parametrize("fields, files, words", [
    ({"service": "example"}, RUN, "user_id is missing"),
    ({"user_id": "1"}, RUN, "service is missing"),
    ({"user_id": "1", "service": "nosuchservice"}, RUN, "not configured"),
    ({"user_id": "abc", "service": "example"}, RUN, "positive integer"),
    ({"user_id": "-5", "service": "example"}, RUN, "positive integer"),
    ({"user_id": "0", "service": "example"}, RUN, "positive integer"),
    ({"user_id": "9223372036854775808", "service": "example"}, RUN, "positive integer"),
    ({"user_id": "1", "service": "example"}, {}, "no files"),
    ({"user_id": "1", "service": "example"}, {"input.pdb": b"ATOM"}, "do not include run.sh"),
    ({"user_id": "1", "service": "example", "colour": "blue"}, RUN, "not accepted"),
])
def test_a_bad_upload_is_refused_with_a_reason_and_leaves_nothing(server, fields, files, words):
    parts = [(key, (None, value)) for key, value in fields.items()]
    parts += [("file", (name, content)) for name, content in files.items()]
    response = requests.post(f"{server.url}/upload", files=parts, timeout=10)
    assert_rejected(server, response, 400, words)


@pytest.mark.parametrize("name, words", [
    ("..", "no usable base name"),
    ("a\x00b", "NUL"),
])
def test_file_names_that_cannot_be_stored_are_refused(server, name, words):
    response = upload(server, {"run.sh": script("true"), name: b"x"})
    assert_rejected(server, response, 400, words)


def test_two_files_with_the_same_name_are_refused(server):
    response = requests.post(f"{server.url}/upload", data={"user_id": "1", "service": "example"},
                             files=[("file", ("run.sh", b"true")), ("file", ("run.sh", b"false"))], timeout=10)
    assert_rejected(server, response, 400, "unique")


def test_a_body_that_is_not_multipart_is_refused(server):
    response = requests.post(f"{server.url}/upload", json={"user_id": 1, "service": "example"}, timeout=10)
    assert_rejected(server, response, 415, "multipart/form-data")


def test_a_broken_multipart_body_is_refused(server):
    response = requests.post(f"{server.url}/upload", data=b"--xyz\r\nnonsense",
                             headers={"Content-Type": "multipart/form-data; boundary=xyz"}, timeout=10)
    assert response.status_code == 400
    assert leftovers(server) == []


def test_get_on_upload_is_405(server):
    assert requests.get(f"{server.url}/upload", timeout=5).status_code == 405


def test_an_upload_without_a_length_is_refused_with_411(server):
    import socket
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Connection: close\r\n\r\n")
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 411"), answer
    assert leftovers(server) == []


@pytest.mark.parametrize("disposition", [
    b'form-data; name="file"; filename="caf\xe9.txt"',          # not UTF-8
    b"form-data; name=\"file\"; filename*=utf-8''x%0D%0AContent-Type:%20evil",
    b'form-data; name="file"; filename="say\\"hi\\".txt"',
])
def test_part_headers_that_cannot_be_stored_safely_are_refused(server, disposition):
    body = (b"--b\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\n1\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"service\"\r\n\r\nexample\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"run.sh\"\r\n\r\ntrue\r\n"
            b"--b\r\nContent-Disposition: " + disposition + b"\r\n\r\nx\r\n--b--\r\n")
    response = requests.post(f"{server.url}/upload", data=body,
                             headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=10)
    assert 400 <= response.status_code < 500, response.text
    assert leftovers(server) == []


@pytest.mark.parametrize("event", [
    {},
    {"job_id": 1, "attempt": 1, "event": "exploded"},
    {"job_id": "1", "attempt": 1, "event": "finished"},
    {"job_id": 1, "attempt": 0, "event": "finished"},
    {"job_id": 2**64, "attempt": 1, "event": "finished"},
    {"job_id": 1, "attempt": 1, "event": "finished", "exit_code": 2**40},
    {"job_id": 1, "attempt": 1, "event": "finished", "task_id": 7},
    [1, 2, 3],
])
def test_a_malformed_executor_report_is_refused(server, event):
    response = requests.post(f"{server.url}/internal/events", json=event, timeout=10)
    assert response.status_code == 400, response.text
    assert "description" in response.json()


@pytest.mark.parametrize("url", ["http://a\x00b:9000", "http://host:9000/\x00", "http://host:9000/\n"])
def test_a_heartbeat_whose_url_holds_control_characters_is_refused(server, url):
    # NOTE: the URL is the executor's row key, which text cleaning (storage/storable.py) cannot change.
    response = requests.post(f"{server.url}/internal/executors", timeout=10,
                             json={"service": "example", "url": url, "slots": 1, "draining": False, "tasks": []})
    assert response.status_code == 400, response.text
    assert all(e["url"] != url for e in requests.get(f"{server.url}/executors", timeout=5).json()["executors"])
