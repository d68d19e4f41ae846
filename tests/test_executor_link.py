"""Fetching results is atomic: a cut-off download never leaves a file behind a 200."""
from __future__ import annotations

import http.server
import threading

import pytest

from actors.server.executor_link import ExecutorLink, ExecutorUnreachable

PAYLOAD = b"PK" + b"x" * 5000


class FlakyExecutor(http.server.BaseHTTPRequestHandler):
    """Answers /retrieve/1 in full, /retrieve/2 with a body cut off half-way, /retrieve/3 with 202
    (being zipped) and /retrieve/4 with 409 (could not be zipped)."""

    def do_GET(self):
        if self.path.endswith(("/3", "/4")):
            body = b"" if self.path.endswith("/3") else \
                b'{"title": "Results not zipped", "description": "the folder could not be zipped"}'
            self.send_response(202 if self.path.endswith("/3") else 409)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD if self.path.endswith("/1") else PAYLOAD[:100])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def executor_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyExecutor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_complete_download_is_renamed_into_place(executor_url, tmp_path):
    destination = tmp_path / "1.zip"
    assert ExecutorLink().fetch(executor_url, "1", str(destination)) is True
    assert destination.read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["1.zip"]


def test_a_download_cut_off_half_way_leaves_nothing_behind(executor_url, tmp_path):
    with pytest.raises(ExecutorUnreachable):
        ExecutorLink().fetch(executor_url, "2", str(tmp_path / "2.zip"))
    assert list(tmp_path.iterdir()) == []


def test_a_repeated_download_replaces_the_file_whole(executor_url, tmp_path):
    destination = tmp_path / "1.zip"
    destination.write_bytes(b"old")
    ExecutorLink().fetch(executor_url, "1", str(destination))
    assert destination.read_bytes() == PAYLOAD


def test_a_result_still_being_zipped_is_not_an_error_and_leaves_nothing_behind(executor_url, tmp_path):
    assert ExecutorLink().fetch(executor_url, "3", str(tmp_path / "3.zip")) is False
    assert list(tmp_path.iterdir()) == []


def test_an_executor_that_cannot_give_the_result_says_why_with_its_status(executor_url, tmp_path):
    with pytest.raises(ExecutorUnreachable, match="answered 409: the folder could not be zipped") as raised:
        ExecutorLink().fetch(executor_url, "4", str(tmp_path / "4.zip"))
    assert raised.value.status == 409
    assert list(tmp_path.iterdir()) == []
