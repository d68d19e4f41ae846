"""zip_folder: a task's folder, as an untrusted run.sh left it, into a zip that cannot hurt the node.

Run on an executor node through web/zip_once.py: by the ExecutorActor's process when a task's
script ended, or by the web process when the server retrieves results nobody zipped yet
(web/executor_app.py `Retrieve`); web/zip_writer.py writes the archive. What the script left
decides what goes in, never how the walk behaves:

- Only regular files are taken and only directories entered, each opened by its one name under its
  parent's descriptor with O_NOFOLLOW and then checked with fstat: a link to a file or a directory
  (/etc, the node's data folder) is never followed, and an entry swapped for a link or a pipe
  between listing and opening is caught by the check.
- Opening never waits (O_NONBLOCK): FIFOs, sockets and devices are skipped. Other file systems are
  not entered: a mount inside the folder could answer slowly, or never.
- Any name: bytes that are not UTF-8 are written as \\xNN, and a name that would then equal another
  of its directory gets ~1, ~2… before its extension.
- Any depth: the walk keeps a stack rather than recursing, never builds a path (so PATH_MAX does not
  apply), and holds at most OPEN_DIRS directory descriptors; the ancestors it closed are reopened
  through "..", and must be the very directories they were.
- What cannot be opened or read is left out whole; nothing in the folder makes the walk raise.
"""
from __future__ import annotations

import contextlib
import os
import stat
import uuid
from dataclasses import dataclass, field
from typing import Iterator

from web.zip_writer import MAX_NAME, Unreadable, ZipWriter

DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
#: Directory descriptors one walk holds at most, however deep the tree (nodes often allow 1,024 in all).
OPEN_DIRS = 64


def zip_folder(folder: str, destination: str) -> None:
    """Zip the regular files below `folder` into `destination` atomically (written aside, then renamed)."""
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    partial = f"{destination}.{uuid.uuid4().hex[:8]}.part"
    try:
        with open(partial, "wb") as handle:
            archive = ZipWriter(handle)
            for name, fd, info in _regular_files(folder):
                with contextlib.suppress(Unreadable):
                    archive.add(name, fd, info)
            archive.close()
        os.replace(partial, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)


@dataclass
class _Directory:
    #: None while closed to stay within OPEN_DIRS; reopened before it is needed again.
    fd: int | None
    identity: tuple[int, int]
    #: Its path in the zip: "" or ending in "/".
    prefix: str
    #: (name on disk, name in the zip) of the subdirectories still to enter, the next one last.
    pending: list[tuple[str, str]] = field(default_factory=list)


def _regular_files(folder: str) -> Iterator[tuple[str, int, os.stat_result]]:
    """(name in the zip, open descriptor, fstat) of each regular file below `folder`, depth first.

    A file's descriptor is closed when the next one is asked for.
    """
    try:
        top = os.open(folder, DIRECTORY)
    except OSError:
        return  # gone, or replaced by something that is not a directory: nothing to zip
    info = os.fstat(top)
    device = info.st_dev
    stack = [_Directory(top, (info.st_dev, info.st_ino), "")]
    try:
        yield from _files_of(stack[-1], device)
        while stack:
            current = stack[-1]
            if not current.pending:
                stack.pop()
                parent = stack[-1] if stack else None
                try:
                    if parent is not None and parent.fd is None:
                        parent.fd = _reopen_parent(current.fd, parent.identity)
                finally:
                    os.close(current.fd)
                if parent is not None and parent.fd is None:
                    return  # it is no longer where it was: what is left of it cannot be reached safely
                continue
            name, shown = current.pending.pop()
            opened = _open_directory(current.fd, name, device)
            if opened is None:
                continue
            stack.append(_Directory(*opened, f"{current.prefix}{shown}/"))
            if len(stack) > OPEN_DIRS:
                fall_out = stack[-OPEN_DIRS - 1]
                os.close(fall_out.fd)
                fall_out.fd = None
            yield from _files_of(stack[-1], device)
    finally:
        for directory in stack:
            if directory.fd is not None:
                os.close(directory.fd)


def _files_of(directory: _Directory, device: int) -> Iterator[tuple[str, int, os.stat_result]]:
    """Yield the directory's regular files; note its subdirectories in `directory.pending`."""
    files, subdirectories = [], []
    with contextlib.suppress(OSError):
        with os.scandir(directory.fd) as listing:
            for entry in listing:
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        subdirectories.append(entry.name)
                    elif entry.is_file(follow_symlinks=False):
                        files.append(entry.name)
    # NOTE: a file and a directory can share an escaped name, so both are named together.
    shown = _zip_names(files + subdirectories)
    directory.pending = [(name, shown[name]) for name in sorted(subdirectories, reverse=True)
                         if len(f"{directory.prefix}{shown[name]}/".encode()) < MAX_NAME]
    for name in sorted(files):
        zip_name = directory.prefix + shown[name]
        if len(zip_name.encode()) > MAX_NAME:
            continue
        try:
            fd = os.open(name, FILE, dir_fd=directory.fd)
        except OSError:
            continue
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_dev == device:
                yield zip_name, fd, info
        finally:
            os.close(fd)


def _open_directory(parent: int, name: str, device: int) -> tuple[int, tuple[int, int]] | None:
    """(descriptor, identity) of the subdirectory `name`, if it still is one on this file system."""
    try:
        fd = os.open(name, DIRECTORY, dir_fd=parent)
    except OSError:
        return None
    info = os.fstat(fd)
    if info.st_dev != device:
        os.close(fd)
        return None
    return fd, (info.st_dev, info.st_ino)


def _reopen_parent(child: int, identity: tuple[int, int]) -> int | None:
    """A new descriptor of `child`'s parent, if that still is the directory with `identity`."""
    try:
        fd = os.open("..", DIRECTORY, dir_fd=child)
    except OSError:
        return None
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != identity:
        os.close(fd)
        return None
    return fd


def _is_utf8(name: str) -> bool:
    """False for a name with bytes that are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        name.encode()
    except UnicodeEncodeError:
        return False
    return True


def _zip_names(names: list[str]) -> dict[str, str]:
    """Each name of one directory → its name in the zip: itself when it is UTF-8; otherwise its
    undecodable bytes written as \\xNN, with ~1, ~2… before the extension until no other name of
    the directory is the same."""
    taken = {name for name in names if _is_utf8(name)}
    shown = {name: name for name in taken}
    for name in sorted(set(names) - taken):
        escaped = os.fsencode(name).decode("utf-8", "backslashreplace")
        stem, extension = os.path.splitext(escaped)
        candidate, number = escaped, 0
        while candidate in taken:
            number += 1
            candidate = f"{stem}~{number}{extension}"
        taken.add(candidate)
        shown[name] = candidate
    return shown
