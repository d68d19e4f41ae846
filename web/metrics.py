"""`GET /metrics` of either node, in Prometheus' text format, and the HTTP middleware that counts requests.

Runs in the node's main process. A scrape adds up what every process of the node counted
(conf/metrics.py: prometheus_client's multiprocess files) and reads the node's state when asked:
the server's jobs and executors from its database (storage/gauges.py), an executor node's tasks and
slots from its own. What takes long to measure (the ended jobs, a million rows to count; the disk
the data folders take, a walk of every file) is measured again in the background at most every
`interval` seconds ([server] metrics_cache_seconds), and a scrape answers with the last measure.
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
        # NOTE: conf.metrics.prepare made the folder in a node; an app made without it (in-process
        # tests) counts nothing, and serves its gauges only (making the folder here would leave it).
        if os.path.isdir(metrics.folder_of(data_dir)):
            MultiProcessCollector(self.registry, path=metrics.folder_of(data_dir))
        for collector in collectors:
            self.registry.register(collector)

    def on_get(self, req, resp):
        resp.data = generate_latest(self.registry)
        resp.content_type = CONTENT_TYPE_LATEST


class ServerState:
    """The server's gauges: jobs by state, users waiting, executors and their slots, storage."""

    def __init__(self, usage: "StorageUsage", interval: float):
        from storage import gauges

        self.usage = usage
        # NOTE: counted once at the first scrape, as it waits: then the gauge is whole from the start.
        self.ended = Remeasured(gauges.jobs_ended, interval, at_once=True)

    def collect(self):
        from storage import executors, gauges

        jobs = GaugeMetricFamily("orchestrator_jobs", "Jobs now in each state (the ended ones counted at most "
                                                      "metrics_cache_seconds ago).", labels=["service", "state"])
        for service, state, count in gauges.jobs_not_ended() + self.ended.value():
            jobs.add_metric([service, state], count)
        waiting = GaugeMetricFamily("orchestrator_users_waiting", "Users with a queued job.", labels=["service"])
        for service, count in gauges.users_waiting():
            waiting.add_metric([service], count)
        up = GaugeMetricFamily("orchestrator_executor_up", "1 while the executor is alive, else 0.",
                               labels=["executor", "service"])
        slots = GaugeMetricFamily("orchestrator_executor_slots", "An executor's slots (capacity) and the jobs it "
                                                                 "holds (busy).", labels=["executor", "kind"])
        for row in executors.rows():
            up.add_metric([row.url, row.service], 1 if row.state == "alive" else 0)
            slots.add_metric([row.url, "capacity"], row.slots)
            slots.add_metric([row.url, "busy"], row.busy)
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


class Remeasured:
    """The last value of `measure()`, measured again in a background thread once it is `interval`
    seconds old (`at_once`: the first time in the caller's, which waits for it)."""

    def __init__(self, measure, interval: float, at_once: bool = False):
        self.measure, self.interval, self.at_once = measure, interval, at_once
        self.last = []
        self.when: float | None = None
        self.lock = threading.Lock()

    def value(self, now: float | None = None):
        now = time.monotonic() if now is None else now
        with self.lock:
            first, due = self.when is None, self.when is None or now - self.when >= self.interval
            if due:
                self.when = now
        if first and self.at_once:
            self._remeasure()
        elif due:
            threading.Thread(target=self._remeasure, name="metrics-remeasure", daemon=True).start()
        return self.last

    def _remeasure(self) -> None:
        self.last = self.measure()


class StorageUsage:
    """The bytes each of a node's data folders takes, measured in the background (a walk of every file)."""

    def __init__(self, areas: dict[str, str], interval: float):
        self.areas = Remeasured(lambda: sorted((area, folder_bytes(path)) for area, path in areas.items()), interval)

    def family(self) -> GaugeMetricFamily:
        used = GaugeMetricFamily("orchestrator_storage_used_bytes", "Bytes in the node's data folders (measured "
                                                                    "at most metrics_cache_seconds ago).",
                                 labels=["area"])
        for area, size in self.areas.value():
            used.add_metric([area], size)
        return used


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
