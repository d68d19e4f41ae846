"""LocalBackend: a task is its wrapped `bash run.sh` (actors/node/sandbox.py), run as a process group of
this host, in a cgroup of its own where the node has cgroups (actors/node/job_cgroups.py).

Runs in an executor node's ExecutorActor. Its processes live and die with the node: a task that
was running when the node stopped is lost, and a restarted node stops what the previous run left
behind. When a task ends, whatever it started is killed (its PID namespace, and its cgroup), and
the limit it went over, if any, becomes its reason (actors/node/job_limits.py). A task still running
at its time limit (its max_runtime) is stopped at the first exit poll after it, as a cancel stops one.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

from actors.node import scripts, tes_wrap
from actors.node.backends.base import Ended, Started
from actors.node.job_cgroups import JobCgroup, JobCgroups
from actors.node.job_limits import MB, OutputGuard, Usage, limit_reason, overdue, time_limit_reason
from actors.node.launchers import Launchers
from actors.node.sandbox import Wrapping, environment
from actors.runtime.processes import start_time
from conf import metrics
from conf.settings import ClientConfig
from storage.clock import utcnow
from storage.node import tasks
from storage.node.states import TaskState

#: Exit polling starts fast for short scripts and slows down for long ones.
POLL_MIN_SECONDS = 0.005
POLL_MAX_SECONDS = 0.25
#: How long scripts get to end after SIGTERM when the node stops.
STOP_GRACE_SECONDS = 3.0
#: Launchers kept ready (each already in a fresh job cgroup), at most one per slot.
SPARE_LAUNCHERS = 2

log = logging.getLogger("orchestrator.executor")


class LocalBackend:
    def __init__(self, config: ClientConfig, wrapping: Wrapping, cgroups: JobCgroups | None):
        self.config = config
        self.wrapping = wrapping
        self.running: dict[int, subprocess.Popen] = {}
        self.started_at: dict[int, float] = {}
        #: Time limits (seconds) of the running tasks that have one, and of those stopped at it.
        self.limits: dict[int, int] = {}
        self.timed_out: dict[int, int] = {}
        self.cgroup_of: dict[int, JobCgroup] = {}
        self.cgroups = cgroups
        env = environment(config, config.tasks_path)
        self.launchers = Launchers(cgroups, env, config.tasks_path, min(config.slots, SPARE_LAUNCHERS),
                                   config.max_memory_mb, config.max_processes)
        self.guard = OutputGuard(config.max_output_mb * MB, config.tasks_path, self._stop_for_size)

    def problem(self) -> str | None:
        """Why the node cannot take work now; a local node always can."""
        return None

    def active(self) -> int:
        return len(self.running)

    def holds(self, task_id: int) -> bool:
        return task_id in self.running

    def poll_delay(self) -> float:
        youngest = time.monotonic() - max(self.started_at.values())
        return min(POLL_MAX_SECONDS, max(POLL_MIN_SECONDS, youngest / 20))

    def recover(self) -> list[Ended]:
        """Stop what a previous run of the node (or of this actor) left running; those tasks are lost."""
        ended = []
        for task_id, pid, started in tasks.running_pids():
            if pid:
                scripts.kill_group(pid, signal.SIGKILL, started)
            ended.append(Ended(task_id, TaskState.LOST))
        if self.cgroups:
            # NOTE: what escaped the process group (started before its launcher was recorded) is there.
            self.cgroups.clear_leftovers()
        self.launchers.refill()
        return ended

    def start(self, task_id: int, task: dict) -> list:
        folder = task["dir"]
        refused = tes_wrap.refusal(task, self.wrapping)
        if refused:
            return [Ended(task_id, TaskState.FINISHED, None, None, refused)]
        launcher = self.launchers.take()
        try:
            command = tes_wrap.command(self.config, self.wrapping, task, limit_memory=launcher.cgroup is None,
                                       limit_processes=launcher.cgroup is None)
            process = launcher.run(folder, command)
        except Exception as exc:  # noqa: BLE001 — files not written, the launcher gone (its cgroup), a plan refused
            log.error("task %d could not be started: %s", task_id, exc)
            metrics.backend_error("local", "start")
            launcher.discard()
            return [Ended(task_id, TaskState.FINISHED, 126, reason=f"the executor could not start run.sh: {exc}")]
        self.running[task_id] = process
        self.started_at[task_id] = time.monotonic()
        if task.get("max_runtime"):
            self.limits[task_id] = task["max_runtime"]
        if launcher.cgroup:
            self.cgroup_of[task_id] = launcher.cgroup
        self.guard.watch(task_id, folder)
        try:
            tasks.mark_running(task_id, process.pid, start_time(process.pid), utcnow())
        except Exception:
            # NOTE: a script whose start is not on record would run twice (its row still says
            # accepted); stopped, it starts again once its start can be written.
            self.kill(task_id)
            raise
        return [Started(task_id)]

    def poll(self) -> list[Ended]:
        for task_id in overdue(self.started_at, self.limits, time.monotonic()):
            self.timed_out[task_id] = limit = self.limits.pop(task_id)
            log.warning("task %d: running at its time limit (%d s); stopping it", task_id, limit)
            scripts.kill_group(self.running[task_id].pid)  # its exit is seen below, or at the next poll
        ended = []
        for task_id, process in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            ended.append(self._ended(task_id, code))
        return ended

    def prepare(self) -> None:
        """Between jobs: make launchers ready for the next ones (not beside a job's start: launchers.py)."""
        self.launchers.refill()

    def _ended(self, task_id: int, returncode: int) -> Ended:
        """run.sh is over: kill what it left, and find out whether it went over a limit."""
        exit_code = scripts.exit_code(returncode)
        process = self.running.pop(task_id)
        del self.started_at[task_id]
        self.limits.pop(task_id, None)
        timed_out = self.timed_out.pop(task_id, None)
        scripts.kill_group(process.pid)
        cgroup = self.cgroup_of.pop(task_id, None)
        oom_kills = refused_forks = None
        if cgroup:
            oom_kills, refused_forks = cgroup.hits()
            cgroup.remove()
        task = tasks.find(task_id)
        folder = task["dir"]
        tail = scripts.stderr_tail(folder)
        if not os.path.exists(os.path.join(folder, "stdout.log")):  # its launcher never got to run it
            self.guard.forget(task_id)
            return Ended(task_id, TaskState.FINISHED, exit_code, tail,
                         f"the executor could not start run.sh (its launcher exited with code {exit_code})")
        if timed_out is not None:
            self.guard.forget(task_id)
            return Ended(task_id, TaskState.FINISHED, exit_code, tail, time_limit_reason(timed_out))
        reason = limit_reason(self.config, self.guard, task_id, folder,
                              Usage(exit_code, oom_kills, refused_forks, stderr_tail=tail))
        return Ended(task_id, TaskState.FINISHED, exit_code, tail, reason or tes_wrap.reason(task, returncode >= 0))

    def _stop_for_size(self, task_id: int) -> None:
        """The output guard's thread: stop a task whose folder grew too large (poll() reports it)."""
        process = self.running.get(task_id)
        if process is not None:
            scripts.kill_group(process.pid)

    def kill(self, task_id: int) -> bool:
        """Stop the task's processes; False if it is not running here."""
        process = self.running.pop(task_id, None)
        if process is None:
            return False
        scripts.kill_group(process.pid)
        process.wait()
        del self.started_at[task_id]
        self.limits.pop(task_id, None)
        self.timed_out.pop(task_id, None)
        self.guard.forget(task_id)
        cgroup = self.cgroup_of.pop(task_id, None)
        if cgroup:
            cgroup.remove()
        return True

    def stop_all(self) -> list[Ended]:
        """The node is stopping: end every script (TERM, then KILL); they are lost."""
        for task_id, process in self.running.items():
            cgroup = self.cgroup_of.get(task_id)
            if cgroup:  # NOTE: the job's own processes, for bubblewrap dies of a TERM and kills them at once
                cgroup.signal(signal.SIGTERM)
            else:
                scripts.kill_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and any(scripts.group_alive(p.pid) for p in self.running.values()):
            for process in self.running.values():
                process.poll()
            time.sleep(0.05)
        ended = []
        for task_id, process in self.running.items():
            scripts.kill_group(process.pid)
            process.poll()
            ended.append(Ended(task_id, TaskState.LOST))
        for cgroup in self.cgroup_of.values():
            cgroup.remove()
        self.running.clear()
        self.cgroup_of.clear()
        self.launchers.close()
        return ended
