"""Zipping a task's folder (web/result_zip.py) on temp folders: whatever a script left, the zip holds
its regular files, follows no link, never blocks, and never raises."""
from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import zipfile
from pathlib import Path

import pytest

from tests.harness import wait_until
from web.result_zip import zip_folder
from web.zip_writer import ZipWriter

SECRET = b"root:x:0:0:the node's own secret\n"


@pytest.fixture
def job(tmp_path) -> Path:
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "out.txt").write_bytes(b"result\n")
    return folder


@pytest.fixture
def outside(tmp_path) -> Path:
    """A folder outside the job, like /etc or the node's data folder, with a secret in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_bytes(SECRET)
    return folder


def zipped(folder: Path, tmp_path: Path, *, testzip: bool = True) -> zipfile.ZipFile:
    """The zip of `folder`; unless told otherwise, every member's CRC is checked on the way."""
    destination = tmp_path / "zips" / "1.zip"
    zip_folder(str(folder), str(destination))
    archive = zipfile.ZipFile(destination)
    assert not testzip or archive.testzip() is None
    return archive


def contents(archive: zipfile.ZipFile) -> dict[str, bytes]:
    return {name: archive.read(name) for name in archive.namelist()}


def swap_after_the_look(monkeypatch, swaps: dict[str, callable]) -> None:
    """Replace an entry the moment a zipper has looked at it and not yet opened it: after its
    os.lstat, or before it opens it (os.open) or lists it (os.scandir) by name. Each swap runs once."""
    pending = dict(swaps)

    def swap(path) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            action = pending.pop(os.path.basename(os.fsdecode(path)), None)
            if action:
                action()

    real_lstat, real_open, real_scandir = os.lstat, os.open, os.scandir

    def lstat(path, *args, **kwargs):
        result = real_lstat(path, *args, **kwargs)
        swap(path)
        return result

    def open_(path, *args, **kwargs):
        swap(path)
        return real_open(path, *args, **kwargs)

    def scandir(path=".", *args, **kwargs):
        swap(path)
        return real_scandir(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", lstat)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "scandir", scandir)


def replace_with(path: Path, make) -> callable:
    """A swap: `path` goes, and `make(path)` puts something else under its name."""
    def action():
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        make(path)
    return action


def test_links_to_a_file_or_a_directory_outside_are_never_followed_even_when_swapped_in_after_the_look(
        job, outside, tmp_path, monkeypatch):
    (job / "passwd").symlink_to(outside / "secret")
    (job / "etc").symlink_to(outside)
    (job / "relative").symlink_to("../outside")
    (job / "late.txt").write_bytes(b"mine\n")
    (job / "late_dir").mkdir()
    (job / "late_dir" / "inner.txt").write_bytes(b"mine\n")
    swap_after_the_look(monkeypatch, {
        "late.txt": replace_with(job / "late.txt", lambda p: p.symlink_to(outside / "secret")),
        "late_dir": replace_with(job / "late_dir", lambda p: p.symlink_to(outside)),
    })

    archive = zipped(job, tmp_path)

    assert contents(archive) == {"out.txt": b"result\n"}


def make_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))


def make_device(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers


def zip_within(folder: Path, destination: Path, seconds: float, fifos: list[Path]) -> None:
    """zip_folder, failing the test if it is still blocked after `seconds` (then unblocked)."""
    worker = threading.Thread(target=zip_folder, args=(str(folder), str(destination)), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for fifo in fifos:  # a blocked open of a FIFO returns once a writer comes and goes
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        worker.join(seconds)
        pytest.fail(f"zipping blocked for {seconds} s")


def test_pipes_sockets_and_devices_never_block_the_zip_and_are_left_out_even_when_swapped_in(
        job, tmp_path, monkeypatch):
    as_root = os.geteuid() == 0
    os.mkfifo(job / "pipe")
    make_socket(job / "sock")
    for name in ("late_pipe", "late_dev"):
        (job / name).write_bytes(b"mine\n")
    swaps = {"late_pipe": replace_with(job / "late_pipe", os.mkfifo)}
    if as_root:  # only root may create device nodes
        make_device(job / "dev")
        swaps["late_dev"] = replace_with(job / "late_dev", make_device)
    else:
        (job / "late_dev").unlink()
    swap_after_the_look(monkeypatch, swaps)
    destination = tmp_path / "zips" / "1.zip"

    zip_within(job, destination, 10, [job / "pipe", job / "late_pipe"])

    archive = zipfile.ZipFile(destination)
    assert archive.testzip() is None
    assert contents(archive) == {"out.txt": b"result\n"}


def test_names_that_are_not_utf8_get_printable_names_that_never_collide(job, tmp_path):
    raw = os.fsencode(job)
    names = [b"caf\xe9.txt", b"\xff\xfe", b"caf\\xe9.txt", b"caf\xe9~1.txt", "café.txt".encode()]
    for name in names:
        with open(os.path.join(raw, name), "wb") as handle:
            handle.write(repr(name).encode())
    os.mkdir(os.path.join(raw, b"dir\xff"))
    with open(os.path.join(raw, b"dir\xff", b"\xe9"), "wb") as handle:
        handle.write(b"nested")

    archive = zipped(job, tmp_path)

    found = contents(archive)
    assert sorted(found.values()) == sorted([b"result\n", b"nested", *(repr(n).encode() for n in names)])
    assert len(set(found)) == len(found) == len(names) + 2
    assert all(name.isprintable() for name in found)
    assert found["caf\\xe9.txt"] == repr(b"caf\\xe9.txt").encode()  # a real name keeps its own
    assert found["café.txt"] == repr("café.txt".encode()).encode()
    assert found["\\xff\\xfe"] == repr(b"\xff\xfe").encode()
    assert found["dir\\xff/\\xe9"] == b"nested"
    if shutil.which("unzip"):
        unpacked = tmp_path / "unpacked"
        subprocess.run(["unzip", "-q", archive.filename, "-d", str(unpacked)], check=True, timeout=30)
        assert {p.relative_to(unpacked).as_posix(): p.read_bytes() for p in unpacked.rglob("*") if p.is_file()} == found


def test_files_dated_where_a_zip_cannot_go_are_zipped_with_the_nearest_date_it_can_hold(job, tmp_path):
    for name, when in (("epoch.txt", 0), ("before.txt", -86400 * 400), ("far.txt", 2**33)):
        (job / name).write_bytes(name.encode())
        os.utime(job / name, (when, when))

    archive = zipped(job, tmp_path)

    assert archive.read("epoch.txt") == b"epoch.txt" and archive.read("before.txt") == b"before.txt"
    assert archive.getinfo("epoch.txt").date_time[0] == 1980
    assert archive.getinfo("far.txt").date_time[0] == 2107


def make_deep(top: Path, depth: int) -> None:
    """`depth` nested directories d/d/d/…, a file at every 500th level and at the bottom."""
    fd = os.open(top, os.O_RDONLY)
    try:
        for level in range(1, depth + 1):
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
            if level % 500 == 0 or level == depth:
                with open(os.open("f.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as handle:
                    handle.write(f"level {level}\n")
    finally:
        os.close(fd)


def remove_deep(top: Path) -> None:
    """shutil.rmtree recurses once per level, so a tree this deep is removed by hand, bottom up."""
    fd, depth = os.open(top, os.O_RDONLY), 0
    while "d" in os.listdir(fd):
        inner = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd, depth = inner, depth + 1
    for _ in range(depth):
        for name in os.listdir(fd):
            os.unlink(name, dir_fd=fd)
        parent = os.open("..", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = parent
        os.rmdir("d", dir_fd=fd)
    os.close(fd)


@pytest.mark.slow
def test_a_tree_thousands_of_directories_deep_is_zipped_whole(job, tmp_path):
    try:  # NOTE: a tree this deep left behind would break pytest's own clean-up of its temp folders
        make_deep(job, 3000)
        archive = zipped(job, tmp_path)
    finally:
        remove_deep(job)

    found = contents(archive)
    assert found.pop("out.txt") == b"result\n"
    assert found == {"d/" * level + "f.txt": f"level {level}\n".encode() for level in (500, 1000, 1500, 2000, 2500, 3000)}


def zip_as_nobody(folder: Path, destination: Path) -> None:
    """zip_folder in a forked child that gave up root (which reads anything), as an unprivileged node."""
    parent = folder.parent
    parent.chmod(0o711)
    destination.parent.mkdir()
    destination.parent.chmod(0o777)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.chdir(parent)  # NOTE: nobody may not search the folders above this one
            os.setgid(65534)
            os.setuid(65534)
            zip_folder(folder.name, os.path.relpath(destination, parent))
            code = 0
        finally:
            os._exit(code)
    def ended():
        waited, status = os.waitpid(pid, os.WNOHANG)
        return (status,) if waited else None
    (status,) = wait_until(ended, 60, message="the zip as nobody")
    assert os.waitstatus_to_exitcode(status) == 0


def test_unreadable_files_and_directories_are_left_out_and_the_rest_is_zipped(job, tmp_path):
    (job / "locked.txt").write_bytes(b"no")
    (job / "locked").mkdir()
    (job / "locked" / "inside.txt").write_bytes(b"no")
    (job / "open").mkdir()
    (job / "open" / "kept.txt").write_bytes(b"kept")
    (job / "locked.txt").chmod(0)
    (job / "locked").chmod(0)
    destination = tmp_path / "zips" / "1.zip"

    if os.geteuid() == 0:
        zip_as_nobody(job, destination)
    else:
        zip_folder(str(job), str(destination))

    (job / "locked").chmod(0o755)
    archive = zipfile.ZipFile(destination)
    assert archive.testzip() is None
    assert contents(archive) == {"out.txt": b"result\n", "open/kept.txt": b"kept"}


@pytest.fixture
def in_memory(tmp_path) -> Path:
    """A folder on tmpfs when the machine has one: a shared disk can take 30 s to create 50,000 files."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm", prefix="orchestrator-test-") as folder:
        yield Path(folder)


@pytest.mark.slow
def test_50_000_files_are_zipped(in_memory):
    job = in_memory / "job"
    for group in range(50):
        (job / f"g{group:02d}").mkdir(parents=True)
        for n in range(1000):
            (job / f"g{group:02d}" / f"{n}.txt").write_bytes(b"%d\n" % (group * 1000 + n))

    archive = zipped(job, in_memory)

    assert len(archive.namelist()) == 50_000
    assert archive.read("g42/17.txt") == b"42017\n"


@pytest.mark.slow
def test_a_4_gib_sparse_file_round_trips_and_its_holes_cost_a_thousandth_of_their_size(job, tmp_path):
    random = os.urandom(3 << 20)
    text = b"".join(b"ATOM %6d CA ALA %8.3f\n" % (n, n / 7) for n in range(100_000))
    big = job / "big.bin"
    with open(big, "wb") as handle:
        handle.truncate(4 << 30)
        handle.seek((1 << 30) + 123)
        handle.write(random)
        handle.seek((3 << 30) + 4567)
        handle.write(text)
        handle.seek((4 << 30) - 3)
        handle.write(b"end")

    archive = zipped(job, tmp_path, testzip=False)  # the test reads it through itself

    info = archive.getinfo("big.bin")
    assert info.file_size == 4 << 30
    assert info.compress_size < info.file_size // 400  # holes ~1/1000; the random 3 MB as they are
    with archive.open(info) as member, open(big, "rb") as original:  # zipfile checks the CRC at the end
        while piece := member.read(16 << 20):
            assert piece == original.read(len(piece))
        assert original.read() == b""
    assert archive.read("out.txt") == b"result\n"


def test_data_that_stops_being_incompressible_is_deflated_again(job, tmp_path):
    random = os.urandom(20 << 20)  # pieces stored in a row: every 8th is tried again
    text = b"".join(b"line %d of a log\n" % n for n in range(1_200_000))
    (job / "mixed.bin").write_bytes(random + text)

    archive = zipped(job, tmp_path)

    info = archive.getinfo("mixed.bin")
    assert archive.read(info) == random + text
    assert info.compress_size < len(random) + len(text) // 2


def write_zip(destination: Path, source: Path, names, start: int = 0) -> zipfile.ZipFile:
    """`source` under each of `names`, zipped by ZipWriter from `start` in the file on; read back."""
    fd = os.open(source, os.O_RDONLY)
    try:
        with open(destination, "wb") as out:
            out.seek(start)
            archive = ZipWriter(out)
            for name in names:
                archive.add(name, fd, os.fstat(fd))
            archive.close()
    finally:
        os.close(fd)
    return zipfile.ZipFile(destination)


@pytest.mark.slow
def test_more_than_65_535_members_get_zip64_end_records(job, tmp_path):
    with write_zip(tmp_path / "many.zip", job / "out.txt", (f"{n}.txt" for n in range(70_000))) as archive:
        assert len(archive.infolist()) == 70_000
        assert archive.read("69999.txt") == b"result\n"


def test_members_past_4_gib_into_the_archive_get_zip64_offsets(job, tmp_path):
    # NOTE: the 5 GiB before the archive are a hole, as if that many bytes of members came first.
    with write_zip(tmp_path / "far.zip", job / "out.txt", ["out.txt"], start=5 << 30) as archive:
        assert archive.getinfo("out.txt").header_offset == 5 << 30
        assert archive.read("out.txt") == b"result\n"
