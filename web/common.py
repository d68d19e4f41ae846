"""Pieces both Falcon apps use: the ping resource, id parsing, zip streaming, app options."""
from __future__ import annotations

import os

import falcon

MAX_ID = 2**63 - 1


class Ping:
    """`GET /`: the seed's liveness answer."""

    def on_get(self, req, resp):
        resp.media = {"message": "pong"}

    on_head = on_get


def parse_id(raw: str, what: str = "job id") -> int:
    if not raw.isdigit() or not raw.isascii() or len(raw) > 19 or not 0 < int(raw) <= MAX_ID:
        raise falcon.HTTPBadRequest(title="Invalid id", description=f"{what} must be a positive integer, got {raw[:40]!r}.")
    return int(raw)


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


def new_app() -> falcon.App:
    app = falcon.App()
    multipart = app.req_options.media_handlers[falcon.MEDIA_MULTIPART]
    multipart.parse_options.max_body_part_count = 1024
    return app
