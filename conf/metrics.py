"""The node's counters and histograms, shared by all its processes, and the listener that feeds them.

Runs in every process of a node (server or executor): the main process calls `prepare` before its
actor system forks, so each actor process inherits the metrics and the listener registered in
`conf.logs.LISTENERS`. prometheus_client's multiprocess mode keeps each process's values in a file
of its own in shared memory (`folder_of`; wiped at each start, as the counters start from zero); the
node's `/metrics` (web/metrics.py) adds them up at scrape time. Gauges of the node's state are not
kept here: they are read from the database when scraped.
"""
from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile

from conf import logs

FOLDER = "metrics"
#: A job's event name → the state its `finished` counter carries (the API's state names).
FINISHED_STATES = {"completed": "Completed", "failed": "Failed", "cancelled": "Cancelled"}
#: A webhook's event name → the outcome its counter carries.
WEBHOOK_OUTCOMES = {"webhook_delivered": "delivered", "webhook_failed": "failed", "webhook_gave_up": "gave_up"}
#: A label value outside the node's configured names (e.g. an upload naming an unknown service) is
#: counted as this one, so that strangers cannot grow the number of series without bound.
OTHER = "other"
#: Label values are capped at this length for the same reason.
LABEL_CHARS = 64

#: Filled by `prepare`: name → prometheus_client metric.
METRICS: dict = {}
_services: frozenset[str] = frozenset()


def folder_of(data_dir: str) -> str:
    """Where the processes of the node whose data folder is `data_dir` keep their counters: in
    shared memory (/dev/shm), not in the data folder. Each process maps its file into memory, and a
    write to a mapped page that a full disk cannot hold kills the process with SIGBUS: a job that
    fills the node's disk would take the node with it."""
    shared = "/dev/shm"
    base = shared if os.path.isdir(shared) and os.access(shared, os.W_OK) else tempfile.gettempdir()
    digest = hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:16]
    return os.path.join(base, f"orchestrator-{FOLDER}-{digest}")


#: The metrics only an executor node has; the server has every other one but these.
EXECUTOR_ONLY = frozenset({"backend_errors", "slurm_poll"})
#: What both kinds of node count.
BOTH = frozenset({"http_requests", "http_seconds"})


def prepare(data_dir: str, services, kind: str = "server") -> None:
    """Start the node's metrics afresh (in `folder_of(data_dir)`) and listen to its events; call it in
    the node's main process before its actor system starts. `services`: the names counted by name;
    `kind`: "server" or "executor" (each has its own metrics)."""
    global _services
    folder = folder_of(data_dir)
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    atexit.register(_remove_at_exit, folder, os.getpid())
    # NOTE: prometheus_client picks its value class (in memory, or in a file per process) when it is
    # first imported, which may be before the node knows its folder: pick it again now.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    _services = frozenset(services)
    METRICS.clear()
    METRICS.update(_create(kind))
    if on_event not in logs.LISTENERS:
        logs.LISTENERS.append(on_event)


def _remove_at_exit(folder: str, owner: int) -> None:
    """The node stops: its counters go with it (shared memory is not the place to leave them).
    Only in the process that made the folder, not in one forked from it."""
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _create(kind: str) -> dict:
    """The metrics of a node of `kind`: only those, for each one created writes its samples."""
    from prometheus_client import Counter, Histogram

    # NOTE: registry=None: the values are read from the folder by a multiprocess collector, and a
    # second `prepare` in one process (tests) must not register the names twice.
    seconds = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
    made = {
        "rejected": lambda: Counter("orchestrator_jobs_rejected", "Uploads refused, by service and reason.",
                                    ["service", "reason"], registry=None),
        "submitted": lambda: Counter("orchestrator_jobs_submitted", "Jobs accepted (queued), by service.",
                                     ["service"], registry=None),
        "finished": lambda: Counter("orchestrator_jobs_finished", "Jobs that ended, by service and final state.",
                                    ["service", "state"], registry=None),
        "wait": lambda: Histogram("orchestrator_job_queue_wait_seconds", "Seconds from upload to dispatch, of "
                                  "ended jobs.", ["service"], buckets=seconds, registry=None),
        "run": lambda: Histogram("orchestrator_job_run_duration_seconds", "Seconds a job's script ran, of ended "
                                 "jobs.", ["service", "backend"], buckets=seconds, registry=None),
        "turnaround": lambda: Histogram("orchestrator_job_turnaround_seconds", "Seconds from upload to the end of "
                                        "a job.", ["service"], buckets=seconds, registry=None),
        "deferred": lambda: Counter("orchestrator_dispatch_deferred", "Times a queued job was held back, by why.",
                                    ["service", "reason"], registry=None),
        "cleaned": lambda: Counter("orchestrator_cleanup_deleted", "Ended jobs whose files were deleted.",
                                   registry=None),
        "webhooks": lambda: Counter("orchestrator_webhook_attempts", "Webhook attempts, by outcome: delivered, "
                                    "failed (tried again later), gave_up.", ["outcome"], registry=None),
        "backend_errors": lambda: Counter("orchestrator_backend_errors", "Failures of the executor's backend "
                                          "commands.", ["backend", "operation"], registry=None),
        "slurm_poll": lambda: Histogram("orchestrator_slurm_poll_seconds", "Seconds one squeue poll took.",
                                        buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=None),
        "http_requests": lambda: Counter("orchestrator_http_requests", "HTTP requests answered, by route and "
                                         "status code.", ["route", "code"], registry=None),
        "http_seconds": lambda: Histogram("orchestrator_http_request_duration_seconds", "Seconds to answer a "
                                          "request.", ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                                          0.5, 1, 2.5, 5, 10, 30), registry=None),
    }
    return {name: make() for name, make in made.items()
            if name in BOTH or (name in EXECUTOR_ONLY) == (kind == "executor")}


def _service(fields: dict) -> str:
    name = fields.get("service")
    return name if name in _services else OTHER


def _label(value) -> str:
    return "unknown" if value is None else str(value)[:LABEL_CHARS]


def on_event(name: str, fields: dict) -> None:
    """The listener: count the job events the metrics are made of (conf/logs.py's contract)."""
    if "submitted" not in METRICS:  # not a server
        return
    if name == "rejected":
        METRICS["rejected"].labels(_service(fields), _label(fields.get("reason"))).inc()
    elif name == "queued":
        METRICS["submitted"].labels(_service(fields)).inc()
    elif name in FINISHED_STATES:
        service = _service(fields)
        METRICS["finished"].labels(service, FINISHED_STATES[name]).inc()
        for key, metric, labels in (("wait_seconds", "wait", (service,)),
                                    ("run_seconds", "run", (service, _label(fields.get("backend")))),
                                    ("turnaround_seconds", "turnaround", (service,))):
            if fields.get(key) is not None:
                METRICS[metric].labels(*labels).observe(max(0.0, float(fields[key])))
    elif name == "held":
        METRICS["deferred"].labels(_service(fields), _label(fields.get("why"))).inc()
    elif name == "cleaned":
        METRICS["cleaned"].inc()
    elif name in WEBHOOK_OUTCOMES:
        METRICS["webhooks"].labels(WEBHOOK_OUTCOMES[name]).inc()


def backend_error(backend: str, operation: str) -> None:
    """Count a failed backend command (sbatch, squeue, scancel, a local start) of an executor node."""
    if "backend_errors" in METRICS:
        METRICS["backend_errors"].labels(backend, operation).inc()


def slurm_poll(seconds: float) -> None:
    """Record how long one squeue call of a Slurm executor node took."""
    if "slurm_poll" in METRICS:
        METRICS["slurm_poll"].observe(seconds)
