"""`GET /metrics` of either node, in Prometheus' text format, and the HTTP middleware that counts requests.

Runs in the node's main process. A scrape adds up what every process of the node counted
(conf/metrics.py: prometheus_client's multiprocess files) and reads the node's state when asked:
the server's jobs and executors from its database (storage/gauges.py), an executor node's tasks and
slots from its own, and the disk its data folders take (measured in the background at most once per
`StorageUsage.interval`, for a walk of a large folder takes seconds).
"""
from __future__ import annotations

import os
import threading
import time

import falcon
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from conf import metrics


class Metrics:
    """`GET /metrics`: the node's counters and histograms, then the gauges of `collectors`."""

    def __init__(self, data_dir: str, collectors):
        self.registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(self.registry, path=metrics.folder_of(data_dir))
        for collector in collectors:
            self.registry.register(collector)

    def on_get(self, req, resp):
        resp.data = generate_latest(self.registry)
        resp.content_type = CONTENT_TYPE_LATEST


class ServerState:
    """The server's gauges: jobs by state, users waiting, executors and their slots, storage."""

    def __init__(self, usage: "StorageUsage"):
        self.usage = usage

    def collect(self):
        from storage import gauges

        jobs = GaugeMetricFamily("orchestrator_jobs", "Jobs now in each state.", labels=["service", "state"])
        for service, state, count in gauges.jobs_by_state():
            jobs.add_metric([service, state], count)
        waiting = GaugeMetricFamily("orchestrator_users_waiting", "Users with a queued job.", labels=["service"])
        for service, count in gauges.users_waiting():
            waiting.add_metric([service], count)
        up = GaugeMetricFamily("orchestrator_executor_up", "1 while the executor is alive, else 0.",
                               labels=["executor", "service"])
        slots = GaugeMetricFamily("orchestrator_executor_slots", "An executor's slots (capacity) and the jobs it "
                                                                 "holds (busy).", labels=["executor", "kind"])
        for url, service, state, capacity, busy in gauges.executors():
            up.add_metric([url, service], 1 if state == "alive" else 0)
            slots.add_metric([url, "capacity"], capacity)
            slots.add_metric([url, "busy"], busy)
        yield from (jobs, waiting, up, slots, self.usage.family())


class NodeState:
    """An executor node's gauges: its slots and its tasks by state, and storage."""

    def __init__(self, service: str, slots: int, usage: "StorageUsage"):
        self.service, self.slots, self.usage = service, slots, usage

    def collect(self):
        from storage.node import tasks

        counts = tasks.counts()
        slots = GaugeMetricFamily("orchestrator_executor_slots", "This node's slots (capacity) and the tasks "
                                                                 "holding one (busy).", labels=["service", "kind"])
        slots.add_metric([self.service, "capacity"], self.slots)
        slots.add_metric([self.service, "busy"], counts.get("running", 0))
        held = GaugeMetricFamily("orchestrator_executor_tasks", "Tasks waiting for a slot (accepted) or holding "
                                                                "one (running).", labels=["service", "state"])
        for state, count in counts.items():
            held.add_metric([self.service, state], count)
        yield from (slots, held, self.usage.family())


class StorageUsage:
    """The bytes each of a node's data folders takes, measured again at most every `interval` seconds,
    in a background thread: a scrape answers with the last measure at once."""

    def __init__(self, areas: dict[str, str], interval: float = 60.0):
        self.areas = areas
        self.interval = interval
        self.measured: dict[str, int] = {}
        self.when = None
        self.lock = threading.Lock()

    def family(self, now: float | None = None) -> GaugeMetricFamily:
        self.refresh_if_due(time.monotonic() if now is None else now)
        used = GaugeMetricFamily("orchestrator_storage_used_bytes", "Bytes in the node's data folders (measured "
                                                                    "at most once a minute).", labels=["area"])
        for area, size in sorted(self.measured.items()):
            used.add_metric([area], size)
        return used

    def refresh_if_due(self, now: float) -> bool:
        with self.lock:
            if self.when is not None and now - self.when < self.interval:
                return False
            self.when = now
        threading.Thread(target=self.measure, name="storage-usage", daemon=True).start()
        return True

    def measure(self) -> None:
        self.measured = {area: folder_bytes(path) for area, path in self.areas.items()}


def folder_bytes(path: str) -> int:
    """The bytes of the files under `path` (0 when it is missing); files that vanish meanwhile are skipped."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


class HttpMetrics:
    """Falcon middleware: every answer counted by route template (not the raw path, whose ids would
    make a series each) and status code, with its duration."""

    def process_request(self, req, resp):
        req.context.started = time.perf_counter()

    def process_response(self, req, resp, resource, req_succeeded):
        if not metrics.METRICS:
            return
        route = req.uri_template or "unmatched"
        metrics.METRICS["http_requests"].labels(route, str(resp.status_code)).inc()
        started = getattr(req.context, "started", None)
        if started is not None:
            metrics.METRICS["http_seconds"].labels(route).observe(time.perf_counter() - started)


def add_route(app: falcon.App, data_dir: str, collectors) -> None:
    app.add_route("/metrics", Metrics(data_dir, collectors))
