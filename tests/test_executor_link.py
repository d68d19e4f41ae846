"""Fetching results is atomic: a cut-off download never leaves a file behind a 200."""
from __future__ import annotations

import http.server
import threading

import pytest

from actors.executor_link import ExecutorLink, ExecutorUnreachable

PAYLOAD = b"PK" + b"x" * 5000


class FlakyExecutor(http.server.BaseHTTPRequestHandler):
    """Answers /retrieve/1 in full and /retrieve/2 with a body cut off half-way."""

    def do_GET(self):
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
    ExecutorLink().fetch(executor_url, "1", str(destination))
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
