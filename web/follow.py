"""Following a job as it runs: `GET /jobs/{id}/files/{name}`, `GET /jobs/{id}/log`,
`GET /download_partial/{id}`.

Runs in the server's main process. While the job is on its executor (Submitted, Running) each call
is passed on to the executor that has its folder (web/task_follow.py there, with the cluster
secret) and its answer streamed back; once it ended, logs and files come from the result zip
here, so `logs ID` keeps working after the end, and from the executor when no zip was fetched (a
failed or cancelled job's folder stays there until its retention).

Answers beside the file's: 409 before the job started (Queued, Dispatching: a 2xx would read as an
empty log to a client that only checks for success, and 409 is what a call too early for the
job's state gets elsewhere, as cancel of an ended job); 410 once its data is gone (Cleaned, or no
longer on its executor); 503 when the executor does not answer, 502 when it answers with an error.
"""
from __future__ import annotations

import os
import zipfile
from typing import Iterator
from urllib.parse import quote

import falcon
import requests

from conf.settings import ServerConfig
from storage import jobs
from storage.states import TERMINAL, JobState
from web.common import send_zip
from web.folder_reads import CHUNK, Refused, components, content_type
from web.log_query import LogQuery, log_query, send_log
from web.job_refs import job_ref, unknown_job

NOT_STARTED = {JobState.QUEUED, JobState.DISPATCHING}
CONNECT_SECONDS = 3.05
#: How long an executor may take to begin its answer; a partial zip is made before its first byte.
READ_SECONDS = {"file": 15.0, "log": 15.0, "partial": 120.0}
#: Headers of the executor's answer passed on to the portal.
PASSED_ON = ("Content-Type", "Content-Length", "X-Log-Size")


class Follow:
    """The three routes; the job's state says where its folder is read (`locate`)."""

    def __init__(self, config: ServerConfig):
        self.public = bool(config.tokens)
        self.headers = {"Authorization": f"Bearer {config.cluster_secret}"} if config.cluster_secret else {}

    def on_get_file(self, req, resp, job_id, name):
        try:
            components(name)
        except Refused as exc:
            raise falcon.HTTPBadRequest(title="Invalid file name", description=str(exc)) from None
        ref, result = self.locate(req, job_id)
        if result:
            self.from_zip(resp, result, name, job_id)
        else:
            self.from_executor(resp, job_id, ref, f"/jobs/{ref.remote_id}/files/{quote(name)}", {}, "file")

    def on_get_log(self, req, resp, job_id):
        query = log_query(req)
        ref, result = self.locate(req, job_id)
        if result:
            self.log_from_zip(resp, result, query)
        else:
            self.from_executor(resp, job_id, ref, f"/jobs/{ref.remote_id}/log", query.params(), "log")

    def on_get_partial(self, req, resp, job_id):
        ref, result = self.locate(req, job_id)
        if not (result and send_zip(resp, result, f"job-{job_id}.zip", with_body=True)):
            self.from_executor(resp, job_id, ref, f"/retrieve_partial/{ref.remote_id}", {}, "partial")
            resp.downloadable_as = f"job-{job_id}-partial.zip"

    def locate(self, req, raw: str) -> tuple[jobs.JobRef, str | None]:
        """The job and its result zip if that is here (else its folder is read on its executor)."""
        found = jobs.whereabouts(job_ref(raw, self.public), req.context.portal)
        if found is None:
            raise unknown_job(raw)
        ref, result = found
        if ref.state is JobState.CLEANED:
            raise _gone(raw, ref.state)
        result = result if result and os.path.exists(result) else None
        if ref.state in NOT_STARTED or not result and not (ref.executor and ref.remote_id):
            if ref.state in TERMINAL:  # e.g. cancelled while queued: it never had a folder to read
                raise _gone(raw, ref.state)
            raise falcon.HTTPConflict(title="Not started",
                                      description=f"job {raw} is {ref.state.value}: it has no folder to read until "
                                                  "it is on an executor; ask again once it is Submitted or Running.")
        return ref, result

    def from_zip(self, resp, result: str, name: str, raw: str) -> None:
        archive = zipfile.ZipFile(result)
        try:
            member = archive.getinfo(name)
        except KeyError:
            archive.close()
            raise falcon.HTTPNotFound(title="No such file",
                                      description=f"job {raw}'s results hold no file {name[:80]!r}.") from None
        resp.content_type = content_type(name)
        resp.content_length = member.file_size
        resp.stream = _chunks(archive, archive.open(member))

    @staticmethod
    def log_from_zip(resp, result: str, query: LogQuery) -> None:
        with zipfile.ZipFile(result) as archive:
            try:
                member = archive.getinfo(query.file)
            except KeyError:
                send_log(resp, None, 0, query)
                return
            with archive.open(member) as handle:
                send_log(resp, handle, member.file_size, query)

    def from_executor(self, resp, raw: str, ref: jobs.JobRef, path: str, params: dict[str, str], kind: str) -> None:
        """Stream the executor's answer to `path`; its own 4xx pass on, everything else says what failed."""
        url = f"{ref.executor}{path}"
        try:
            upstream = requests.get(url, params=params, headers=self.headers, stream=True,
                                    timeout=(CONNECT_SECONDS, READ_SECONDS[kind]))
        except requests.RequestException as exc:
            raise falcon.HTTPServiceUnavailable(
                title="Executor unreachable", retry_after=5,
                description=f"job {raw} is on {ref.executor}, which did not answer "
                            f"({type(exc).__name__}); ask again shortly.") from None
        if upstream.status_code != 200:
            raise _failed(upstream, raw, ref)
        resp.status = falcon.HTTP_200
        for header in PASSED_ON:
            if header in upstream.headers:
                resp.set_header(header, upstream.headers[header])
        resp.stream = _chunks(upstream, upstream.raw)


def _chunks(owner, source) -> Iterator[bytes]:
    """`source`'s bytes, then `owner` (a zip or an executor's answer) closed, however the portal's
    request ends (the WSGI server closes this generator)."""
    try:
        while chunk := source.read(CHUNK):
            yield chunk
    finally:
        source.close()
        owner.close()


def _gone(raw: str, state: JobState) -> falcon.HTTPGone:
    return falcon.HTTPGone(title="Job data gone",
                           description=f"job {raw} is {state.value} and its folder is no longer kept.")


def _failed(upstream: requests.Response, raw: str, ref: jobs.JobRef) -> falcon.HTTPError:
    """The portal's answer to an executor's error: its 400, 403 and 404 of a file as they are (the
    name or the file is at fault); its 429 (busy zipping); a task it no longer has, 410; anything else, 502."""
    try:
        body = upstream.json()
    except ValueError:
        body = {}
    finally:
        upstream.close()
    body = body if isinstance(body, dict) else {}
    title, description = str(body.get("title", "")), str(body.get("description", ""))[:500]
    code = upstream.status_code
    if code == 410 or code == 404 and title == "Unknown task":
        return _gone(raw, ref.state)
    if code in (400, 403, 404):
        return falcon.HTTPError(falcon.code_to_http_status(code), title=title or "Refused", description=description)
    if code == 429:  # the node makes few partial zips at once (web/task_follow.py)
        return falcon.HTTPTooManyRequests(title=title or "Busy", description=description,
                                          retry_after=upstream.headers.get("Retry-After", "5"))
    return falcon.HTTPBadGateway(title="Executor error",
                                 description=f"job {raw}'s executor {ref.executor} answered {code}"
                                             f"{': ' + description if description else ''}; ask again later.")
