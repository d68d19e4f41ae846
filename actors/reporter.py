"""Telling the server what became of a task, from a background thread of the ExecutorActor.

Reports go out one at a time, in the order they were queued, so the actor never waits on the
network (a slow server must not make the node look dead). A final report is marked as delivered
in the node's database only once the server answered it; the actor queues undelivered ones again.
"""
from __future__ import annotations

import logging
import queue
import threading

import requests

from storage import tasks

TIMEOUT = (2.0, 10.0)
log = logging.getLogger("orchestrator.reporter")


class Reporter:
    def __init__(self, fallback_url: str):
        self.fallback_url = fallback_url
        self.session = requests.Session()
        self.queue: queue.Queue = queue.Queue()
        self.queued: set[tuple[int, str]] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._run, name="reporter", daemon=True).start()

    def report(self, task_id: int, event: str) -> None:
        with self.lock:
            if (task_id, event) in self.queued:
                return
            self.queued.add((task_id, event))
        self.queue.put((task_id, event))

    def _run(self) -> None:
        while True:
            task_id, event = self.queue.get()
            try:
                self._send(task_id, event)
            except Exception:  # noqa: BLE001 — the actor queues it again
                log.exception("report %s of task %d failed", event, task_id)
            finally:
                with self.lock:
                    self.queued.discard((task_id, event))

    def _send(self, task_id: int, event: str) -> None:
        task = tasks.find(task_id)
        url = task["callback_url"] or self.fallback_url
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
