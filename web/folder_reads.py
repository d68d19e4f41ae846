"""Reading a job's folder while an untrusted run.sh may still write it: one file by a name inside it,
and a log's last lines or its bytes from an offset.

Run on an executor node (web/task_follow.py) for a running task, and on the server (web/follow.py)
for an ended job, whose logs it reads from the result zip with the same `read_tail` / `read_from`.
The job's script decides what its folder holds, never where a read goes:

- A name is one or more components joined by "/", none empty, "." or "..", and not absolute.
- Each component is opened under its parent's descriptor with O_NOFOLLOW (web/result_zip.py's
  flags): a link, to a file or a directory, is refused, never followed, so a `ln -s /etc/passwd x`
  serves nothing of the node. Only a regular file is served (O_NONBLOCK: a FIFO cannot hang it).
- A tail or an offset read returns at most MAX_READ bytes: a 10 GB log costs what 1 MiB does.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO, Iterator

from web.result_zip import DIRECTORY, FILE

#: The most bytes one log read answers (tail or offset).
MAX_READ = 1 << 20
#: The most lines a tail may ask for.
MAX_TAIL_LINES = 10_000
MAX_NAME = 4096
CHUNK = 1 << 16
LOGS = ("stdout", "stderr")


class Refused(ValueError):
    """The name is not one of a file inside the folder (bad name, a link, not a regular file)."""


def components(name: str) -> list[str]:
    """The name's components; Refused unless it names something inside the folder."""
    parts = name.split("/")
    if not name or len(name) > MAX_NAME or "\0" in name or name.startswith("/") \
            or any(part in ("", ".", "..") for part in parts):
        raise Refused(f"{name[:80]!r} is not a path inside the job's folder: give names separated by '/', "
                      "none empty, '.' or '..'.")
    return parts


def open_inside(folder: str, name: str) -> BinaryIO:
    """The regular file `name` below `folder`, open for reading, never through a link.

    FileNotFoundError when it is not there; Refused when it is a link or not a regular file."""
    parts = components(name)
    current = os.open(folder, DIRECTORY)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            try:
                opened = os.open(part, FILE if last else DIRECTORY, dir_fd=current)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    raise FileNotFoundError(name) from None
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise Refused(f"{name[:80]!r} goes through a link or a file: links are not followed.") from None
                raise Refused(f"{name[:80]!r} cannot be opened ({exc.strerror}).") from None
            os.close(current)
            current = opened
        if not stat.S_ISREG(os.fstat(current).st_mode):
            raise Refused(f"{name[:80]!r} is not a regular file.")
        handle = os.fdopen(current, "rb")
        current = -1
        return handle
    finally:
        if current >= 0:
            os.close(current)


def read_tail(handle: BinaryIO, size: int, lines: int) -> bytes:
    """The last `lines` lines of the first `size` bytes of `handle` (seekable), from at most the
    last MAX_READ bytes; a final newline ends the last line rather than starting another."""
    if lines <= 0 or size <= 0:
        return b""
    start = max(0, size - MAX_READ)
    handle.seek(start)
    data = handle.read(size - start)
    cut = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        cut = data.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1:]


def read_from(handle: BinaryIO, size: int, offset: int) -> bytes:
    """The bytes from `offset` up to `size` (at most MAX_READ of them)."""
    if offset >= size:
        return b""
    handle.seek(offset)
    return handle.read(min(MAX_READ, size - offset))


def sent(handle: BinaryIO, size: int) -> Iterator[bytes]:
    """The first `size` bytes of `handle`, then it closed: a file that grows while it is sent is sent
    as it was measured, its answer's Content-Length (the WSGI server would cut the rest, and warn)."""
    with handle:
        while size > 0 and (chunk := handle.read(min(CHUNK, size))):
            size -= len(chunk)
            yield chunk


def content_type(name: str) -> str:
    """A served file's type: a log is text, anything else bytes (the script decides what it holds)."""
    return "text/plain; charset=utf-8" if name.endswith(".log") else "application/octet-stream"
