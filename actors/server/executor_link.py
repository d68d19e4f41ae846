"""The server's HTTP calls to executor nodes: probe, submit, status, fetch results, delete.

The only module on the server that speaks the executor protocol. Uploads stream from disk and
results stream to disk, so no job's files are held in memory. It uses urllib3's thread-safe pool
directly: requests spends about twice the CPU per call, and a drain makes several calls per job.
"""
from __future__ import annotations

import json
import os
import uuid
from typing import Iterator

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError

from storage.node import tes_plan

CONNECT_TIMEOUT = 2.0
#: Waiting for an answer: short for questions, longer for a submit (the executor stores the files).
QUESTION_TIMEOUT = 3.0
SUBMIT_TIMEOUT = 30.0
#: Waiting for the next piece of a result being downloaded.
READ_TIMEOUT = 30.0
CHUNK = 1 << 16
#: A bundle up to this size is sent in one piece rather than streamed file by file.
SMALL_BODY = 1 << 18
#: The subfolder of a TES task's job folder that holds its plan for the executor node.
TES_FOLDER = os.path.dirname(tes_plan.PLAN_FILE)


class ExecutorUnreachable(Exception):
    """The executor did not answer, or answered with a server error: try again later or elsewhere.

    `delivered` is False only when the request certainly never reached the executor (no connection
    could be made); otherwise it may have acted on it. `status` is the HTTP status it answered
    with, None when it did not answer (or the answer was cut off).
    """

    def __init__(self, message: str, delivered: bool = True, status: int | None = None):
        super().__init__(message)
        self.delivered = delivered
        self.status = status


class ExecutorRefused(Exception):
    """The executor refused the request: 4xx (never succeeds there) or 503 (draining: not now)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _maybe_delivered(exc: HTTPError) -> bool:
    """False only when no connection was made, so the executor cannot have seen the request."""
    return not isinstance(exc, (NewConnectionError, ConnectTimeoutError))


class _MultipartBody:
    """A multipart/form-data body streamed from files on disk, with a known length."""

    def __init__(self, fields: dict[str, str], files: list[tuple[str, str]]):
        self.boundary = uuid.uuid4().hex
        self._parts: list[bytes | str] = []
        for name, value in fields.items():
            self._parts.append(self._head(f'name="{name}"') + value.encode() + b"\r\n")
        for filename, path in files:
            self._parts.append(self._head(f'name="file"; filename="{filename}"',
                                          "Content-Type: application/octet-stream\r\n"))
            self._parts.append(path)
            self._parts.append(b"\r\n")
        self._parts.append(f"--{self.boundary}--\r\n".encode())

    def _head(self, disposition: str, extra: str = "") -> bytes:
        return f"--{self.boundary}\r\nContent-Disposition: form-data; {disposition}\r\n{extra}\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else os.path.getsize(p) for p in self._parts)

    def body(self) -> bytes | Iterator[bytes]:
        """The whole body at once when small (one write instead of one per part), else a stream."""
        return b"".join(self) if len(self) <= SMALL_BODY else iter(self)

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            if isinstance(part, bytes):
                yield part
                continue
            with open(part, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk


def _tes_plan(folder: str) -> str | None:
    """The text of a TES task's plan (web/tes/script.py writes it in a subfolder, which no upload can
    make), or None."""
    try:
        with open(os.path.join(folder, tes_plan.PLAN_FILE), encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _status(response: urllib3.BaseHTTPResponse) -> str | None:
    try:
        body = json.loads(response.data)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        return None
    return body.get("status") if isinstance(body, dict) else None


def _description(response: urllib3.BaseHTTPResponse) -> str:
    """": <description>" of an error's JSON body ({title, description}), or "" without one."""
    try:
        body = json.loads(response.read(4096))
    except (ValueError, HTTPError):
        return ""
    text = body.get("description") if isinstance(body, dict) else None
    return f": {text[:300]}" if isinstance(text, str) and text else ""


class ExecutorLink:
    """Keep-alive HTTP connections to the executors, shared by the threads of one actor."""

    def __init__(self, cluster_secret: str = ""):
        self.headers = {"Authorization": f"Bearer {cluster_secret}"} if cluster_secret else {}
        self.pool = urllib3.PoolManager(num_pools=64, maxsize=8, retries=False)

    def _call(self, method: str, url: str, wait: float = QUESTION_TIMEOUT, *, stream: bool = False,
              headers: dict[str, str] | None = None, body=None) -> urllib3.BaseHTTPResponse:
        try:
            response = self.pool.request(method, url, body=body, headers={**self.headers, **(headers or {})},
                                         timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=wait),
                                         preload_content=not stream)
        except HTTPError as exc:
            raise ExecutorUnreachable(f"{method} {url}: {exc.__class__.__name__}", _maybe_delivered(exc)) from exc
        if response.status >= 500 and response.status != 503:
            response.release_conn()
            raise ExecutorUnreachable(f"{method} {url}: HTTP {response.status}", status=response.status)
        return response

    @staticmethod
    def _json(response: urllib3.BaseHTTPResponse, url: str, *keys: str) -> dict:
        """The JSON object of an answer, holding `keys`; anything else is not an executor talking."""
        try:
            body = json.loads(response.data)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
            body = None
        if not isinstance(body, dict) or any(key not in body for key in keys):
            raise ExecutorUnreachable(f"{url} answered something that is not an executor's JSON")
        return body

    def health(self, base: str) -> dict:
        """The executor's /health; a draining executor answers too (its status says so)."""
        response = self._call("GET", f"{base}/health")
        if response.status == 503 and _status(response) == "unhealthy":
            # NOTE: it answers, and holds its jobs, but takes no new ones (e.g. its Slurm controller
            # is down): to the server that is draining, not lost.
            return {**self._json(response, f"{base}/health", "slots", "service"), "status": "draining"}
        if response.status != 200:
            raise ExecutorUnreachable(f"{base}/health answered {response.status}")
        return self._json(response, f"{base}/health", "slots", "service")

    def submit(self, base: str, job_id: int, job_uid: str, attempt: int, callback_url: str, folder: str,
               max_runtime: int | None = None) -> str:
        """Send the job folder, with its time limit if it has one and its plan if it is a TES task
        (the field `tes_plan`); returns the executor's task id."""
        names = os.listdir(folder)
        files = sorted((name, os.path.join(folder, name)) for name in names)
        # NOTE: sent only when set, so an executor of an earlier version still takes jobs without one.
        limit = {"max_runtime": str(max_runtime)} if max_runtime else {}
        plan = _tes_plan(folder) if TES_FOLDER in names else None  # NOTE: no look for one in a portal job
        body = _MultipartBody({"job_id": str(job_id), "job_uid": job_uid, "attempt": str(attempt),
                               "callback_url": callback_url, **limit, **({"tes_plan": plan} if plan else {})},
                              [(name, path) for name, path in files if os.path.isfile(path)])
        response = self._call("POST", f"{base}/submit", SUBMIT_TIMEOUT, body=body.body(),
                              headers={"Content-Type": body.content_type, "Content-Length": str(len(body))})
        if response.status != 200:
            raise ExecutorRefused(f"{base}/submit answered {response.status}: "
                                  f"{response.data.decode('utf-8', 'replace')[:300]}", response.status)
        return str(self._json(response, f"{base}/submit", "id")["id"])

    def status(self, base: str, remote_id: str) -> dict | None:
        """The executor's record of a task, or None if it does not know it."""
        response = self._call("GET", f"{base}/jobs/{remote_id}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise ExecutorUnreachable(f"{base}/jobs/{remote_id} answered {response.status}")
        return self._json(response, f"{base}/jobs/{remote_id}", "job_id", "attempt", "state")

    def find(self, base: str, job_uid: str, attempt: int) -> dict | None:
        """The executor's task for that attempt of the job, or None if it holds none."""
        response = self._call("GET", f"{base}/attempts/{job_uid}/{attempt}")
        if response.status == 404:
            return None
        if response.status != 200:
            raise ExecutorUnreachable(f"{base}/attempts answered {response.status}")
        return self._json(response, f"{base}/attempts", "id", "job_id", "attempt", "state")

    def fetch(self, base: str, remote_id: str, destination: str) -> bool:
        """Download the task's zip to `destination` atomically (temporary file, then rename): True
        once stored, False while the executor is still making it (202)."""
        url = f"{base}/retrieve/{remote_id}"
        partial = f"{destination}.part-{uuid.uuid4().hex[:8]}"
        response = self._call("GET", url, READ_TIMEOUT, stream=True)
        try:
            if response.status == 202:
                return False
            if response.status != 200:
                raise ExecutorUnreachable(f"{url} answered {response.status}{_description(response)}",
                                          status=response.status)
            expected = response.headers.get("Content-Length")
            with open(partial, "wb") as handle:
                for chunk in response.stream(CHUNK):
                    handle.write(chunk)
            if expected is not None and os.path.getsize(partial) != int(expected):
                raise ExecutorUnreachable(f"{url} ended early")
            os.replace(partial, destination)
            return True
        except HTTPError as exc:
            raise ExecutorUnreachable(f"GET {url}: {exc.__class__.__name__}") from exc
        except OSError as exc:
            # NOTE: a full or failing disk here; the result stays on the executor, fetched again later.
            raise ExecutorUnreachable(f"storing the result of {url} failed: {exc}") from exc
        finally:
            response.release_conn()
            if os.path.exists(partial):
                os.remove(partial)

    def delete(self, base: str, remote_id: str) -> None:
        self._call("DELETE", f"{base}/jobs/{remote_id}")

    def kill(self, base: str, remote_id: str) -> None:
        """Stop a task of an attempt that no longer counts."""
        self._call("POST", f"{base}/jobs/{remote_id}/kill")
