"""Following a job, in process: which names are inside a job's folder and how they are opened
(web/folder_reads.py), a log's tail and offset reads, the executor's follow routes under
falcon.testing, and the server's answers by a job's state, its executor not answering among them."""
from __future__ import annotations

import io
import os
import threading

import falcon.testing
import pytest
from pony.orm import db_session

from conf.settings import ClientConfig, ServerConfig, ServiceConfig
from storage.clock import utcnow
from storage.models import Job
from storage.node import tasks
from tests.harness import StandInGateway, free_port, new_job
from web import executor_app, server_app
from web.folder_reads import MAX_READ, Refused, components, open_inside, read_from, read_tail, sent


@pytest.mark.parametrize("name", ["", "/etc/passwd", "..", "../x", "a/../b", "a//b", "./a", "a/", "a\0b", "x" * 5000])
def test_a_name_outside_the_folder_is_refused(name):
    with pytest.raises(Refused):
        components(name)


def test_names_inside_the_folder_are_taken_apart():
    assert components("stdout.log") == ["stdout.log"]
    assert components("sub/deep/..x") == ["sub", "deep", "..x"]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.txt").write_bytes(b"deep\n")
    (tmp_path / "stdout.log").write_bytes(b"one\ntwo\nthree\n")
    (tmp_path / "leak").symlink_to("/etc/passwd")
    (tmp_path / "etc").symlink_to("/etc")
    (tmp_path / "inner").symlink_to(tmp_path / "sub")
    os.mkfifo(tmp_path / "pipe")
    return tmp_path


def test_only_regular_files_inside_are_opened_never_through_a_link(folder):
    with open_inside(str(folder), "sub/deep.txt") as handle:
        assert handle.read() == b"deep\n"
    for name in ("leak", "etc/passwd", "inner/deep.txt", "pipe", "sub"):
        with pytest.raises(Refused):
            open_inside(str(folder), name)
    with pytest.raises(FileNotFoundError):
        open_inside(str(folder), "nothing.txt")


@pytest.mark.parametrize("data, lines, tail", [
    (b"one\ntwo\nthree\n", 2, b"two\nthree\n"), (b"one\ntwo\nthree", 2, b"two\nthree"),
    (b"one\ntwo\n", 5, b"one\ntwo\n"), (b"one\n", 0, b""), (b"", 3, b""), (b"\n\n\n", 2, b"\n\n")])
def test_a_tail_is_the_last_lines(data, lines, tail):
    assert read_tail(io.BytesIO(data), len(data), lines) == tail


def test_a_read_takes_at_most_max_read_bytes():
    data = b"x" * (MAX_READ + 10) + b"\nend\n"
    assert read_tail(io.BytesIO(data), len(data), 10) == data[-MAX_READ:]
    assert read_from(io.BytesIO(data), len(data), 5) == data[5:5 + MAX_READ]
    assert read_from(io.BytesIO(data), 20, 10) == data[10:20]  # only up to the size measured
    assert read_from(io.BytesIO(data), len(data), len(data) + 1) == b""


@pytest.fixture
def node(tmp_path, clean_node_database, folder):
    config = ClientConfig(data_dir=str(tmp_path / "node"))
    os.makedirs(config.tasks_path)
    task = tasks.create(5, "uid-5", 1, None, str(folder), utcnow())["id"]
    client = falcon.testing.TestClient(executor_app.create_app(config, StandInGateway(), threading.Event()))
    return client, int(task)


def test_the_executor_serves_a_tasks_log_and_files_and_refuses_links(node):
    node, task = node
    tail = node.simulate_get(f"/jobs/{task}/log", params={"tail": "1"})
    assert tail.status_code == 200 and tail.text == "three\n" and tail.headers["X-Log-Size"] == "14"
    offset = node.simulate_get(f"/jobs/{task}/log", params={"offset": "4"})
    assert offset.text == "two\nthree\n" and offset.headers["X-Log-Size"] == "14"
    empty = node.simulate_get(f"/jobs/{task}/log", params={"stream": "stderr"})  # not written yet
    assert empty.status_code == 200 and empty.text == "" and empty.headers["X-Log-Size"] == "0"
    assert node.simulate_get(f"/jobs/{task}/files/sub/deep.txt").content == b"deep\n"
    assert node.simulate_get(f"/jobs/{task}/files/leak").status_code == 403
    assert node.simulate_get(f"/jobs/{task}/files/etc/passwd").status_code == 403
    assert node.simulate_get(f"/jobs/{task}/files/nothing").status_code == 404
    assert node.simulate_get(f"/jobs/{task + 1}/files/sub/deep.txt").status_code == 404
    assert node.simulate_get(f"/jobs/{task}/log", params={"tail": "x"}).status_code == 400
    assert node.simulate_get(f"/jobs/{task}/log", params={"offset": "4", "tail": "1"}).text == "two\nthree\n"
    assert node.simulate_get(f"/retrieve_partial/{task}").status_code == 200



def test_a_task_has_one_partial_zip_made_at_a_time(node, monkeypatch):
    """Each partial zip is a whole copy of the folder on the node's disk: a second one of the same
    task while the first is made gets 429, and the first is served."""
    node, task = node
    from web import task_follow
    started, release = threading.Event(), threading.Event()
    real = task_follow.zip_folder

    def slow_zip(folder, path):
        started.set()
        assert release.wait(10)
        return real(folder, path)

    monkeypatch.setattr(task_follow, "zip_folder", slow_zip)
    first = []
    worker = threading.Thread(target=lambda: first.append(node.simulate_get(f"/retrieve_partial/{task}")))
    worker.start()
    assert started.wait(10)
    busy = node.simulate_get(f"/retrieve_partial/{task}")
    release.set()
    worker.join(10)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "5"
    assert first[0].status_code == 200 and first[0].content[:2] == b"PK"
    assert node.simulate_get(f"/retrieve_partial/{task}").status_code == 200  # free again

@pytest.fixture
def server(tmp_path, clean_database):
    config = ServerConfig(data_dir=str(tmp_path / "data"), services=(ServiceConfig("example"),))
    return falcon.testing.TestClient(server_app.create_app(config, StandInGateway(), threading.Event()))


def placed(job_id: int, state: str, executor: str | None = None) -> None:
    with db_session:
        row = Job[job_id]
        row.state, row.executor, row.remote_id, row.attempts = state, executor, "1" if executor else None, 1


def test_the_server_answers_by_the_jobs_state_and_503_when_its_executor_does_not_answer(server):
    queued, running, cancelled, cleaned = (new_job(1) for _ in range(4))
    placed(running, "Running", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    placed(cancelled, "Cancelled")
    placed(cleaned, "Cleaned")

    assert server.simulate_get(f"/jobs/{queued}/log").status_code == 409
    unreachable = server.simulate_get(f"/jobs/{running}/log")
    assert unreachable.status_code == 503 and "did not answer" in unreachable.json["description"]
    assert server.simulate_get(f"/download_partial/{running}").status_code == 503
    assert server.simulate_get(f"/jobs/{cancelled}/files/run.sh").status_code == 410  # it never ran
    assert server.simulate_get(f"/jobs/{cleaned}/log").status_code == 410
    assert server.simulate_get(f"/jobs/{queued}/files/..%2Frun.sh").status_code == 400


def test_a_file_growing_while_it_is_sent_is_sent_as_it_was_measured():
    assert b"".join(sent(io.BytesIO(b"x" * 200_000), 150_000)) == b"x" * 150_000
