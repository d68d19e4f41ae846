"""What a path's job id names, and the one answer for a job a caller may not see.

Used by every resource of the server's web API that takes a job id (server main process).
"""
from __future__ import annotations

import falcon

from storage import public_ids
from web.common import parse_id, positive_int


def job_ref(raw: str, public: bool) -> int | str:
    """What a path's job id names: with tokens (`public`) a public id, or a number, which names only
    a job created before public ids existed; without tokens, a number. 400 when it is neither."""
    if public and public_ids.well_formed(raw):
        return raw
    if public and positive_int(raw) is None:
        raise falcon.HTTPBadRequest(title="Invalid id", description=f"a job id is {public_ids.DESCRIPTION}, as "
                                                                    f"POST /upload answered; got {raw[:40]!r}.")
    return parse_id(raw)


def unknown_job(raw: str) -> falcon.HTTPNotFound:
    """The one answer for a job that does not exist and for another portal's job, alike."""
    return falcon.HTTPNotFound(title="Unknown job", description=f"there is no job {raw}.")
