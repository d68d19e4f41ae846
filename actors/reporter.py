"""Telling the server what happens on this node, from a background thread of the ExecutorActor.

Two kinds of message, sent one at a time so the actor never waits on the network (a slow server
must not make the node look dead):
- task reports (started, finished, lost), in the order they were queued. A final one is marked as
  delivered in the node's database only once the server answered; the actor queues undelivered
  ones again.
- heartbeats to `server_url`, every third of the server's executor_timeout, which also register
  the node for its service: its URL, slots, whether it is draining, and the tasks it holds. A node
  whose backend cannot take work (Slurm's controller is down) says it is draining: the server then
  sends it nothing new, yet keeps its jobs, since it still answers.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable

import requests

from conf.settings import ClientConfig
from storage import tasks

TIMEOUT = (2.0, 10.0)
#: Until the server says its executor_timeout, beat this often.
DEFAULT_HEARTBEAT_SECONDS = 5.0
log = logging.getLogger("orchestrator.reporter")


class Reporter:
    def __init__(self, config: ClientConfig, problem: Callable[[], str | None] = lambda: None):
        self.config = config
        #: Why the node's backend cannot take work now (None: it can).
        self.problem = problem
        self.session = requests.Session()
        if config.cluster_secret:
            self.session.headers["Authorization"] = f"Bearer {config.cluster_secret}"
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
            wait = max(0.0, self.next_heartbeat - time.monotonic()) if self.config.server_url else None
            try:
                item = self.queue.get(timeout=wait)
            except queue.Empty:
                item = None
            if self.config.server_url and time.monotonic() >= self.next_heartbeat:
                self._heartbeat()
            if item is None:
                continue
            task_id, event = item
            try:
                self._send(task_id, event)
            except Exception:  # noqa: BLE001 — the actor queues it again
                log.exception("report %s of task %d failed", event, task_id)
            finally:
                with self.lock:
                    self.queued.discard((task_id, event))

    def _heartbeat(self) -> None:
        self.next_heartbeat = time.monotonic() + self.heartbeat_every
        body = {"service": self.config.service, "url": self.config.own_url, "slots": self.config.slots,
                "draining": self.draining or self.problem() is not None, "tasks": tasks.held()}
        try:
            response = self.session.post(f"{self.config.server_url}/internal/executors", json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            log.warning("heartbeat to %s failed: %s", self.config.server_url, exc.__class__.__name__)
            return
        if response.status_code != 200:
            if not self.refused:
                log.error("the server refused this node's registration: %s", response.text[:300])
            self.refused = True
            return
        self.refused = False
        timeout = response.json().get("executor_timeout")
        if isinstance(timeout, (int, float)) and timeout > 0:
            self.heartbeat_every = max(0.2, min(DEFAULT_HEARTBEAT_SECONDS * 6, timeout / 3))

    def _send(self, task_id: int, event: str) -> None:
        task = tasks.find(task_id)
        url = task["callback_url"] or self.config.server_url
        final = event != "started"
        if not url:
            if final:
                tasks.mark_reported(task_id)  # nobody to tell; the server asks instead
            return
        body = {"job_id": task["job_id"], "attempt": task["attempt"], "task_id": str(task_id), "event": event,
                "exit_code": task["exit_code"], "stderr_tail": task["stderr_tail"]}
        try:
            response = self.session.post(f"{url}/internal/events", json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            log.warning("could not report %s of task %d to %s: %s", event, task_id, url, exc.__class__.__name__)
            return
        if final and response.status_code < 500:
            tasks.mark_reported(task_id)
