"""One zip of a task at a time (web/zip_once.py): retrieves that ask while it is being made are told
to come back, and a zip that failed is made afresh."""
from __future__ import annotations

import threading
import zipfile

import pytest

from tests.harness import wait_until
from web.result_zip import zip_folder
from web.zip_once import ZipFailed, ZipOnce


@pytest.fixture
def job(tmp_path) -> str:
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "out.txt").write_bytes(b"ok\n")
    return str(tmp_path / "job")


def test_a_zip_being_made_is_made_once_and_asks_meanwhile_are_told_to_come_back(job, tmp_path):
    release, calls = threading.Event(), []

    def slow_zip(folder: str, destination: str) -> None:
        calls.append(folder)
        assert release.wait(30)
        zip_folder(folder, destination)

    zips = ZipOnce(slow_zip, wait=0.05)
    destination = str(tmp_path / "zips" / "1.zip")

    assert [zips.ready(job, destination) for _ in range(3)] == [False, False, False]
    release.set()
    wait_until(lambda: zips.ready(job, destination), 10, message="the zip")

    assert calls == [job]
    assert zipfile.ZipFile(destination).read("out.txt") == b"ok\n"


def test_a_zip_that_failed_says_so_and_is_made_afresh_at_the_next_ask(job, tmp_path):
    calls = []

    def failing_once(folder: str, destination: str) -> None:
        calls.append(folder)
        if len(calls) == 1:
            raise OSError("the disk failed")
        zip_folder(folder, destination)

    zips = ZipOnce(failing_once, wait=10)
    destination = str(tmp_path / "zips" / "1.zip")

    with pytest.raises(ZipFailed, match="OSError"):
        zips.ready(job, destination)
    assert zips.ready(job, destination) is True
    assert len(calls) == 2


def test_the_node_s_two_processes_never_zip_one_folder_side_by_side(job, tmp_path):
    """The ExecutorActor starts the zip when the script ends; a retrieve in the web process
    meanwhile waits for that zip (the flock on <zip>.lock) and does not make another."""
    release, calls = threading.Event(), []

    def slow_zip(folder: str, destination: str) -> None:
        calls.append(folder)
        assert release.wait(30)
        zip_folder(folder, destination)

    actor, web = ZipOnce(slow_zip, wait=0.05), ZipOnce(slow_zip, wait=0.05)
    destination = str(tmp_path / "zips" / "1.zip")

    actor.start(job, destination)
    wait_until(lambda: calls, 10, message="the actor's zip to begin")
    assert web.ready(job, destination) is False
    release.set()
    wait_until(lambda: web.ready(job, destination), 10, message="the zip")

    assert calls == [job]
    assert zipfile.ZipFile(destination).read("out.txt") == b"ok\n"
