"""`GET …/log?stream=stdout|stderr&tail=N` or `…&offset=B` (offset wins when both are given): the
query, and the text/plain answer.

Used by both nodes: the executor answers from the live log (web/task_follow.py), the server from
an ended job's result zip (web/follow.py), so a follower sees one behaviour wherever the log is.
`X-Log-Size` is where the answer ends in the log: its size when read, unless an offset read stopped
at web/folder_reads.MAX_READ; a follower asks next with offset=X-Log-Size and misses nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import falcon

from web.common import MAX_ID
from web.folder_reads import LOGS, MAX_TAIL_LINES, read_from, read_tail

DEFAULT_TAIL = 100


@dataclass(frozen=True)
class LogQuery:
    stream: str
    #: The last lines asked for; None for an offset read.
    tail: int | None
    offset: int | None

    @property
    def file(self) -> str:
        return f"{self.stream}.log"

    def params(self) -> dict[str, str]:
        """The query again, to pass on to an executor."""
        which = {"tail": self.tail} if self.offset is None else {"offset": self.offset}
        return {"stream": self.stream, **{k: str(v) for k, v in which.items()}}


def log_query(req: falcon.Request) -> LogQuery:
    stream = req.get_param("stream") or "stdout"
    if stream not in LOGS:
        raise falcon.HTTPBadRequest(title="Invalid stream", description=f"stream is stdout or stderr, got {stream[:40]!r}.")
    tail, offset = req.get_param("tail"), req.get_param("offset")
    # NOTE: with both, offset (a follower's) wins: the OpenAPI document cannot say "one or the other".
    if offset is not None:
        return LogQuery(stream, None, _number(offset, "offset", MAX_ID))
    return LogQuery(stream, DEFAULT_TAIL if tail is None else _number(tail, "tail", MAX_TAIL_LINES), None)


def _number(raw: str, name: str, limit: int) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > limit:
        raise falcon.HTTPBadRequest(title=f"Invalid {name}",
                                    description=f"{name} is an integer from 0 to {limit}, got {raw[:40]!r}.")
    return int(raw)


def send_log(resp: falcon.Response, handle: BinaryIO | None, size: int, query: LogQuery) -> None:
    """Answer the log's lines or bytes; `handle` None: no log yet (the script has not started)."""
    if handle is None:
        body, end = b"", 0
    elif query.offset is None:
        body, end = read_tail(handle, size, query.tail), size
    else:
        body = read_from(handle, size, query.offset)
        end = query.offset + len(body) if body else size
    resp.content_type = "text/plain; charset=utf-8"
    resp.set_header("X-Log-Size", str(end))
    resp.data = body
