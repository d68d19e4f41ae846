"""The server's HTTP calls to executor nodes: probe, submit, status, fetch results, delete.

The only module on the server that speaks the executor protocol. Uploads stream from disk and
results stream to disk, so no job's files are held in memory.
"""
from __future__ import annotations

import os
import uuid
from typing import Iterator

import requests

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 30.0
CHUNK = 1 << 16


class ExecutorUnreachable(Exception):
    """The executor did not answer, or answered with a server error: try again later or elsewhere."""


class ExecutorRefused(Exception):
    """The executor answered 4xx: this request will never succeed there."""


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

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            if isinstance(part, bytes):
                yield part
                continue
            with open(part, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    yield chunk


class ExecutorLink:
    """One keep-alive HTTP session to the executors of one actor."""

    def __init__(self):
        self.session = requests.Session()

    def _call(self, method: str, url: str, **kwargs) -> requests.Response:
        try:
            response = self.session.request(method, url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), **kwargs)
        except requests.RequestException as exc:
            raise ExecutorUnreachable(f"{method} {url}: {exc.__class__.__name__}") from exc
        if response.status_code >= 500:
            raise ExecutorUnreachable(f"{method} {url}: HTTP {response.status_code}")
        return response

    def health(self, base: str) -> dict:
        response = self._call("GET", f"{base}/health")
        if response.status_code != 200:
            raise ExecutorUnreachable(f"{base}/health answered {response.status_code}")
        return response.json()

    def submit(self, base: str, job_id: int, attempt: int, callback_url: str, folder: str) -> str:
        """Send the job folder; returns the executor's task id."""
        files = sorted((name, os.path.join(folder, name)) for name in os.listdir(folder))
        body = _MultipartBody({"job_id": str(job_id), "attempt": str(attempt), "callback_url": callback_url},
                              [(name, path) for name, path in files if os.path.isfile(path)])
        response = self._call("POST", f"{base}/submit", data=body, headers={"Content-Type": body.content_type})
        if response.status_code != 200:
            raise ExecutorRefused(f"{base}/submit answered {response.status_code}: {response.text[:300]}")
        return str(response.json()["id"])

    def status(self, base: str, remote_id: str) -> dict | None:
        """The executor's record of a task, or None if it does not know it."""
        response = self._call("GET", f"{base}/jobs/{remote_id}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ExecutorUnreachable(f"{base}/jobs/{remote_id} answered {response.status_code}")
        return response.json()

    def fetch(self, base: str, remote_id: str, destination: str) -> None:
        """Download the task's zip to `destination` atomically (temporary file, then rename)."""
        partial = f"{destination}.part-{uuid.uuid4().hex[:8]}"
        try:
            with self.session.get(f"{base}/retrieve/{remote_id}", stream=True,
                                  timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as response:
                if response.status_code != 200:
                    raise ExecutorUnreachable(f"{base}/retrieve/{remote_id} answered {response.status_code}")
                expected = response.headers.get("Content-Length")
                with open(partial, "wb") as handle:
                    for chunk in response.iter_content(CHUNK):
                        handle.write(chunk)
            if expected is not None and os.path.getsize(partial) != int(expected):
                raise ExecutorUnreachable(f"{base}/retrieve/{remote_id} ended early")
            os.replace(partial, destination)
        except requests.RequestException as exc:
            raise ExecutorUnreachable(f"GET {base}/retrieve/{remote_id}: {exc.__class__.__name__}") from exc
        finally:
            if os.path.exists(partial):
                os.remove(partial)

    def delete(self, base: str, remote_id: str) -> None:
        self._call("DELETE", f"{base}/jobs/{remote_id}")
