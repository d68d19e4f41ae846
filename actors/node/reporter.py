"""Telling the server what happens on this node, from a background thread of the ExecutorActor.

Two kinds of message, sent one at a time so the actor never waits on the network (a slow server
must not make the node look dead):
- task reports (started, finished, lost), in the order they were queued; those that piled up
  while a call was on its way go together in the next one. A final one is marked as delivered in
  the node's database only once the server answered; the actor queues undelivered ones again.
- heartbeats to `server_url`, every third of the server's executor_timeout, which also register
  the node for its service: its URL, slots, tier, whether it is draining, and the tasks it holds.
  A node whose backend cannot take work (Slurm's controller is down) says it is draining: the
  server then sends it nothing new, yet keeps its jobs, since it still answers. A drained node's last
  heartbeat says it leaves (`leave`), so the server lists it `gone`, not lost.

A server that does not answer yet (a node started first, as `make run` does) is said once at INFO;
a warning only once it had answered before, or after the server's executor_timeout. A server
that does not know the node's service (404) is said in one sentence telling how to add it; the
node then stops (its main process is sent SIGTERM, and exits with 2: see `REFUSED_FILE`).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
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
#: The server's executor_timeout until it says it (its default).
DEFAULT_EXECUTOR_TIMEOUT = 30.0
#: In the node's data folder: written when the server does not know its service; run_client.py then
#: exits with 2.
REFUSED_FILE = "unknown-service"
#: Most task reports sent in one call.
MAX_BATCH = 100
log = logging.getLogger("orchestrator.reporter")


def outage_notice(said: int | None, reached_before: bool, down_for: float, timeout: float) -> int | None:
    """The level to log the server's silence at now (None: nothing more to say), given the level
    already said in this outage: INFO while it has never answered (it may not be up yet), WARNING
    once it had answered before or has been silent for longer than its executor_timeout."""
    wanted = logging.WARNING if reached_before or down_for > timeout else logging.INFO
    return wanted if said is None or wanted > said else None


def unknown_service_sentence(config: ClientConfig) -> str:
    name = config.service
    return (f"the server at {config.server_url} does not know service {name!r}: add a [service.{name}] section "
            f"to its server.ini (or set SERVICE_{name.upper()}_UPLOAD_URL={config.own_url} in its environment), "
            f"restart the server, then start this node again")


class Reporter:
    def __init__(self, config: ClientConfig, problem: Callable[[], str | None] = lambda: None, node_pid: int = 0):
        self.config = config
        #: Why the node's backend cannot take work now (None: it can).
        self.problem = problem
        self.node_pid = node_pid
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
        #: The server answered a heartbeat once; since when it has not (monotonic), and the level said.
        self.reached = False
        self.down_since: float | None = None
        self.said: int | None = None
        self.server_timeout = DEFAULT_EXECUTOR_TIMEOUT
        #: The server is to be told that this node leaves; it was (or cannot be: no more heartbeats).
        self.leaving = False
        self.left = not config.server_url
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

    def leave(self) -> None:
        """The node drained: its next heartbeat, the last, tells the server it leaves (`left` once
        sent, or tried)."""
        if not self.leaving:
            self.leaving = True
            self.beat_now()

    def _run(self) -> None:
        while True:
            wait = max(0.0, self.next_heartbeat - clock.monotonic()) if not self.left else None
            try:
                batch = [self.queue.get(timeout=wait)]
            except queue.Empty:
                batch = []
            # NOTE: what piled up while the last call was on its way goes out together, in one call.
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if not self.left and clock.monotonic() >= self.next_heartbeat:
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
        leaving = self.leaving
        body = {"service": self.config.service, "url": self.config.own_url, "slots": self.config.slots,
                "tier": self.config.tier, "draining": self.draining or leaving or self.problem() is not None, "tasks": tasks.held(),
                "leaving": leaving}
        try:
            response = self._post(f"{self.config.server_url}/internal/executors", body)
        except HTTPError as exc:
            self.left = leaving  # a node leaving does not wait for a server that does not answer
            self._silent(exc.__class__.__name__)
            return
        self.left = leaving
        if response.status == 404 and _title(response) == "Unknown service":
            self._unknown_service()
            return
        if response.status != 200:
            if not self.refused:
                log.error("the server refused this node's registration: %s",
                          response.data.decode("utf-8", "replace")[:300])
            self.refused = True
            return
        if not self.reached:
            log.info("registered at %s for service %s", self.config.server_url, self.config.service)
        elif self.said is not None:
            log.info("the server at %s answers again", self.config.server_url)
        self.reached, self.down_since, self.said, self.refused = True, None, None, False
        try:
            timeout = json.loads(response.data).get("executor_timeout")
        except (ValueError, AttributeError):
            timeout = None
        if isinstance(timeout, (int, float)) and timeout > 0:
            self.server_timeout = timeout
            self.heartbeat_every = max(0.2, min(DEFAULT_HEARTBEAT_SECONDS * 6, timeout / 3))
            # NOTE: the next beat was planned before the server said its timeout; it may be too late.
            self.next_heartbeat = min(self.next_heartbeat, clock.monotonic() + self.heartbeat_every)

    def _silent(self, error: str) -> None:
        now = clock.monotonic()
        if self.down_since is None:
            self.down_since = now
        level = outage_notice(self.said, self.reached, now - self.down_since, self.server_timeout)
        if level is None:
            return
        self.said = level
        if level == logging.INFO:
            log.info("the server at %s does not answer yet (%s); this node keeps trying", self.config.server_url, error)
        else:
            log.warning("heartbeat to %s failed: %s (the server has not answered for %.0f s)", self.config.server_url,
                        error, now - self.down_since)

    def _unknown_service(self) -> None:
        """The node is of no use to this server: say how to fix it, and stop the node."""
        log.error("%s", unknown_service_sentence(self.config))
        self.left = True  # no more heartbeats: the answer would be the same
        with open(os.path.join(self.config.data_path, REFUSED_FILE), "w") as handle:
            handle.write(self.config.service)
        if self.node_pid:
            os.kill(self.node_pid, signal.SIGTERM)

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


def _title(response: urllib3.BaseHTTPResponse) -> str | None:
    try:
        return json.loads(response.data).get("title")
    except (ValueError, AttributeError):
        return None
