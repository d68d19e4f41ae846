"""`Client`: the orchestrator's portal API as Python calls (submit, status, wait, download, list,
cancel, log, events, services).

Runs in whatever process imports it (a portal's web workers, the `orchestrator` command). It keeps
no global state: each Client has its own requests.Session, so a Django or Flask app may hold one per
server (a Session is not meant to be shared across threads: one Client per thread, or per request).
Every failure, whether the server refused (its JSON `{title, description}`) or could not be reached,
raises OrchestratorError; but `wait`, which may last hours, asks again through an outage of up to
five minutes (a server restarting) before it gives up.
"""
from __future__ import annotations

import os
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Union

import requests
from requests_toolbelt import MultipartEncoder, MultipartEncoderMonitor

#: The states a job does not leave (but for Cleaned, once its retention period ends).
ENDED = frozenset({"Completed", "Failed", "Cancelled", "Cleaned"})
#: The filters `GET /jobs` accepts (`portal`: an operator's, or a portal's own name).
LIST_FILTERS = frozenset({"user_id", "service", "status", "group", "created_after", "created_before", "portal", "limit"})
#: HTTP statuses of a server (or its proxy) that is down or restarting: `wait` tries again.
PASSING = frozenset({502, 503, 504})
#: The longest pause between two tries of `wait` while the server cannot be reached.
MAX_RETRY_DELAY = 5.0


class OrchestratorError(Exception):
    """What went wrong, in one sentence (`str(error)`). `status` is the HTTP status the server
    answered (None when it could not be reached); `title` and `description` are its error body's."""

    def __init__(self, message: str, status: int | None = None, title: str | None = None,
                 description: str | None = None):
        super().__init__(message)
        self.status = status
        self.title = title
        self.description = description


class LogChunk(NamedTuple):
    """Bytes of a job's log, and `X-Log-Size`: where they end in the log. That is the log's size
    when read, but for an offset read the server cut at 1 MiB (then it is offset + len(data)): more
    may follow. A follower asks next for `offset=size`, and has all there is when an answer comes
    back empty (`Client.log_to_end`)."""
    data: bytes
    size: int


#: A file to upload: a path, or its name and content.
FileSpec = Union[str, os.PathLike, tuple[str, bytes]]


class Client:
    """The API of one orchestrator server, as one portal (`token`) sees it."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0,
                 session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # --- jobs ---------------------------------------------------------------------------------

    def submit(self, files: Iterable[FileSpec], service: str, user_id: int, callback_url: str | None = None,
               progress: Callable[[int, int], None] | None = None, *, priority: int | None = None,
               group: str | None = None, max_runtime: int | None = None) -> dict:
        """Upload a job: `files` are paths, or (name, bytes) pairs; one must be `run.sh`. The body
        is streamed (a file is never read whole into memory); `progress(sent, total)` is called as
        it goes. `priority` (-10..10) orders the user's own queued jobs, `group` names the set of
        users it counts for (runs_per_group), `max_runtime` stops it after that many seconds.
        Returns the job's view (with `queue` while it waits)."""
        fields: list[tuple[str, Any]] = []
        opened = []
        try:
            for spec in files:
                if isinstance(spec, tuple):
                    name, content = spec
                    fields.append(("file", (name, content, "application/octet-stream")))
                else:
                    try:
                        handle = open(spec, "rb")
                    except OSError as error:
                        raise OrchestratorError(f"cannot read {spec}: {error.strerror}.") from None
                    opened.append(handle)
                    fields.append(("file", (os.path.basename(spec), handle, "application/octet-stream")))
            fields += [("user_id", str(user_id)), ("service", service)]
            optional = {"callback_url": callback_url, "priority": priority, "group": group, "max_runtime": max_runtime}
            fields += [(name, str(value)) for name, value in optional.items() if value is not None]
            body = MultipartEncoder(fields)
            if progress is not None:
                body = MultipartEncoderMonitor(body, lambda monitor: progress(monitor.bytes_read, monitor.len))
            return self._call("POST", "/upload", data=body, headers={"Content-Type": body.content_type}).json()
        finally:
            for handle in opened:
                handle.close()

    def status(self, job_id) -> dict:
        """The job's view (`GET /jobs/{id}`), with `queue` while it has not started."""
        return self._call("GET", f"/jobs/{job_id}").json()

    def wait(self, job_id, poll: float = 1.0, timeout: float | None = None,
             on_change: Callable[[dict], None] | None = None, patience: float = 300.0) -> dict:
        """Poll the job until it has ended; its last view. `on_change(view)` is called with the
        first view and each that differs from the one before (status, position, why it waits).
        Past `timeout` seconds, OrchestratorError. A server that cannot be reached, or answers
        502/503/504 (restarting, behind a proxy), is asked again after a pause that doubles up to
        MAX_RETRY_DELAY; after `patience` seconds of such failures in a row, the last one is raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            view = self._status_despite_outages(job_id, poll, patience, deadline)
            if view != last and on_change is not None:
                on_change(view)
            last = view
            if view["status"] in ENDED:
                return view
            if deadline is not None and time.monotonic() >= deadline:
                raise OrchestratorError(f"job {job_id} had not ended after {timeout:g} s (it is {view['status']}).")
            time.sleep(poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic())))

    def _status_despite_outages(self, job_id, poll: float, patience: float, deadline: float | None) -> dict:
        """`status`, asked again while the server is unreachable or passing, for `patience` seconds."""
        give_up = time.monotonic() + patience
        if deadline is not None:
            give_up = min(give_up, deadline)
        pause = max(poll, 0.1)
        while True:
            try:
                return self.status(job_id)
            except OrchestratorError as error:
                if error.status is not None and error.status not in PASSING:
                    raise
                if time.monotonic() >= give_up:
                    raise
            time.sleep(max(0.0, min(pause, give_up - time.monotonic())))
            pause = min(pause * 2, MAX_RETRY_DELAY)

    def download(self, job_id, dest_dir: str | os.PathLike, extract: bool = True) -> Path:
        """Fetch a completed job's results into `dest_dir` (made if missing): its files (the zip's
        entries), or with `extract=False` the zip itself as `<id>.zip`. Returns the folder, or the
        zip's path. A job not ended, or ended without results, raises OrchestratorError."""
        dest = Path(dest_dir)
        with self._call("GET", f"/download/{job_id}", stream=True) as response:
            if response.status_code == 202:
                raise OrchestratorError(f"job {job_id} has not ended yet.", status=202)
            if response.status_code == 204:
                view = self.status(job_id)
                raise OrchestratorError(f"job {job_id} has no results: it is {view['status']}"
                                        + (f" ({view['reason']})." if view.get("reason") else "."), status=204)
            dest.mkdir(parents=True, exist_ok=True)
            target = dest / f"{job_id}.zip"
            # NOTE: a zip to unpack goes to a temporary file, not into dest: a result file of the
            # same name would overwrite it while it is read.
            with (tempfile.TemporaryFile() if extract else open(target, "wb")) as out:
                try:
                    for block in response.iter_content(1 << 16):
                        out.write(block)
                except requests.RequestException as error:
                    raise self._unreachable(error) from None
                if not extract:
                    return target
                out.seek(0)
                with zipfile.ZipFile(out) as archive:
                    archive.extractall(dest)  # NOTE: it drops absolute paths and "..": nothing lands outside
        return dest

    def list(self, pages: int | None = None, **filters) -> Iterator[dict]:
        """Every job matching `filters` (user_id, service, status: one or a list, group, created_after,
        created_before, portal: an operator's, limit: the page size), newest first, page after
        page; only the first `pages` pages if given (`pages=1`: the newest `limit` jobs, one request)."""
        unknown = set(filters) - LIST_FILTERS
        if unknown:
            raise TypeError(f"unknown filter(s): {', '.join(sorted(unknown))}")
        params = {key: value for key, value in filters.items() if value is not None}
        read = 0
        while True:
            page = self._call("GET", "/jobs", params=params).json()
            read += 1
            yield from page["jobs"]
            if not page.get("next_cursor") or (pages is not None and read >= pages):
                return
            params["cursor"] = page["next_cursor"]

    def cancel(self, job_id) -> dict:
        """End a job that has not ended as Cancelled (409, an OrchestratorError, if it had); its view."""
        return self._call("POST", f"/jobs/{job_id}/cancel").json()

    def log(self, job_id, stream: str = "stdout", tail: int | None = None, offset: int | None = None) -> LogChunk:
        """A job's log while it runs: its last `tail` lines, or its bytes from `offset`."""
        params = {"stream": stream, "tail": tail, "offset": offset}
        response = self._call("GET", f"/jobs/{job_id}/log", params={k: v for k, v in params.items() if v is not None})
        return LogChunk(response.content, int(response.headers.get("X-Log-Size", len(response.content))))

    def log_to_end(self, job_id, stream: str = "stdout", offset: int = 0) -> Iterator[LogChunk]:
        """A job's log from `offset` to its end now, chunk after chunk (an answer holds at most
        1 MiB), until one comes back empty."""
        while True:
            chunk = self.log(job_id, stream, offset=offset)
            if not chunk.data:
                return
            yield chunk
            # NOTE: counted from what came, not X-Log-Size: right whatever the server says it is.
            offset += len(chunk.data)

    def events(self, after: str | None = None, limit: int | None = None) -> dict:
        """One page of this portal's job state changes since the cursor `after` (none: from the
        start): `{"events": [...], "next_cursor": ...}`."""
        params = {"after": after, "limit": limit}
        return self._call("GET", "/events", params={k: v for k, v in params.items() if v is not None}).json()

    def services(self) -> dict:
        """Per service: queued, active, recent figures, limits (and executors, for an operator)."""
        return self._call("GET", "/services").json()

    # --- the wire -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, self.url + path, timeout=self.timeout, **kwargs)
        except requests.RequestException as error:
            raise self._unreachable(error) from None
        if response.status_code >= 400:
            raise refusal(response)
        return response

    def _unreachable(self, error: requests.RequestException) -> OrchestratorError:
        if isinstance(error, requests.Timeout):
            why = f"no answer within {self.timeout:g} s"
        elif isinstance(error, requests.ConnectionError):
            why = "connection refused or lost"
        else:
            why = type(error).__name__
        return OrchestratorError(f"cannot reach the orchestrator at {self.url} ({why}).")


def refusal(response: requests.Response) -> OrchestratorError:
    """The server's error answer as an OrchestratorError: its description (or title), one sentence."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    title = body.get("title") if isinstance(body, dict) else None
    description = body.get("description") if isinstance(body, dict) else None
    message = description or title or f"the server answered {response.status_code} {response.reason}."
    if not message.endswith("."):
        message += "."
    return OrchestratorError(message, response.status_code, title, description)
