"""ExecutorActor: runs the node's tasks (`bash run.sh`), at most `slots` at once, and reports back.

Accepts: ConfigureExecutor (from run_client.py: recover the task table, answer Pong), RunTask (from
the node's web layer), Ping, WakeupMessage ("poll" while tasks run, "retry" for unsent reports,
"sweep" for retention), ActorExitRequest (stop the running scripts).

Each script runs in its own process group with stdout and stderr in files of its folder. The exit
code is written to the node's database before the server is told, so a report that fails to reach
the server is sent again, and a restarted node still answers for every task.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections import deque
from datetime import timedelta

import requests
from thespian.actors import ActorExitRequest, ActorTypeDispatcher, WakeupMessage

from actors.lifeline import die_with_parent
from actors.messages import ConfigureExecutor, Ping, Pong, RunTask
from actors.scheduling import sweep_interval
from storage import database, tasks
from storage.executor_models import TaskState, db
from storage.clock import utcnow

#: Exit polling starts fast for short scripts and slows down for long ones.
POLL_MIN_SECONDS = 0.005
POLL_MAX_SECONDS = 0.25
RETRY_SECONDS = 2.0
REPORT_TIMEOUT = (2.0, 10.0)
STDERR_TAIL_BYTES = 4000

log = logging.getLogger("orchestrator.executor")


def stderr_tail(folder: str) -> str:
    try:
        with open(os.path.join(folder, "stderr.log"), "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - STDERR_TAIL_BYTES))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


class ExecutorActor(ActorTypeDispatcher):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.running: dict[int, subprocess.Popen] = {}
        self.started_at: dict[int, float] = {}
        self.waiting: deque[int] = deque()
        self.polling = False
        self.retrying = False

    def receiveMsg_ConfigureExecutor(self, msg: ConfigureExecutor, sender) -> None:
        die_with_parent()
        self.config = msg.config
        database.bind(db, msg.config.database_url, create_tables=False)
        self.session = requests.Session()
        self.recover()
        self.send(sender, Pong("executor"))
        self.sweep_every = sweep_interval([self.config.retention_hours * 3600.0])
        self.wakeupAfter(self.sweep_every, payload="sweep")
        self.report_pending()
        self.start_more()

    def recover(self) -> None:
        """A task that was running when the node stopped is lost: its outcome cannot be known."""
        for task_id, pid in tasks.running_pids():
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            tasks.mark_ended(task_id, TaskState.LOST, utcnow())
        self.waiting.extend(tasks.ids_in(TaskState.ACCEPTED))

    def receiveMsg_RunTask(self, msg: RunTask, sender) -> None:
        if msg.task_id not in self.running and msg.task_id not in self.waiting:
            self.waiting.append(msg.task_id)
        self.start_more()

    def receiveMsg_Ping(self, msg: Ping, sender) -> None:
        self.send(sender, Pong("executor"))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender) -> None:
        for process in self.running.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        if msg.payload == "poll":
            self.polling = False
            self.reap()
            self.start_more()
        elif msg.payload == "retry":
            self.retrying = False
            self.report_pending()
        elif msg.payload == "sweep":
            self.sweep()
            self.wakeupAfter(self.sweep_every, payload="sweep")

    # --- running --------------------------------------------------------------------------------

    def start_more(self) -> None:
        while self.config and self.waiting and len(self.running) < self.config.slots:
            self.start(self.waiting.popleft())
        if self.running and not self.polling:
            self.polling = True
            youngest = time.monotonic() - max(self.started_at.values())
            self.wakeupAfter(min(POLL_MAX_SECONDS, max(POLL_MIN_SECONDS, youngest / 20)), payload="poll")

    def start(self, task_id: int) -> None:
        task = tasks.find(task_id)
        if task is None or task["state"] != TaskState.ACCEPTED.value:
            return
        folder = task["dir"]
        with open(os.path.join(folder, "stdout.log"), "wb") as out, \
                open(os.path.join(folder, "stderr.log"), "wb") as err:
            process = subprocess.Popen(["bash", "run.sh"], cwd=folder, stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=err, start_new_session=True)
        self.running[task_id] = process
        self.started_at[task_id] = time.monotonic()
        tasks.mark_running(task_id, process.pid, utcnow())
        self.report(task_id, "started")

    def reap(self) -> None:
        for task_id, process in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            del self.running[task_id]
            del self.started_at[task_id]
            task = tasks.find(task_id)
            # NOTE: a script killed by signal N reports 128+N, as a shell would.
            exit_code = code if code >= 0 else 128 - code
            tasks.mark_ended(task_id, TaskState.FINISHED, utcnow(), exit_code, stderr_tail(task["dir"]))
            self.report(task_id, "finished")

    # --- reporting to the server ----------------------------------------------------------------

    def report(self, task_id: int, event: str) -> None:
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
            response = self.session.post(f"{url}/internal/events", json=body, timeout=REPORT_TIMEOUT)
            delivered = response.status_code < 500
        except requests.RequestException:
            delivered = False
        if final and delivered:
            tasks.mark_reported(task_id)
        elif final and not self.retrying:
            self.retrying = True
            self.wakeupAfter(RETRY_SECONDS, payload="retry")

    def report_pending(self) -> None:
        for task_id in tasks.unreported():
            task = tasks.find(task_id)
            self.report(task_id, "finished" if task["state"] == TaskState.FINISHED.value else "lost")

    # --- retention ------------------------------------------------------------------------------

    def sweep(self) -> None:
        cutoff = utcnow() - timedelta(hours=self.config.retention_hours)
        for task_id, folder in tasks.expired(cutoff):
            if tasks.mark_cleaned(task_id):
                shutil.rmtree(folder, ignore_errors=True)
                try:
                    os.remove(tasks.zip_file(self.config.data_path, task_id))
                except FileNotFoundError:
                    pass
