"""ExecutorActor: runs the node's tasks (`bash run.sh`), at most `slots` at once, and reports back.

Accepts: ConfigureExecutor (from run_client.py: recover the task table, answer Pong), RunTask and
KillTask (from the node's web layer), Drain (from run_client.py on SIGTERM: announce draining,
answer Drained with what is left), Ping, WakeupMessage ("poll" while tasks run; "tick" every
TICK_SECONDS to re-send undelivered reports and pick up accepted tasks it has not heard of;
"sweep" for retention), ActorExitRequest (stop the running scripts).

The exit code is written to the node's database before the server is told, so a report that fails
to reach the server is sent again, and a restarted node still answers for every task. A task that
was running when the node stopped is lost: its outcome cannot be known, and it says so.
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

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, WakeupMessage

from actors import process_logging, scripts
from actors.lifeline import die_with_parent
from actors.messages import ConfigureExecutor, Drain, Drained, KillTask, Ping, Pong, RunTask
from actors.reporter import Reporter
from actors.scheduling import sweep_interval
from storage import database, tasks
from storage.clock import utcnow
from storage.executor_models import TaskState, db

#: Exit polling starts fast for short scripts and slows down for long ones.
POLL_MIN_SECONDS = 0.005
POLL_MAX_SECONDS = 0.25
TICK_SECONDS = 2.0
#: How long scripts get to end after SIGTERM when the node stops.
STOP_GRACE_SECONDS = 3.0

log = logging.getLogger("orchestrator.executor")


class ExecutorActor(ActorTypeDispatcher):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.running: dict[int, subprocess.Popen] = {}
        self.started_at: dict[int, float] = {}
        self.waiting: deque[int] = deque()
        self.polling = False
        die_with_parent()
        process_logging.apply_thresholds()

    def receiveMsg_ConfigureExecutor(self, msg: ConfigureExecutor, sender) -> None:
        self.config = msg.config
        database.bind(db, msg.config.database_url, create_tables=False)
        self.reporter = Reporter(self.config)
        self.recover()
        self.send(sender, Pong("executor", (("executor", os.getpid()),)))
        self.sweep_every = sweep_interval([self.config.retention_hours * 3600.0])
        self.wakeupAfter(self.sweep_every, payload="sweep")
        self.tick()

    def recover(self) -> None:
        """Stop what a previous run of the node left running; those tasks are lost."""
        for task_id, pid, started in tasks.running_pids():
            if pid:
                scripts.kill_group(pid, signal.SIGKILL, started)
            tasks.mark_ended(task_id, TaskState.LOST, utcnow())

    def receiveMsg_RunTask(self, msg: RunTask, sender) -> None:
        if msg.task_id not in self.running and msg.task_id not in self.waiting:
            self.waiting.append(msg.task_id)
        self.start_more()

    def receiveMsg_Ping(self, msg: Ping, sender) -> None:
        self.send(sender, Pong("executor"))

    def receiveMsg_KillTask(self, msg: KillTask, sender) -> None:
        process = self.running.pop(msg.task_id, None)
        if process is not None:
            scripts.kill_group(process.pid)
            process.wait()
            del self.started_at[msg.task_id]
        else:
            task = tasks.find(msg.task_id)
            if task is None or task["state"] != TaskState.ACCEPTED.value:
                return  # it ended already
            if msg.task_id in self.waiting:
                self.waiting.remove(msg.task_id)
        log.warning("task %d killed: the server no longer counts its attempt", msg.task_id)
        tasks.mark_ended(msg.task_id, TaskState.KILLED, utcnow())
        self.start_more()

    def receiveMsg_Drain(self, msg: Drain, sender) -> None:
        if not self.reporter.draining:
            self.reporter.draining = True
            self.reporter.beat_now()
        counts = tasks.counts()
        self.send(sender, Drained(sum(counts.values()) + len(tasks.unreported())))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender) -> None:
        self.stop_all()

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        try:
            self.on_timer(msg.payload)
        except Exception:  # noqa: BLE001 — a retry would arm the timer twice; the next round retries
            log.exception("executor timer %r failed", msg.payload)

    def on_timer(self, payload: str) -> None:
        if payload == "poll":
            self.polling = False
            self.reap()
            self.start_more()
        elif payload == "tick":
            self.tick()
        elif payload == "sweep":
            try:
                self.sweep()
            finally:
                self.wakeupAfter(self.sweep_every, payload="sweep")

    def tick(self) -> None:
        """The slow backstop: undelivered reports, and accepted tasks no RunTask announced."""
        try:
            for task_id in tasks.unreported():
                task = tasks.find(task_id)
                self.reporter.report(task_id, "finished" if task["state"] == TaskState.FINISHED.value else "lost")
            for task_id in tasks.ids_in(TaskState.ACCEPTED):
                if task_id not in self.running and task_id not in self.waiting:
                    self.waiting.append(task_id)
            self.start_more()
        finally:
            self.wakeupAfter(TICK_SECONDS, payload="tick")

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
        try:
            process = scripts.launch(task["dir"])
        except OSError as exc:
            log.error("task %d could not be started: %s", task_id, exc)
            tasks.mark_ended(task_id, TaskState.FINISHED, utcnow(), 126, f"the executor could not start run.sh: {exc}")
            self.reporter.report(task_id, "finished")
            return
        self.running[task_id] = process
        self.started_at[task_id] = time.monotonic()
        tasks.mark_running(task_id, process.pid, scripts.start_time(process.pid), utcnow())
        self.reporter.report(task_id, "started")

    def reap(self) -> None:
        for task_id, process in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            # NOTE: what run.sh left in the background dies with it; its folder is its result.
            scripts.kill_group(process.pid)
            task = tasks.find(task_id)
            tasks.mark_ended(task_id, TaskState.FINISHED, utcnow(), scripts.exit_code(code),
                             scripts.stderr_tail(task["dir"]))
            del self.running[task_id]
            del self.started_at[task_id]
            self.reporter.report(task_id, "finished")

    def stop_all(self) -> None:
        """The node is stopping: end every script (TERM, then KILL) and record them as lost."""
        for process in self.running.values():
            scripts.kill_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and any(scripts.group_alive(p.pid) for p in self.running.values()):
            for process in self.running.values():
                process.poll()
            time.sleep(0.05)
        for task_id, process in self.running.items():
            scripts.kill_group(process.pid)
            process.poll()
            tasks.mark_ended(task_id, TaskState.LOST, utcnow())
        self.running.clear()

    # --- retention ------------------------------------------------------------------------------

    def sweep(self) -> None:
        cutoff = utcnow() - timedelta(hours=self.config.retention_hours)
        for task_id, folder in tasks.expired(cutoff):
            if tasks.mark_cleaned(task_id):
                shutil.rmtree(folder, ignore_errors=True)
                tasks.remove_zip(self.config.data_path, task_id)
