"""ExecutorActor: runs the node's tasks through its backend, at most `slots` at once, and reports back.

Accepts: ConfigureExecutor (from run_client.py: recover the task table, answer Pong), RunTask and
KillTask (from the node's web layer), Drain (from run_client.py on SIGTERM: announce draining,
answer Drained with what is left, the farewell to the server included), Ping, WakeupMessage
(("poll", n) while tasks run; "tick" every TICK_SECONDS to re-send undelivered reports and pick up accepted tasks it has not heard of;
"sweep" for retention), ActorExitRequest (stop the running scripts).

Where a task runs is the backend's business (actors/node/backends/): `bash run.sh` on this host,
or a Slurm job. The actor keeps the queue of waiting tasks, the slots and the reports.

A task whose script succeeded gets its result zip made at once, in a thread (web/zip_once.py), so
the server's fetch finds it ready and one slow folder holds up no other task; a node that stopped
before a zip was made makes it when it starts again.

The exit code is written to the node's database before the server is told, so a report that fails
to reach the server is sent again, and a restarted node still answers for every task. An end that
cannot be written (the node's disk is full) is kept, holding its slot, and written again at each
tick until it is: the task is never forgotten before its end is saved. The tick also finishes a
task whose row says running but that no process runs and nothing here tracks (`vanished`). A local task
that was running when the node stopped is lost: its outcome cannot be known, and it says so. A
Slurm job outlives the node, which re-attaches to it when it starts again.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from datetime import datetime, timedelta
from typing import Callable

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, WakeupMessage

from actors.messages import ConfigureExecutor, Drain, Drained, KillTask, Ping, Pong, RunTask
from actors.node.backends.base import REPORT_OF, Ended, Started, make_backend
from actors.node.reporter import Reporter
from actors.runtime import process_logging
from actors.runtime.lifeline import die_with_parent
from actors.runtime.processes import start_time
from conf import logs
from conf.settings import sweep_interval
from storage import database
from storage import clock
from storage.node import tasks
from storage.node.models import db
from storage.node.states import TaskState
from web.zip_once import ZipOnce

TICK_SECONDS = 2.0
#: How long a draining node waits for the server to fetch a result after the task ended (the server
#: may never: the job was cancelled meanwhile).
DRAIN_FETCH_WAIT = 30.0

log = logging.getLogger("orchestrator.executor")


class ExecutorActor(ActorTypeDispatcher):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.backend = None
        self.waiting: deque[int] = deque()
        #: (job id, attempt) of the tasks this actor started, for their events (`task_event`).
        self.attempts: dict[int, tuple[int, int]] = {}
        #: Ends the backend reported that could not be written yet, by task id: each holds its slot.
        self.unsaved: dict[int, Ended] = {}
        #: When the armed poll is due (monotonic seconds), and its number: a poll armed sooner for a
        #: newly started task supersedes it (Thespian cannot cancel a timer; a superseded one is ignored).
        self.poll_due: float | None = None
        self.poll_number = 0
        die_with_parent()
        process_logging.apply_thresholds()

    def receiveMsg_ConfigureExecutor(self, msg: ConfigureExecutor, sender) -> None:
        self.config = msg.config
        database.bind(db, msg.config.database_url, create_tables=False)
        self.backend = make_backend(self.config, msg.wrapping, msg.cgroups)
        self.reporter = Reporter(self.config, self.backend.problem, msg.node_pid)
        self.zips = ZipOnce()
        self.settle(self.backend.recover())
        for task_id, folder in tasks.fetched_folders():  # results a stopped node did not zip
            if not os.path.exists(self.config.zip_file(task_id)):
                self.zips.start(folder, self.config.zip_file(task_id))
        self.send(sender, Pong("executor", (("executor", os.getpid()),)))
        self.sweep_every = sweep_interval([self.config.retention_hours * 3600.0])
        self.wakeupAfter(self.sweep_every, payload="sweep")
        self.tick()

    def receiveMsg_RunTask(self, msg: RunTask, sender) -> None:
        if msg.task_id not in self.waiting:
            self.waiting.append(msg.task_id)
        self.start_more()

    def receiveMsg_Ping(self, msg: Ping, sender) -> None:
        self.send(sender, Pong("executor"))

    def receiveMsg_KillTask(self, msg: KillTask, sender) -> None:
        if not self.backend.kill(msg.task_id):
            task = tasks.find(msg.task_id)
            if task is None or task["state"] != TaskState.ACCEPTED.value:
                return  # it ended already
            if msg.task_id in self.waiting:
                self.waiting.remove(msg.task_id)
        if tasks.mark_ended(msg.task_id, TaskState.KILLED, clock.utcnow()):
            self.task_event("killed", msg.task_id, reason="the server no longer counts its attempt")
        self.start_more()

    def receiveMsg_Drain(self, msg: Drain, sender) -> None:
        if not self.reporter.draining:
            self.reporter.draining = True
            self.reporter.beat_now()
        counts = tasks.counts()
        # NOTE: a node that left before the server fetched a result would have its job run again.
        unfetched = tasks.awaiting_retrieval(clock.utcnow() - timedelta(seconds=DRAIN_FETCH_WAIT))
        remaining = sum(counts.values()) + len(tasks.unreported()) + unfetched
        if remaining == 0:
            self.reporter.leave()  # nothing left: the last heartbeat says so (the server lists it gone)
        self.send(sender, Drained(remaining + (not self.reporter.left)))

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender) -> None:
        if self.backend is not None:
            for ended in self.backend.stop_all():
                if tasks.mark_ended(ended.task_id, ended.state, clock.utcnow(), ended.exit_code, ended.stderr_tail,
                                    ended.reason):
                    self.task_event(ended.state.value, ended.task_id, exit_code=ended.exit_code, reason=ended.reason)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        try:
            self.on_timer(msg.payload)
        except Exception:  # noqa: BLE001 — a retry would arm the timer twice; the next round retries
            log.exception("executor timer %r failed", msg.payload)

    def on_timer(self, payload) -> None:
        if isinstance(payload, tuple) and payload[0] == "poll":
            if payload[1] != self.poll_number:
                return  # superseded by a sooner one
            self.poll_due = None
            self.settle(self.backend.poll())
            self.start_more()
            self.backend.prepare()  # NOTE: once the reports are out and the next jobs started
        elif payload == "tick":
            self.tick()
        elif payload == "sweep":
            try:
                self.sweep(clock.utcnow())
            finally:
                self.wakeupAfter(self.sweep_every, payload="sweep")

    def tick(self) -> None:
        """The slow backstop: ends not yet saved, tasks that vanished, undelivered reports, and
        accepted tasks no RunTask announced."""
        try:
            self.settle(list(self.unsaved.values()))
            self.settle([Ended(task_id, TaskState.LOST, reason="its process is gone and its end was never recorded")
                         for task_id in vanished(tasks.running_pids(), self.kept)])
            for task_id in tasks.unreported():
                self.reporter.report(task_id, REPORT_OF[tasks.find(task_id)["state"]])
            for task_id in tasks.ids_in(TaskState.ACCEPTED):
                if task_id not in self.waiting:
                    self.waiting.append(task_id)
            self.start_more()
        finally:
            self.wakeupAfter(TICK_SECONDS, payload="tick")

    def kept(self, task_id: int) -> bool:
        """The node still holds the task: its backend runs it, or its end awaits saving."""
        return self.backend.holds(task_id) or task_id in self.unsaved

    # --- running --------------------------------------------------------------------------------

    def start_more(self) -> None:
        while self.config and self.waiting and self.backend.active() + len(self.unsaved) < self.config.slots:
            task_id = self.waiting.popleft()
            task = tasks.find(task_id)
            if task is None or task["state"] != TaskState.ACCEPTED.value:
                continue
            self.attempts[task_id] = (task["job_id"], task["attempt"])
            try:
                events = self.backend.start(task_id, task)
            except Exception:  # noqa: BLE001 — its start could not be recorded (a full disk); nothing runs
                log.exception("task %d could not be started; trying again at the next tick", task_id)
                events = None
            if events is None:  # the backend cannot start anything now (Slurm is down): the tick retries
                self.waiting.appendleft(task_id)
                break
            self.settle(events)
        self.arm_poll()

    def arm_poll(self) -> None:
        """Poll the running tasks after the backend's delay, unless a poll is armed sooner already.

        NOTE: a long task stretches the delay (up to a quarter second locally); a short one started
        beside it must not wait for that, so a sooner poll supersedes the armed one.
        """
        if not (self.backend and self.backend.active()):
            return
        delay = self.backend.poll_delay()
        due = clock.monotonic() + delay
        if self.poll_due is not None and self.poll_due <= due:
            return
        self.poll_number += 1
        self.poll_due = due
        self.wakeupAfter(delay, payload=("poll", self.poll_number))

    def settle(self, events: list) -> None:
        """Record what the backend says happened, then tell the server. An end that cannot be
        recorded is kept in `unsaved` (the tick writes it again); it is reported once it is."""
        for event in events:
            if isinstance(event, Started):
                self.task_event("started", event.task_id)
                self.reporter.report(event.task_id, "started")
            elif isinstance(event, Ended):
                try:
                    recorded = tasks.mark_ended(event.task_id, event.state, clock.utcnow(), event.exit_code,
                                                event.stderr_tail, event.reason)
                except Exception as exc:  # noqa: BLE001 — e.g. "database or disk is full"
                    if event.task_id not in self.unsaved:
                        log.error("the end of task %d could not be recorded (%s: %s); trying again every %.0f s",
                                  event.task_id, exc.__class__.__name__, exc, TICK_SECONDS)
                    self.unsaved[event.task_id] = event
                    continue
                self.unsaved.pop(event.task_id, None)
                if not recorded:
                    log.warning("task %d: its end (%s) came after another; the first one stands",
                                event.task_id, event.state.value)
                    continue
                self.task_event(event.state.value, event.task_id, exit_code=event.exit_code, reason=event.reason)
                # NOTE: begun before the report, so the server's fetch finds it made or under way (a
                # large failed TES task zipped only when asked could outlast all the server's tries).
                folder = tasks.fetched_folder(event.task_id) if event.state is TaskState.FINISHED else None
                if folder:
                    self.zips.start(folder, self.config.zip_file(event.task_id))
                self.reporter.report(event.task_id, REPORT_OF[event.state.value])

    def task_event(self, name: str, task_id: int, **fields) -> None:
        """The event `task_<name>` of one of this node's tasks, with the job and attempt it runs
        (read from its row only for a task started before this actor was)."""
        known = self.attempts.get(task_id) if name == "started" else self.attempts.pop(task_id, None)
        if known is None:
            task = tasks.find(task_id) or {}
            known = (task.get("job_id"), task.get("attempt"))
        logs.event(log, f"task_{name}", task=task_id, job=known[0], attempt=known[1], **fields)

    # --- retention ------------------------------------------------------------------------------

    def sweep(self, now: datetime) -> None:
        """Delete the folders and zips of the tasks that ended retention_hours before `now`."""
        cutoff = now - timedelta(hours=self.config.retention_hours)
        for task_id, folder in tasks.expired(cutoff):
            if tasks.mark_cleaned(task_id):
                tasks.remove_folder(folder)
                tasks.remove_zip(self.config.zip_file(task_id))


def vanished(running: list[tuple[int, int | None, int | None]], kept: Callable[[int], bool]) -> list[int]:
    """Of the tasks whose row says running ((task id, pid, its start time), as tasks.running_pids),
    those that have no process (the pid is gone, or another process has it now: its start time
    differs) and that `kept` does not claim (the backend holds them, or their end awaits saving):
    their end was lost. A Slurm task has no pid; its backend holds it until it ends."""
    return [task_id for task_id, pid, started in running
            if not kept(task_id) and not (pid and start_time(pid) == started)]
