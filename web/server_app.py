"""The server's HTTP API (Falcon): upload, download, job status, health, and executor callbacks.

Resources are thin: they validate, call `storage.jobs`, and tell the actors through the gateway.
Reads (download, status) never wait on an actor. With portal tokens the API names jobs by their
public ids (`storage.public_ids`); the numbers stay inside (actors, executors, database).
"""
from __future__ import annotations

import logging
import os
import threading
from urllib.parse import urlsplit

import falcon

from actors.messages import ExecutorEvent, ExecutorHeartbeat, JobQueued, Pong, Roster
from conf import logs
from conf.settings import MAX_TIER, ServerConfig
from storage import executors, jobs, queue_view
from storage.clock import epoch, utcnow
from storage.states import ACTIVE, JobState
from web import callbacks, events, job_list, job_refs, metrics, openapi, overview, scheduling_fields, uploads
from web.auth import ServerAuth
from web.common import MAX_ID, Ping, WhileActorsRestart, new_app, send_zip
from web.follow import Follow
from web.gateway import ActorGateway
from web.job_refs import job_ref, unknown_job
from web.tes import routes as tes_routes

WAITING = ACTIVE | {JobState.QUEUED}
STDERR_TAIL_CHARS = 4000
#: The longest reason an executor may give for a failure (the job's reason column holds 1024).
REASON_CHARS = 1000
#: The `reason` of a `rejected` event, by the answer's status (a 400 for an unknown service says so).
REJECTIONS = {400: "bad_request", 401: "unauthorized", 411: "length_required", 413: "too_large",
              415: "not_multipart", 429: "queue_full", 503: "unavailable", 507: "disk_full"}
log = logging.getLogger("orchestrator.web")


class UnknownService(falcon.HTTPBadRequest):
    """An upload for a service this server does not configure."""


class Upload:
    """`POST /upload`: store the files, write the Queued row, then wake the queue; one `rejected` or
    `queued` event each."""

    def __init__(self, config: ServerConfig, gateway: ActorGateway, stopping: threading.Event):
        self.config = config
        self.gateway = gateway
        self.stopping = stopping
        self.incoming = config.incoming_path
        self.jobs_dir = config.jobs_path

    def on_post(self, req, resp):
        try:
            queued, files, size, view = self.accept(req)
        except falcon.HTTPError as error:
            status = error.status_code
            logs.event(log, "rejected", service=getattr(error, "service", None), status=status,
                       reason="unknown_service" if isinstance(error, UnknownService) else REJECTIONS.get(status, str(status)))
            raise
        # NOTE: logged before the queue hears of it, so that `queued` comes before `admitted`.
        logs.event(log, "queued", job=queued.job_id, user=queued.user_id, portal=queued.portal, service=queued.service,
                   files=files, bytes=size, priority=queued.priority or None, group=queued.group)
        self.gateway.post(queued, role="queue")
        resp.media = {**view, **queue_view.unless_served(queued.job_id, self.config.service(queued.service), utcnow(),
                                                          self.config.share)}

    def accept(self, req) -> tuple[JobQueued, int, int, dict]:
        """Store the upload and its Queued row: (the queue's message of it, files, bytes, view)."""
        if self.stopping.is_set():
            raise falcon.HTTPServiceUnavailable(title="Shutting down", retry_after=10,
                                                description="the server is stopping; send the upload again shortly.")
        staging, (user_id, service, callback, labels) = uploads.receive(
            req, self.incoming, {"user_id", "service", "callback_url", *scheduling_fields.FIELDS},
            self.config.max_upload_mb * 1024 * 1024, self.check, max_files=self.config.max_files)
        limit = self.config.service(service).max_queued_per_user
        portal = req.context.portal
        sizes = [entry.stat().st_size for entry in os.scandir(staging)]
        now = utcnow()
        try:
            job_id, view = uploads.settle(staging, self.jobs_dir, lambda folder: jobs.create_job(
                user_id, service, folder, now, portal, limit, callback, labels))
        except jobs.QueueFull:
            whose = f"user {user_id} of portal {portal}" if portal else f"user {user_id}"
            error = falcon.HTTPTooManyRequests(
                title="Too many queued jobs", retry_after=30,
                description=f"{whose} already has {limit} jobs waiting in {service} (max_queued_per_user); "
                            f"send more once some have started.")
            error.service = service
            raise error from None
        return (JobQueued(job_id, service, user_id, portal, labels.priority, labels.group, epoch(now)),
                len(sizes), sum(sizes), view)

    def check(self, fields: dict[str, str], names: list[str]) -> tuple[int, str, str | None, jobs.Labels]:
        user_id = uploads.positive_int(fields, "user_id")
        service = self.service_of(fields)
        max_runtime = scheduling_fields.max_runtime(fields, self.config.service(service).max_runtime)
        uploads.require_script(names)
        labels = jobs.Labels(scheduling_fields.priority(fields), scheduling_fields.group(fields), max_runtime)
        return user_id, service, callbacks.callback_url(fields, self.config.webhook_hosts), labels

    def service_of(self, fields: dict[str, str]) -> str:
        known = ", ".join(s.name for s in self.config.services)
        name = fields.get("service")
        if name is None:
            raise uploads.bad_request(f"service is missing; send one of: {known}.")
        if self.config.service(name.strip()) is None:
            raise UnknownService(title="Invalid upload",
                                 description=f"service {name[:64]!r} is not configured here; send one of: {known}.")
        return name.strip()


class Download:
    """`GET`/`HEAD /download/{id}`: 200 zip when completed, 202 while waiting, 204 when it never will."""

    def __init__(self, public: bool):
        self.public = public

    def on_get(self, req, resp, job_id):
        self.answer(resp, job_id, req.context.portal, with_body=True)

    def on_head(self, req, resp, job_id):
        self.answer(resp, job_id, req.context.portal, with_body=False)

    def answer(self, resp, raw: str, portal: str | None, *, with_body: bool) -> None:
        ref = job_ref(raw, self.public)
        info = jobs.download_info(ref, portal)
        if info is None:
            raise unknown_job(raw)
        state, result_path = info
        if state is JobState.COMPLETED and result_path and send_zip(resp, result_path, f"job-{ref}.zip",
                                                                       with_body=with_body):
            return
        if state in WAITING:
            resp.status = falcon.HTTP_202
            if with_body:
                resp.media = {"id": ref, "status": state.value}
            return
        resp.status = falcon.HTTP_204


class JobView:
    """`GET /jobs/{id}`: the job's state, times, attempts, executor, and for a failure why; for a job
    that has not started, its `queue` (storage/queue_view.py: position, what holds it, when it should start)."""

    def __init__(self, config: ServerConfig, public: bool):
        self.config = config
        self.public = public

    def on_get(self, req, resp, job_id):
        view = jobs.job_view(job_ref(job_id, self.public), req.context.portal,
                             lambda job: queue_view.of_job(job, self.config.service(job.service), utcnow(),
                                                           self.config.share))
        if view is None:
            raise unknown_job(job_id)
        resp.media = view


class Cancel:
    """`POST /jobs/{id}/cancel`: a job that has not ended ends Cancelled; its script, if it runs, is
    stopped. 409 when it had ended already."""

    def __init__(self, gateway: ActorGateway, public: bool):
        self.gateway = gateway
        self.public = public

    def on_post(self, req, resp, job_id):
        result = job_refs.cancel(self.gateway, job_ref(job_id, self.public), req.context.portal)
        if result is None:
            raise unknown_job(job_id)
        view, cancelled = result
        if not cancelled:
            raise falcon.HTTPConflict(title="Job already ended",
                                      description=f"job {job_id} is {view['status']}; only a job that has not "
                                                  "ended can be cancelled.")
        resp.media = view


class Health:
    """`GET /health`: 200 when the database and the actor system answer, else 503 with the `reason`
    and Retry-After. The database is `locked` when another process holds SQLite's write lock (reads
    still work, writes wait). While the node rebuilds its actor system, WhileActorsRestart answers
    (`restarting`).
    The actors' pids only for a caller holding the cluster secret (or on a server with nothing to
    authenticate with)."""

    def __init__(self, gateway: ActorGateway):
        self.gateway = gateway

    def on_get(self, req, resp):
        try:
            jobs.ping()
            database_state = "ok" if jobs.write_lock_free() else "locked"
        except Exception:  # noqa: BLE001 — any database failure is reported, not raised
            database_state = "unavailable"
        roster = self.gateway.ask(Roster())
        actors = "ok" if isinstance(roster, Pong) else "unavailable"
        healthy = database_state == "ok" and actors == "ok"
        resp.media = {"status": "ok" if healthy else "unavailable", "database": database_state, "actors": actors}
        if not healthy:
            resp.status = falcon.HTTP_503
            resp.set_header("Retry-After", "5")
            resp.media["reason"] = {
                "locked": "the database is locked by another process: writes wait",
                "unavailable": "the database does not answer"}.get(database_state, "the actors do not answer")
        if req.context.cluster:
            resp.media["actor_processes"] = dict(roster.processes) if actors == "ok" else {}


class ExecutorEvents:
    """`POST /internal/events`: an executor reports that jobs started, finished, were lost, or were
    cancelled where they ran (e.g. scancel of a Slurm job).

    The body is one event, or `{"events": [event, ...]}`: an executor sends what piled up while its
    previous report was on its way in one call.
    """

    EVENTS = {"started", "finished", "lost", "cancelled"}
    MAX_EVENTS = 1000

    def __init__(self, gateway: ActorGateway):
        self.gateway = gateway

    def on_post(self, req, resp):
        body = req.get_media()
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest(title="Invalid event", description="send a JSON object.")
        events = body["events"] if "events" in body else [body]
        if not isinstance(events, list) or not 1 <= len(events) <= self.MAX_EVENTS or ("events" in body and len(body) > 1):
            raise falcon.HTTPBadRequest(title="Invalid events",
                                        description=f"send one event, or an object whose only key is events: a list "
                                                    f"of 1 to {self.MAX_EVENTS} events.")
        parsed = [self.parse(event, index) for index, event in enumerate(events)]
        resp.status = falcon.HTTP_202
        resp.media = {"accepted": True}
        started = [(event.job_id, event.attempt) for event in parsed if event.event == "started"]
        if started:
            # NOTE: bookkeeping only, guarded by the attempt: recorded here so that the retriever's
            # queue holds only what frees slots.
            for job in jobs.mark_running(started, utcnow()):
                logs.event(log, "running", job=job.id, service=job.service, executor=job.executor,
                           attempt=job.attempts)
        for event in parsed:
            if event.event != "started":
                self.gateway.post(event, role="retriever")

    def parse(self, body, index: int) -> ExecutorEvent:
        body = body if isinstance(body, dict) else {}
        job_id, attempt, exit_code = body.get("job_id"), body.get("attempt"), body.get("exit_code")
        task_id, tail, reason = body.get("task_id"), body.get("stderr_tail"), body.get("reason")
        if not isinstance(body.get("event"), str) or body["event"] not in self.EVENTS \
                or not _int_in(job_id, 1, MAX_ID) \
                or not _int_in(attempt, 1, 2**31 - 1) or not (exit_code is None or _int_in(exit_code, -2**31, 2**31 - 1)) \
                or not (task_id is None or (isinstance(task_id, str) and 0 < len(task_id) <= 64)) \
                or not (tail is None or isinstance(tail, str)) \
                or not (reason is None or (isinstance(reason, str) and 0 < len(reason) <= REASON_CHARS)):
            raise falcon.HTTPBadRequest(
                title="Invalid event",
                description=f"event {index}: send a JSON object with job_id and attempt as positive integers, "
                            "event as started, finished, lost or cancelled, task_id as a string, exit_code as an "
                            f"integer or null, stderr_tail as a string or null, reason as 1 to {REASON_CHARS} "
                            "characters or null.")
        return ExecutorEvent(int(job_id), int(attempt), body["event"], task_id,
                             None if exit_code is None else int(exit_code),
                             tail[-STDERR_TAIL_CHARS:] if tail else None, reason)


class ExecutorRegistry:
    """`POST /internal/executors`: an executor's heartbeat (its first one registers it);
    `GET /executors`: every executor with its state, slots, running jobs, last_seen and last_error (with portal tokens,
    an operator view: web.auth lets only the cluster secret in)."""

    def __init__(self, config: ServerConfig, gateway: ActorGateway):
        self.config = config
        self.gateway = gateway

    def on_get_listing(self, req, resp):
        resp.media = {"executors": executors.listing()}

    def on_post(self, req, resp):
        body = req.get_media()
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest(title="Invalid heartbeat", description="send a JSON object.")
        service, url, slots, draining = body.get("service"), body.get("url"), body.get("slots"), body.get("draining")
        held, leaving, tier = body.get("tasks", []), body.get("leaving", False), body.get("tier", 1)
        if not isinstance(service, str) or not isinstance(url, str) or not _is_url(url) \
                or not _int_in(slots, 1, 4096) or not isinstance(draining, bool) or not _is_task_list(held) \
                or not isinstance(leaving, bool) or not _int_in(tier, 1, MAX_TIER):
            raise falcon.HTTPBadRequest(
                title="Invalid heartbeat",
                description=f"send service, url (http(s)://host:port), slots (1-4096), draining (true/false) "
                            f"and tasks, a list of [task_id, job_id, attempt] (and leaving, true/false, if it "
                            f"stops now; tier, 1-{MAX_TIER}, default 1).")
        if self.config.service(service) is None:
            raise falcon.HTTPNotFound(
                title="Unknown service",
                description=f"service {service[:64]!r} is not configured on this server; "
                            f"configured: {', '.join(s.name for s in self.config.services)}.")
        self.gateway.post(ExecutorHeartbeat(service, url.rstrip("/"), int(slots), draining,
                                            tuple((str(t), int(j), int(a)) for t, j, a in held), leaving,
                                            int(tier)),
                          role=f"dispatcher:{service}")
        resp.media = {"executor_timeout": self.config.executor_timeout}


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    # NOTE: printable, for the URL is a row's key, which cannot be made storable (storage/storable.py).
    return len(value) <= 1024 and value.isprintable() and parts.scheme in ("http", "https") and bool(parts.hostname)


def _is_task_list(value) -> bool:
    return isinstance(value, list) and len(value) <= 100_000 and all(
        isinstance(item, list) and len(item) == 3 and isinstance(item[0], str) and len(item[0]) <= 64
        and _int_in(item[1], 1, MAX_ID) and _int_in(item[2], 1, 2**31 - 1) for item in value)


def _int_in(value, low: int, high: int) -> bool:
    """An integer in [low, high]; JSON's 3.0 counts as the integer 3."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def create_app(config: ServerConfig, gateway: ActorGateway, stopping: threading.Event) -> falcon.App:
    app = new_app([metrics.HttpMetrics(),
                   ServerAuth(config.tokens, config.cluster_secret, config.operators, config.metrics_public),
                   WhileActorsRestart(gateway)], max_parts=config.max_files + 8)
    app.add_route("/", Ping())
    app.add_route("/health", Health(gateway))
    app.add_route("/upload", Upload(config, gateway, stopping))
    public = bool(config.tokens)  # with portals, jobs are named by their public ids
    app.add_route("/download/{job_id}", Download(public))
    app.add_route("/jobs", job_list.JobList(config))
    app.add_route("/jobs/{job_id}", JobView(config, public))
    cancel = Cancel(gateway, public)
    app.add_route("/jobs/{job_id}/cancel", cancel)
    app.add_route("/terminate/{job_id}", cancel)  # the newer original's name for it
    follow = Follow(config)
    app.add_route("/jobs/{job_id}/files/{name:path}", follow, suffix="file")
    app.add_route("/jobs/{job_id}/log", follow, suffix="log")
    app.add_route("/download_partial/{job_id}", follow, suffix="partial")
    app.add_route("/jobs/{job_id}/webhooks", events.JobWebhooks(public))
    app.add_route("/events", events.Events())
    app.add_route("/internal/events", ExecutorEvents(gateway))
    registry = ExecutorRegistry(config, gateway)
    app.add_route("/internal/executors", registry)
    app.add_route("/executors", registry, suffix="listing")
    app.add_route("/services", overview.Services(config))
    app.add_route("/status", overview.StatusPage(config))
    usage = metrics.StorageUsage({"jobs": config.jobs_path, "results": config.results_path,
                                  "incoming": config.incoming_path}, config.metrics_cache_seconds)
    metrics.add_route(app, config.data_dir, [metrics.ServerState(usage, config.metrics_cache_seconds)])
    openapi.add_routes(app, config)
    tes_routes.add_routes(app, config, gateway, stopping)
    return app
