"""LocalBackend: a task is `bash run.sh` run as a process group of this host (actors/scripts.py).

Its processes live and die with the node: a task that was running when the node stopped is lost,
and a restarted node stops what the previous run left behind.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import time

from actors import scripts
from actors.backend import Ended, Started
from storage import tasks
from storage.clock import utcnow
from storage.executor_models import TaskState

#: Exit polling starts fast for short scripts and slows down for long ones.
POLL_MIN_SECONDS = 0.005
POLL_MAX_SECONDS = 0.25
#: How long scripts get to end after SIGTERM when the node stops.
STOP_GRACE_SECONDS = 3.0

log = logging.getLogger("orchestrator.executor")


class LocalBackend:
    def __init__(self):
        self.running: dict[int, subprocess.Popen] = {}
        self.started_at: dict[int, float] = {}

    def problem(self) -> str | None:
        """Why the node cannot take work now; a local node always can."""
        return None

    def active(self) -> int:
        return len(self.running)

    def poll_delay(self) -> float:
        youngest = time.monotonic() - max(self.started_at.values())
        return min(POLL_MAX_SECONDS, max(POLL_MIN_SECONDS, youngest / 20))

    def recover(self) -> list[Ended]:
        """Stop what a previous run of the node left running; those tasks are lost."""
        ended = []
        for task_id, pid, started in tasks.running_pids():
            if pid:
                scripts.kill_group(pid, signal.SIGKILL, started)
            ended.append(Ended(task_id, TaskState.LOST))
        return ended

    def start(self, task_id: int, task: dict) -> list:
        try:
            process = scripts.launch(task["dir"])
        except OSError as exc:
            log.error("task %d could not be started: %s", task_id, exc)
            return [Ended(task_id, TaskState.FINISHED, 126, f"the executor could not start run.sh: {exc}")]
        self.running[task_id] = process
        self.started_at[task_id] = time.monotonic()
        tasks.mark_running(task_id, process.pid, scripts.start_time(process.pid), utcnow())
        return [Started(task_id)]

    def poll(self) -> list[Ended]:
        ended = []
        for task_id, process in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            # NOTE: what run.sh left in the background dies with it; its folder is its result.
            scripts.kill_group(process.pid)
            task = tasks.find(task_id)
            del self.running[task_id]
            del self.started_at[task_id]
            ended.append(Ended(task_id, TaskState.FINISHED, scripts.exit_code(code), scripts.stderr_tail(task["dir"])))
        return ended

    def kill(self, task_id: int) -> bool:
        """Stop the task's processes; False if it is not running here."""
        process = self.running.pop(task_id, None)
        if process is None:
            return False
        scripts.kill_group(process.pid)
        process.wait()
        del self.started_at[task_id]
        return True

    def stop_all(self) -> list[Ended]:
        """The node is stopping: end every script (TERM, then KILL); they are lost."""
        for process in self.running.values():
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
        self.running.clear()
        return ended
