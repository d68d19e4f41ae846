"""The TES resources: service-info, create, list, get and cancel of tasks (web/tes/__init__.py).

Runs in the server's main process (web threads). A created task is stored as a Queued job with its
document in one transaction (storage/tes_tasks.py), then the queue is told, as `POST /upload` does.
Errors are 4xx with {title, description}; py-tes treats 404 and 5xx as "try the next base URL",
so an unknown task is a 404 and nothing here answers 5xx on purpose.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from itertools import zip_longest

import falcon

from actors.messages import JobQueued
from conf import logs
from conf.settings import ServerConfig
from conf.version import VERSION
from storage import job_events, jobs, tes_tasks
from storage.clock import epoch, utcnow
from web import job_list, job_refs
from web.gateway import ActorGateway
from web.tes import script, validate, views

PREFIX = "/ga4gh/tes/v1"
DEFAULT_PAGE_SIZE = 256
#: The issue's bound (the spec's text says "less than 2048"; a client asking for 2048 gets it).
MAX_PAGE_SIZE = 2048
log = logging.getLogger("orchestrator.web")


def bad_query(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Invalid task query", description=description)


def public_base(req, config: ServerConfig) -> str:
    """The server's URL as the client reaches it, for the download URLs of a task's outputs: `[tes]
    public_url` (behind a proxy), else the address this request came to."""
    return config.tes.public_url or req.prefix


def _view(req) -> str:
    view = req.get_param("view") or "MINIMAL"
    if view not in views.VIEWS:
        raise bad_query(f"view must be one of {', '.join(views.VIEWS)}, got {view[:40]!r}.")
    return view


class ServiceInfo:
    """`GET /service-info`: who we are; the statement that no container engine runs the images."""

    def __init__(self, config: ServerConfig):
        self.config = config

    def on_get(self, req, resp):
        images = ", ".join(f"{image} → {service}" for image, service in self.config.tes.images)
        default = self.config.tes.default_service
        resp.media = {
            "id": "org.orchestrator.tes", "name": "orchestrator",
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
            "description": ("GA4GH TES 1.1 over the orchestrator's queue, quotas and fair share. Commands run "
                            "without a container engine: a task's image only selects the service whose executors "
                            f"run it ({images or 'no image listed'}; any other image: "
                            f"{default or 'refused'})."),
            "organization": {"name": "orchestrator", "url": "https://github.com/rvhonorato/orchestrator"},
            "version": VERSION, "storage": [],
            "tesResources_backend_parameters": list(validate.BACKEND_PARAMETERS)}


class Tasks:
    """`POST /tasks` (create) and `GET /tasks` (list, newest first)."""

    def __init__(self, config: ServerConfig, gateway: ActorGateway, stopping: threading.Event):
        self.config = config
        self.gateway = gateway
        self.stopping = stopping

    def on_post(self, req, resp):
        if self.stopping.is_set():
            raise falcon.HTTPServiceUnavailable(title="Shutting down", retry_after=10,
                                                description="the server is stopping; send the task again shortly.")
        portal = req.context.portal
        if portal == jobs.EVERY_PORTAL:
            raise falcon.HTTPForbidden(title="Portals only", description=(
                "operators do not submit tasks: a task belongs to a portal; send the portal's token."))
        accepted = validate.task(req.get_media(), self.config)
        folder = os.path.join(self.config.jobs_path, uuid.uuid4().hex)
        now = utcnow()
        if accepted.unsupported is not None:
            resp.media = {"id": str(self.create_failed(accepted, folder, now, portal))}
            return
        os.makedirs(folder)
        try:
            script.write_job_files(folder, accepted.document, accepted.plan)
            job_id, view = jobs.create_job(accepted.user_id, accepted.service, folder, now, portal,
                                           self.config.service(accepted.service).max_queued_per_user, None,
                                           accepted.labels, tes_tasks.writer(accepted.document, portal))
        except jobs.QueueFull:
            shutil.rmtree(folder, ignore_errors=True)
            raise falcon.HTTPTooManyRequests(
                title="Too many queued tasks", retry_after=30,
                description=f"user {accepted.user_id} already has the most tasks waiting in {accepted.service} "
                            f"(max_queued_per_user); send more once some have started.") from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        logs.event(log, "queued", job=job_id, user=accepted.user_id, portal=portal, service=accepted.service,
                   tes=True, executors=len(accepted.document["executors"]))
        self.gateway.post(JobQueued(job_id, accepted.service, accepted.user_id, portal, accepted.labels.priority,
                                    accepted.labels.group, epoch(now)), role="queue")
        resp.media = {"id": str(view["id"])}

    @staticmethod
    def create_failed(accepted: validate.Accepted, folder: str, now, portal: str | None) -> int | str:
        """Store a task that cannot run (`accepted.unsupported`) as a Failed job: never queued, so
        no actor is told; its `failed` event as any job's end. Its folder is never made: it has no
        files to run. Returns its id."""
        ended, view = jobs.create_failed(accepted.user_id, accepted.service, folder, now, accepted.unsupported,
                                         portal, accepted.labels, tes_tasks.writer(accepted.document, portal))
        job_events.ended(log, ended)
        return view["id"]

    def on_get(self, req, resp):
        view = _view(req)
        state = req.get_param("state")
        if state is not None and state not in views.STATES:
            raise bad_query(f"state must be one of {', '.join(views.STATES)}, got {state[:40]!r}.")
        keys, values = req.get_param_as_list("tag_key") or [], req.get_param_as_list("tag_value") or []
        if len(values) > len(keys):
            raise bad_query("send a tag_key for every tag_value (they are paired in order).")
        if any("\x00" in text for text in (req.get_param("name_prefix") or "", *keys, *values)):
            raise bad_query("name_prefix, tag_key and tag_value cannot hold NUL.")  # no task's can (validate.py)
        filters = tes_tasks.Filters(req.get_param("name_prefix") or "", state,
                                    tuple(zip_longest(keys, values, fillvalue="")))
        size = req.get_param_as_int("page_size", min_value=1, max_value=MAX_PAGE_SIZE) or DEFAULT_PAGE_SIZE
        token = req.get_param("page_token")
        after = job_list.decode_cursor(token) if token else None
        found, more = tes_tasks.page(req.context.portal, filters, after, size, documents=view != "MINIMAL")
        resp.media = {"tasks": [views.task_view(task, view, public_base(req, self.config)) for task in found]}
        if more:
            resp.media["next_page_token"] = job_list.encode_cursor(found[-1].ref)


class Task:
    """`GET /tasks/{id}` and `POST /tasks/{id}:cancel` (200 `{}` also for a task that had ended: TES
    clients take any other answer as a failure, and a retried cancel must not fail)."""

    def __init__(self, gateway: ActorGateway, config: ServerConfig):
        self.gateway = gateway
        self.config = config
        self.public = bool(config.tokens)

    def on_get(self, req, resp, task_id):
        view = _view(req)
        task = tes_tasks.find(self._ref(task_id), req.context.portal)
        if task is None:
            raise unknown_task(task_id)
        resp.media = views.task_view(task, view, public_base(req, self.config))

    def on_post_cancel(self, req, resp, task_id):
        ref = self._ref(task_id)
        if tes_tasks.find(ref, req.context.portal) is None:
            raise unknown_task(task_id)
        job_refs.cancel(self.gateway, ref, req.context.portal)
        resp.media = {}

    def _ref(self, raw: str) -> int | str:
        try:
            return job_refs.job_ref(raw, self.public)
        except falcon.HTTPBadRequest:
            raise unknown_task(raw) from None  # a malformed id names no task either


def unknown_task(raw: str) -> falcon.HTTPNotFound:
    return falcon.HTTPNotFound(title="Unknown task", description=f"there is no task {raw[:80]}.")


def add_routes(app: falcon.App, config: ServerConfig, gateway: ActorGateway, stopping: threading.Event) -> None:
    app.add_route(f"{PREFIX}/service-info", ServiceInfo(config))
    app.add_route(f"{PREFIX}/tasks", Tasks(config, gateway, stopping))
    task = Task(gateway, config)
    app.add_route(f"{PREFIX}/tasks/{{task_id}}", task)
    app.add_route(f"{PREFIX}/tasks/{{task_id}}:cancel", task, suffix="cancel")
