"""What a path's job id names, the one answer for a job a caller may not see, and a caller's
cancel of a job.

Used by every resource of the server's web API that takes a job id (server main process).
"""
from __future__ import annotations

import logging

import falcon

from actors.messages import CancelJob
from storage import job_events, jobs, public_ids
from storage.clock import utcnow
from web.common import parse_id, positive_int

log = logging.getLogger("orchestrator.web")


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


def cancel(gateway, ref: int | str, portal: str | None) -> tuple[dict, bool] | None:
    """Cancel the job `ref` on `portal`'s request (`POST /jobs/{id}/cancel`, the TES cancel): its
    `cancelled` event, and its dispatcher told to stop it where it runs.

    Returns:
        None if `portal` sees no such job; else (its view, whether this call cancelled it: False
        when it had ended already).
    """
    result = jobs.cancel(ref, portal, utcnow())
    if result is None:
        return None
    view, cancelled = result
    if cancelled is not None:
        job_events.ended(log, cancelled)
        gateway.post(CancelJob(cancelled.id), role=f"dispatcher:{cancelled.service}")
    return view, cancelled is not None
