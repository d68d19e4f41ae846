"""Pieces both Falcon apps use: the ping resource, id parsing, zip streaming, app options, the
bounded JSON body reader."""
from __future__ import annotations

import errno
import json
import logging
import os

import falcon

from storage import database

log = logging.getLogger("orchestrator.web")

MAX_ID = 2**63 - 1
#: The largest JSON body either app reads. The largest honest ones are an executor's: a heartbeat
#: lists the tasks it holds (about 30 bytes each: 123 KB for 4,096 slots' worth, 4 MB for the
#: 100,000 the server accepts at most), a report batch at most 100 events with a 4,000-byte stderr
#: tail and a 1,000-character reason each (3 MB if every character needs a \u escape). 8 MiB is
#: twice that, and bounds the memory a stranger's body can take before it is refused.
MAX_JSON_BYTES = 8 * 1024 * 1024
#: The page size of the portal's paged lists (GET /jobs, GET /events): by default, and at most.
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class BoundedJSON(falcon.media.JSONHandler):
    """JSON request bodies of at most `max_bytes` (413 above), and 400 for any body that does not
    parse: falcon's own handler reads a body of any size and answers 500 to one nested too deeply
    for the parser (RecursionError)."""

    def __init__(self, max_bytes: int = MAX_JSON_BYTES):
        super().__init__()
        self.max_bytes = max_bytes

    def deserialize(self, stream, content_type, content_length):
        # NOTE: a body sent without a length (chunked) is read only up to one byte past the cap.
        if content_length is not None and content_length > self.max_bytes \
                or len(data := stream.read(self.max_bytes + 1)) > self.max_bytes:
            raise falcon.HTTPContentTooLarge(
                title="Body too large",
                description=f"a JSON body may have at most {self.max_bytes} bytes; this one has more.")
        if not data:
            raise falcon.MediaNotFoundError("JSON")
        try:
            return json.loads(data.decode())
        except RecursionError:
            raise falcon.HTTPBadRequest(
                title="Invalid JSON",
                description="the JSON body is nested too deeply to parse; send objects and lists nested a "
                            "few levels deep, as the API describes.") from None
        except ValueError as exc:
            raise falcon.MediaMalformedError("JSON") from exc


class Ping:
    """`GET /`: the original's liveness answer."""

    def on_get(self, req, resp):
        resp.media = {"message": "pong"}

    on_head = on_get


class WhileActorsRestart:
    """Middleware: while the node's actor system is being rebuilt (actors/runtime/watchdog.py),
    every request is answered 503 with Retry-After: the rebuild forks the new system's processes
    from this one once no request is being answered (a fork while a thread holds a database lock
    would leave it held in every actor)."""

    RETRY_AFTER = 5

    def __init__(self, gateway):
        self.gateway = gateway

    def process_request(self, req, resp):
        why = self.gateway.closed
        if why is None:
            return
        if req.path == "/health":  # its own shape, without the database it must not touch now
            resp.status = falcon.HTTP_503
            resp.set_header("Retry-After", str(self.RETRY_AFTER))
            resp.media = {"status": "restarting", "database": "unknown", "actors": "restarting", "reason": why}
            resp.complete = True
            return
        raise falcon.HTTPServiceUnavailable(title="Restarting", retry_after=self.RETRY_AFTER,
                                            description=f"{why}; send it again in a few seconds.")


def positive_int(text: str, limit: int = MAX_ID) -> int | None:
    """`text` as an integer in [1, limit] (plain ASCII digits only), or None."""
    if not text.isdigit() or not text.isascii() or len(text) > 19 or not 0 < int(text) <= limit:
        return None
    return int(text)


def parse_id(raw: str, what: str = "job id", limit: int = MAX_ID) -> int:
    digits, dot, fraction = raw.partition(".")
    if dot and fraction and set(fraction) == {"0"}:
        raw = digits  # JSON's 42.0 is the integer 42
    value = positive_int(raw, limit)
    if value is None:
        bound = "" if limit == MAX_ID else f" up to {limit}"
        raise falcon.HTTPBadRequest(title="Invalid id",
                                    description=f"{what} must be a positive integer{bound}, got {raw[:40]!r}.")
    return value


def send_zip(resp: falcon.Response, path: str, download_name: str, *, with_body: bool) -> bool:
    """Answer 200 with a zip file (HEAD: the same headers, no body); False if the file is gone."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return False
    resp.status = falcon.HTTP_200
    resp.content_type = "application/zip"
    resp.downloadable_as = download_name
    resp.content_length = os.fstat(handle.fileno()).st_size
    if with_body:
        resp.stream = handle
    else:
        handle.close()
    return True


def new_app(middleware: list, max_parts: int) -> falcon.App:
    """A Falcon app whose every error is a JSON body with a title and a description."""
    app = falcon.App(middleware=middleware)
    app.req_options.media_handlers[falcon.MEDIA_JSON] = BoundedJSON()
    multipart = app.req_options.media_handlers[falcon.MEDIA_MULTIPART]
    multipart.parse_options.max_body_part_count = max_parts
    app.add_error_handler(falcon.HTTPError, _described)
    app.add_error_handler(OSError, _storage_error)
    app.add_error_handler(Exception, _internal_error)
    return app


def _described(req, resp, error: falcon.HTTPError, params) -> None:
    """Falcon's own errors (unknown route, wrong method) say what was wrong and what is accepted."""
    if error.description is None:
        if error.status == falcon.HTTP_404:
            error.description = f"there is no {req.path}; the API is described at /api-docs/openapi.json."
        elif error.status == falcon.HTTP_405:
            error.description = f"{req.method} is not accepted on {req.path}; see /api-docs/openapi.json."
        else:
            error.description = error.title or "the request was refused."
    resp.status = error.status
    resp.media = error.to_dict()
    for name, value in (error.headers or {}).items():
        resp.set_header(name, value)


def _storage_error(req, resp, error: OSError, params) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        log.error("out of disk space: %s", error)
        _described(req, resp, falcon.HTTPInsufficientStorage(
            title="Insufficient storage", description="the server's disk is full; nothing was stored. Try later."),
            params)
        return
    _internal_error(req, resp, error, params)


def _database_locked(req, resp, error: Exception, params) -> None:
    """SQLite's write lock held elsewhere (another process in a long transaction) is a wait, not a
    fault: 503 with Retry-After, nothing changed (the transaction was rolled back)."""
    log.error("the database stayed locked for %d s answering %s %s", database.BUSY_TIMEOUT_MS // 1000,
              req.method, req.path)
    _described(req, resp, falcon.HTTPServiceUnavailable(
        title="Database busy", retry_after=10,
        description="the database is locked by another process; nothing was stored. Send it again shortly."),
        params)


def _internal_error(req, resp, error: Exception, params) -> None:
    if database.is_locked(error):  # NOTE: Pony wraps it in one of several exceptions of its own
        _database_locked(req, resp, error, params)
        return
    log.exception("unexpected error answering %s %s", req.method, req.path)
    resp.status = falcon.HTTP_500
    resp.media = {"title": "Internal error", "description": "the server failed answering; it has been logged."}
