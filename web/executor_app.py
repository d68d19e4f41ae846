"""An executor node's HTTP API (Falcon): submit, retrieve, task status, delete, health; a running
task's files, logs and partial zip (web/task_follow.py).

Only the server calls it. `POST /submit` stores the bundle and the task row, then tells the
ExecutorActor; a repeated submit of the same (job_id, attempt) returns the task it already has. A TES
task comes with its plan (the field `tes_plan`, storage/node/tes_plan.py), kept on its row.
With backend = slurm, a node that cannot reach Slurm says so on /health (503, `unhealthy`, with the
reason) and refuses new jobs with 503 until Slurm answers again.
"""
from __future__ import annotations

import logging
import re
import shutil
import threading
from typing import Callable

import falcon

from actors.messages import KillTask, RunTask
from conf import logs
from conf.settings import ClientConfig
from storage.clock import utcnow
from storage.node import tasks, tes_plan
from storage.node.states import WAITING, TaskState
from web import scheduling_fields, uploads
from web import metrics
from web.auth import ExecutorAuth
from web.common import Ping, WhileActorsRestart, new_app, parse_id, send_zip
from web.gateway import ActorGateway
from web.task_follow import TaskFollow
from web.zip_once import ZipFailed, ZipOnce

log = logging.getLogger("orchestrator.web")
JOB_UID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
#: The server checks its own limit; this one only bounds what a bundle may hold.
MAX_FILES = 10_000
#: The largest task id and attempt the task table holds (32-bit columns): a larger one in a path
#: is a 400, not a 500 from the database layer.
MAX_TASK_NUMBER = 2**31 - 1
#: Seconds the node's /metrics may answer with a previous measure of the disk its folders take.
STORAGE_SECONDS = 60.0


def task_number(raw: str, what: str = "task id") -> int:
    return parse_id(raw, what, MAX_TASK_NUMBER)


#: Why the node's backend cannot take work now; None when it can.
Problem = Callable[[], "str | None"]


class Submit:
    def __init__(self, config: ClientConfig, gateway: ActorGateway, stopping: threading.Event, problem: Problem):
        self.config = config
        self.gateway = gateway
        self.stopping = stopping
        self.problem = problem
        self.incoming = config.incoming_path
        self.tasks_dir = config.tasks_path

    def on_post(self, req, resp):
        staging, (job_id, job_uid, attempt, callback, max_runtime, plan) = uploads.receive(
            req, self.incoming, {"job_id", "job_uid", "attempt", "callback_url", "max_runtime", "tes_plan"},
            self.config.max_upload_mb * 1024 * 1024, self.check, max_files=MAX_FILES)
        existing = tasks.find_attempt(job_uid, attempt)
        problem = self.problem()
        if existing is not None or self.stopping.is_set() or problem:
            shutil.rmtree(staging, ignore_errors=True)
        if existing is not None:  # a repeated submit: the server did not hear our first answer
            resp.media = existing
            return
        if self.stopping.is_set():
            raise falcon.HTTPServiceUnavailable(title="Draining", retry_after=5,
                                                description="this executor is draining and takes no new jobs.")
        if problem:
            raise falcon.HTTPServiceUnavailable(title="Unhealthy", retry_after=5,
                                                description=f"this executor takes no new jobs: {problem}.")
        task = uploads.settle(staging, self.tasks_dir, lambda folder: tasks.create(
            job_id, job_uid, attempt, callback, folder, utcnow(), max_runtime, plan))
        logs.event(log, "task_accepted", task=int(task["id"]), job=job_id, attempt=attempt)
        self.gateway.tell(RunTask(int(task["id"])))
        resp.media = task

    @staticmethod
    def check(fields: dict[str, str], names: list[str]) -> tuple[int, str, int, str, int | None, str | None]:
        job_id = uploads.positive_int(fields, "job_id")
        attempt = uploads.positive_int(fields, "attempt", limit=2**31 - 1)
        job_uid = fields.get("job_uid", "")
        if not JOB_UID.match(job_uid):
            raise uploads.bad_request("job_uid must be 1 to 64 letters, digits or '-'.")
        uploads.require_script(names)
        plan = fields.get("tes_plan")
        if plan is not None:
            try:
                tes_plan.parse(plan)
            except tes_plan.PlanError as exc:
                raise uploads.bad_request(f"tes_plan is not a TES plan this node can run: {exc}.") from None
        return (job_id, job_uid, attempt, fields.get("callback_url", "").strip().rstrip("/"),
                scheduling_fields.max_runtime(fields, None), plan)


class Retrieve:
    """`GET`/`HEAD /retrieve/{id}`: the task folder as a zip once run.sh has ended; 202 before, and
    while its zip is still being made (web/zip_once.py: the ExecutorActor begins it when the script
    ends; this makes it only if nobody did).

    A zip that cannot be made answers 409, never a 5xx: the folder is whatever the script left.
    The server then keeps the job as it is and fetches again at its next sweep.
    """

    def __init__(self, config: ClientConfig):
        self.config = config
        self.zips = ZipOnce()

    def on_get(self, req, resp, task_id):
        self.answer(resp, task_number(task_id), with_body=True)

    def on_head(self, req, resp, task_id):
        self.answer(resp, task_number(task_id), with_body=False)

    def answer(self, resp, task_id: int, *, with_body: bool) -> None:
        task = tasks.find(task_id)
        if task is None:
            raise falcon.HTTPNotFound(title="Unknown task", description=f"there is no task {task_id}.")
        if TaskState(task["state"]) in WAITING:
            resp.status = falcon.HTTP_202
            return
        if task["state"] == TaskState.FINISHED.value:
            path = self.config.zip_file(task_id)
            try:
                ready = self.zips.ready(task["dir"], path)
            except ZipFailed as exc:
                raise falcon.HTTPConflict(title="Results not zipped",
                                          description=f"the task's folder could not be zipped ({exc}; logged on "
                                                      f"the executor). Ask again later.") from exc
            if not ready:
                resp.status = falcon.HTTP_202
                resp.set_header("Retry-After", "5")
                return
            if send_zip(resp, path, f"task-{task_id}.zip", with_body=with_body):
                if with_body:
                    tasks.mark_retrieved(task_id, utcnow())
                return
        resp.status = falcon.HTTP_204


class TaskResource:
    """`GET /jobs/{id}`: the task's record; `DELETE /jobs/{id}`: remove an ended task's data."""

    def __init__(self, config: ClientConfig, gateway: ActorGateway):
        self.config = config
        self.gateway = gateway

    def on_get(self, req, resp, task_id):
        task = tasks.find(task_number(task_id))
        if task is None:
            raise falcon.HTTPNotFound(title="Unknown task", description=f"there is no task {task_id}.")
        resp.media = {k: v for k, v in task.items() if k not in ("dir", "callback_url", "job_uid", "tes_plan")}

    def on_delete(self, req, resp, task_id):
        number = task_number(task_id)
        task = tasks.find(number)
        if task is None:
            raise falcon.HTTPNotFound(title="Unknown task", description=f"there is no task {task_id}.")
        if not tasks.mark_cleaned(number):
            raise falcon.HTTPConflict(title="Task still active",
                                      description="the task is waiting or running; delete it once it ended.")
        tasks.remove_folder(task["dir"])
        tasks.remove_zip(self.config.zip_file(number))
        resp.media = {"id": str(number), "state": TaskState.CLEANED.value}

    def on_post_kill(self, req, resp, task_id):
        """`POST /jobs/{id}/kill`: the server stops a task whose attempt it no longer counts."""
        number = task_number(task_id)
        if tasks.find(number) is None:
            raise falcon.HTTPNotFound(title="Unknown task", description=f"there is no task {task_id}.")
        self.gateway.tell(KillTask(number))
        resp.status = falcon.HTTP_202
        resp.media = {"id": str(number), "kill": "requested"}


class Attempt:
    """`GET /attempts/{job_uid}/{attempt}`: the task holding that attempt of a server job, if any.

    The server asks this when it never heard the answer to its submit (it crashed meanwhile)."""

    def on_get(self, req, resp, job_uid, attempt):
        task = tasks.find_attempt(job_uid, task_number(attempt, "attempt")) if JOB_UID.match(job_uid) else None
        if task is None:
            raise falcon.HTTPNotFound(title="Unknown attempt", description="no task holds that attempt.")
        resp.media = task


class Health:
    """`GET /health`: the node's service, backend, overflow tier, its slots (total and free), and
    whether it is draining; 503 when its actor does not answer (`unavailable`) or its backend cannot take work (`unhealthy`,
    with the `reason`); while its actor system is rebuilt, WhileActorsRestart answers (`restarting`)."""

    def __init__(self, config: ClientConfig, gateway: ActorGateway, stopping: threading.Event, problem: Problem):
        self.config = config
        self.gateway = gateway
        self.stopping = stopping
        self.problem = problem

    def on_get(self, req, resp):
        counts = tasks.counts()
        running = counts[TaskState.RUNNING.value]
        alive = self.gateway.alive()
        problem = self.problem()
        status = "unavailable" if not alive else "unhealthy" if problem else \
            "draining" if self.stopping.is_set() else "ok"
        resp.status = falcon.HTTP_200 if alive and not problem else falcon.HTTP_503
        resp.media = {"status": status, "service": self.config.service, "backend": self.config.backend,
                      "tier": self.config.tier, "slots": self.config.slots, "free": max(0, self.config.slots - running),
                      "running": running, "waiting": counts[TaskState.ACCEPTED.value],
                      "tasks": tasks.held()}
        if problem:
            resp.media["reason"] = problem


def create_app(config: ClientConfig, gateway: ActorGateway, stopping: threading.Event,
               problem: Problem = lambda: None) -> falcon.App:
    """`problem`: why the node's backend cannot take work now (run_client.py gives a Slurm node
    its health check); a local node can always take work."""
    app = new_app([metrics.HttpMetrics(), ExecutorAuth(config.cluster_secret, config.metrics_public),
                   WhileActorsRestart(gateway)], max_parts=MAX_FILES + 8)
    app.add_route("/", Ping())
    app.add_route("/health", Health(config, gateway, stopping, problem))
    app.add_route("/submit", Submit(config, gateway, stopping, problem))
    app.add_route("/retrieve/{task_id}", Retrieve(config))
    task = TaskResource(config, gateway)
    app.add_route("/jobs/{task_id}", task)
    app.add_route("/jobs/{task_id}/kill", task, suffix="kill")
    app.add_route("/attempts/{job_uid}/{attempt}", Attempt())
    follow = TaskFollow(config, task_number)
    app.add_route("/jobs/{task_id}/files/{name:path}", follow, suffix="file")
    app.add_route("/jobs/{task_id}/log", follow, suffix="log")
    app.add_route("/retrieve_partial/{task_id}", follow, suffix="partial")
    usage = metrics.StorageUsage({"tasks": config.tasks_path, "zips": config.zips_path}, STORAGE_SECONDS)
    metrics.add_route(app, config.data_path, [metrics.NodeState(config.service, config.slots, usage)])
    return app
