"""The executor node: what a script leaves behind, and what a restart of the node remembers."""
from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

import requests

from tests.harness import job, results, submit, wait_for_outcome, wait_until


def test_links_pipes_and_unreadable_files_a_script_leaves_do_not_break_its_results(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})

    job_id = submit(server, "ln -s /etc/passwd stolen\nln -s /nonexistent dangling\nmkfifo pipe\n"
                            "mkdir -p sub/deeper\necho nested > sub/deeper/file.txt\necho ok > out.txt")

    assert wait_for_outcome(server, job_id) == 200
    names = results(server, job_id).namelist()
    assert "out.txt" in names and "sub/deeper/file.txt" in names
    assert not {"stolen", "dangling", "pipe"} & set(names)


def test_a_job_whose_script_leaves_links_pipes_odd_names_old_dates_and_a_2_gib_hole_completes_with_its_files(
        cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})
    data = executor.folder / "data"

    job_id = submit(server, f"""
ln -s /etc/passwd passwd
ln -s /etc etc
ln -s {data} node_data
ln -s ../.. up
mkfifo pipe
python3 -c "import socket; socket.socket(socket.AF_UNIX).bind('sock')"
mknod null c 1 3 2> /dev/null || true  # refused in the sandbox (no capabilities)
printf latin1 > "$(printf 'caf\\351.txt')"
printf literal > 'caf\\xe9.txt'
printf bytes > "$(printf '\\377\\376')"
echo old > old.txt
touch -d @0 old.txt
truncate -s 2G sparse.bin
printf tail >> sparse.bin
mkdir -p sub/deeper
echo nested > sub/deeper/file.txt
echo ok > out.txt""")

    assert wait_for_outcome(server, job_id, 60) == 200
    assert job(server, job_id)["status"] == "Completed"
    archive = results(server, job_id)
    names = set(archive.namelist())
    assert names == {"run.sh", "stdout.log", "stderr.log", "out.txt", "sub/deeper/file.txt", "old.txt", "sparse.bin",
                     "caf\\xe9.txt", "caf\\xe9~1.txt", "\\xff\\xfe"}, names
    assert [archive.read(n) for n in ("caf\\xe9.txt", "caf\\xe9~1.txt", "\\xff\\xfe", "old.txt")] == \
        [b"literal", b"latin1", b"bytes", b"old\n"]
    secrets = {Path("/etc/passwd").read_bytes(), (data / "executor.sqlite").read_bytes()}
    assert not secrets & {archive.read(n) for n in names - {"sparse.bin"}}
    sparse = archive.getinfo("sparse.bin")
    # NOTE: reading 2 GiB back takes seconds; the unit tests do, here its size and CRC must be right.
    assert sparse.file_size == (2 << 30) + 4 and sparse.CRC == zlib.crc32(b"tail", zeros_crc(2 << 30))
    assert sparse.compress_size < sparse.file_size // 500


def zeros_crc(size: int) -> int:
    crc, zeros = 0, bytes(1 << 20)
    for _ in range(size >> 20):
        crc = zlib.crc32(zeros, crc)
    return crc


def test_a_zip_the_executor_cannot_make_answers_409_and_the_job_completes_once_it_can(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})
    blocker = executor.folder / "data" / "zips"
    blocker.write_text("a file where the node keeps its zips")  # an unforeseen failure of any zip

    job_id = submit(server, "echo ok > out.txt")

    def ended():
        response = requests.get(f"{executor.url}/retrieve/1", timeout=10)
        return None if response.status_code in (202, 404) else (response,)  # NOTE: a 4xx response is falsy
    (refused,) = wait_until(ended, 20, message="the task to end")
    assert refused.status_code == 409 and refused.json()["title"] == "Results not zipped"
    assert f"into {blocker}/1.zip failed" in executor.log()
    wait_until(lambda: "could not fetch the results of job" in server.log(), 20, message="the server to log it")
    assert job(server, job_id)["status"] == "Running"  # the server keeps it, and fetches again at its sweep
    blocker.unlink()
    assert wait_for_outcome(server, job_id, 30) == 200
    assert results(server, job_id).read("out.txt") == b"ok\n"


def test_what_a_script_leaves_running_in_the_background_is_stopped_when_it_ends(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})

    job_id = submit(server, "(exec sleep 30) &\necho $! > child.pid\necho started")

    assert wait_for_outcome(server, job_id) == 200
    child = int(results(server, job_id).read("child.pid"))
    # NOTE: pids are reused quickly here: a live process under that pid must also be a `sleep 30`.
    wait_until(lambda: not _is_sleeping(child), 10, 0.05, "the background child to be stopped")


def _is_sleeping(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline, open(f"/proc/{pid}/stat") as stat:
            return cmdline.read().split(b"\0")[:2] == [b"sleep", b"30"] and " Z " not in stat.read()
    except OSError:
        return False


def test_a_restarted_executor_still_answers_for_the_tasks_it_finished_and_drops_half_written_zips(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})
    job_id = submit(server, "echo kept > out.txt")
    assert wait_for_outcome(server, job_id) == 200
    before = executor.task(1)
    half_written = executor.folder / "data" / "zips" / "2.zip.0123abcd.part"  # as a zip cut off by a stop

    executor.stop()
    half_written.write_bytes(b"PK\x03\x04")
    executor.start()

    assert not half_written.exists()

    after = executor.task(1)
    assert after == before and after["state"] == "finished" and after["job_id"] == job_id
    zipped = zipfile.ZipFile(io.BytesIO(requests.get(f"{executor.url}/retrieve/1", timeout=10).content))
    assert zipped.read("out.txt") == b"kept\n"


def test_stopping_an_executor_stops_its_running_scripts_and_its_restart_reports_them_lost(cluster, tmp_path):
    executor = cluster.executor("example", sandbox="none")  # the script marks its first run outside its folder
    server = cluster.server({"example": {"clients": executor.url}})
    first_run = tmp_path / "first-run"
    # The first run sleeps far longer than stop() waits; a second run ends at once.
    job_id = submit(server, f"if [ ! -e {first_run} ]; then touch {first_run}; sleep 60; fi\necho done > out.txt")
    wait_until(first_run.exists, 10, message="the script to run")  # Running: its launcher runs, the script soon

    executor.stop(timeout=10)  # fails the test unless every process of the node, script included, is gone

    assert server.health().status_code == 200
    executor.start()
    task = executor.task(1)
    assert task["state"] == "lost"
    # The server hears of the loss and runs the job again: it ends completed, on attempt 2.
    assert wait_for_outcome(server, job_id, 60) == 200
    assert job(server, job_id)["attempts"] == 2
