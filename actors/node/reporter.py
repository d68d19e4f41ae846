"""Telling the server what happens on this node, from a background thread of the ExecutorActor.

Two kinds of message, sent one at a time so the actor never waits on the network (a slow server
must not make the node look dead):
- task reports (started, finished, lost), in the order they were queued; those that piled up
  while a call was on its way go together in the next one. A final one is marked as delivered in
  the node's database only once the server answered; the actor queues undelivered ones again.
- heartbeats to `server_url`, every third of the server's executor_timeout, which also register
  the node for its service: its URL, slots, whether it is draining, and the tasks it holds. A node
  whose backend cannot take work (Slurm's controller is down) says it is draining: the server then
  sends it nothing new, yet keeps its jobs, since it still answers.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Callable

import urllib3
from urllib3.exceptions import HTTPError

from conf.settings import ClientConfig
from storage.node import tasks
from storage import clock

TIMEOUT = urllib3.Timeout(connect=2.0, read=10.0)
#: Until the server says its executor_timeout, beat this often.
DEFAULT_HEARTBEAT_SECONDS = 5.0
#: Most task reports sent in one call.
MAX_BATCH = 100
log = logging.getLogger("orchestrator.reporter")


class Reporter:
    def __init__(self, config: ClientConfig, problem: Callable[[], str | None] = lambda: None):
        self.config = config
        #: Why the node's backend cannot take work now (None: it can).
        self.problem = problem
        headers = {"Content-Type": "application/json"}
        if config.cluster_secret:
            headers["Authorization"] = f"Bearer {config.cluster_secret}"
        # NOTE: urllib3 rather than requests: half the CPU per call, and a busy node reports often.
        self.http = urllib3.PoolManager(num_pools=4, retries=False, timeout=TIMEOUT, headers=headers)
        self.queue: queue.Queue = queue.Queue()
        self.queued: set[tuple[int, str]] = set()
        self.lock = threading.Lock()
        self.draining = False
        self.heartbeat_every = DEFAULT_HEARTBEAT_SECONDS
        self.next_heartbeat = 0.0
        self.refused = False
        threading.Thread(target=self._run, name="reporter", daemon=True).start()

    def report(self, task_id: int, event: str) -> None:
        with self.lock:
            if (task_id, event) in self.queued:
                return
            self.queued.add((task_id, event))
        self.queue.put((task_id, event))

    def beat_now(self) -> None:
        self.next_heartbeat = 0.0
        self.queue.put(None)

    def _run(self) -> None:
        while True:
            wait = max(0.0, self.next_heartbeat - clock.monotonic()) if self.config.server_url else None
            try:
                batch = [self.queue.get(timeout=wait)]
            except queue.Empty:
                batch = []
            # NOTE: what piled up while the last call was on its way goes out together, in one call.
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if self.config.server_url and clock.monotonic() >= self.next_heartbeat:
                self._heartbeat()
            reports = [item for item in batch if item is not None]
            if not reports:
                continue
            try:
                self._send(reports)
            except Exception:  # noqa: BLE001 — the actor queues them again
                log.exception("reports %s failed", reports)
            finally:
                with self.lock:
                    self.queued.difference_update(reports)

    def _heartbeat(self) -> None:
        self.next_heartbeat = clock.monotonic() + self.heartbeat_every
        body = {"service": self.config.service, "url": self.config.own_url, "slots": self.config.slots,
                "draining": self.draining or self.problem() is not None, "tasks": tasks.held()}
        try:
            response = self._post(f"{self.config.server_url}/internal/executors", body)
        except HTTPError as exc:
            log.warning("heartbeat to %s failed: %s", self.config.server_url, exc.__class__.__name__)
            return
        if response.status != 200:
            if not self.refused:
                log.error("the server refused this node's registration: %s",
                          response.data.decode("utf-8", "replace")[:300])
            self.refused = True
            return
        self.refused = False
        try:
            timeout = json.loads(response.data).get("executor_timeout")
        except (ValueError, AttributeError):
            timeout = None
        if isinstance(timeout, (int, float)) and timeout > 0:
            self.heartbeat_every = max(0.2, min(DEFAULT_HEARTBEAT_SECONDS * 6, timeout / 3))
            # NOTE: the next beat was planned before the server said its timeout; it may be too late.
            self.next_heartbeat = min(self.next_heartbeat, clock.monotonic() + self.heartbeat_every)

    def _send(self, reports: list[tuple[int, str]]) -> None:
        found = tasks.find_many([task_id for task_id, _ in reports])
        by_url: dict[str, list[tuple[int, str]]] = {}
        for task_id, event in reports:
            task = found.get(task_id)
            url = task and (task["callback_url"] or self.config.server_url)
            if url:
                by_url.setdefault(url, []).append((task_id, event))
            elif task and event != "started":
                tasks.mark_reported([task_id])  # nobody to tell; the server asks instead
        for url, items in by_url.items():
            events = [{"job_id": found[task_id]["job_id"], "attempt": found[task_id]["attempt"],
                       "task_id": str(task_id), "event": event, "exit_code": found[task_id]["exit_code"],
                       "stderr_tail": found[task_id]["stderr_tail"], "reason": found[task_id]["reason"]}
                      for task_id, event in items]
            try:
                response = self._post(f"{url}/internal/events", {"events": events})
            except HTTPError as exc:
                log.warning("could not report %d events to %s: %s", len(events), url, exc.__class__.__name__)
                continue
            if response.status < 500:
                tasks.mark_reported([task_id for task_id, event in items if event != "started"])

    def _post(self, url: str, body: dict) -> urllib3.BaseHTTPResponse:
        return self.http.request("POST", url, body=json.dumps(body).encode())
