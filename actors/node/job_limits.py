"""Which limit a job ran into, and the watch on the size of running jobs' folders.

Runs in an executor node's ExecutorActor (and `OutputGuard`'s thread there).

`verdict` is a pure function: from what the kernel counted (the job's cgroup, its exit status) and
what the node measured (the size of the job's folder), the reason a job over a limit fails with,
naming the limit. What the kernel reports is certain: an OOM kill in the job's cgroup, forks its
process limit refused, a write past the file-size limit (SIGXFSZ), the folder's size. Where only
rlimits guard a limit (no cgroups), the kernel keeps no count: a job that failed saying "Too many
open files" (EMFILE), "Cannot allocate memory" (ENOMEM) or could not fork is taken at its word.

`overdue` is a pure function too: which running jobs reached their time limit (the job's
max_runtime, sent by the server) at `now`; the local backend asks it at each of its exit polls
(every quarter second at most while jobs run), so a job is stopped within about that of its limit,
and fails with `time_limit_reason`. On Slurm the limit is the job's --time (slurm_cli.time_limit_args).

`OutputGuard` measures each running job's folder every few seconds and stops a job whose folder
passed max_output_mb, so a job cannot fill the node's disk with many files each under the
file-size limit; and when the disk that holds the job folders is nearly full all the same (a
max_output_mb larger than the free space, several jobs at once), it stops the job with the largest
folder, so the jobs after it find room again.
"""
from __future__ import annotations

import logging
import os
import stat
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Mapping

from actors.node.sandbox import FILE_TOO_LARGE_EXIT
from conf.settings import ClientConfig
from storage.node import tasks

log = logging.getLogger("orchestrator.limits")

MB = 1024 * 1024
GUARD_SECONDS = 2.0
#: The disk holding job folders counts as full below this much free space (the smaller of the two).
DISK_RESERVE_BYTES = 1024 * MB
DISK_RESERVE_SHARE = 0.02
#: What programs print when the kernel refused them a resource (strerror and common runtimes).
_NO_FILES = ("Too many open files",)
_NO_MEMORY = ("Cannot allocate memory", "memory exhausted", "MemoryError", "std::bad_alloc", "Out of memory",
              "out of memory")
_NO_FORK = ("Resource temporarily unavailable", "Cannot fork", "fork: retry", "can't fork")


@dataclass(frozen=True)
class Usage:
    """What was measured of an ended job."""

    exit_code: int | None
    #: Processes of the job the OOM killer stopped, and forks refused at its process limit (cgroup
    #: counts; None without a cgroup).
    oom_kills: int | None = None
    refused_forks: int | None = None
    output_bytes: int = 0
    stderr_tail: str = ""
    #: The guard stopped it because the disk holding job folders was full.
    disk_full: bool = False
    #: The disk holding job folders was full when it ended (it may have filled it itself, faster
    #: than the guard looks; what it said about that may not have reached its stderr.log).
    ended_on_full_disk: bool = False


def verdict(config: ClientConfig, usage: Usage) -> str | None:
    """The reason the job fails because it went over a limit, or None."""
    failed = usage.exit_code not in (0, None)
    tail = usage.stderr_tail or ""
    if usage.disk_full:
        return (f"the node's disk for jobs filled up while the job ran; its folder held {usage.output_bytes / MB:.0f} "
                f"MB, the most of any running job (max_output_mb = {config.max_output_mb})")
    if usage.oom_kills:
        limit = f"max_memory_mb = {config.max_memory_mb}" if config.max_memory_mb else "the node's memory for jobs"
        return f"memory limit exceeded ({limit}): the kernel stopped {usage.oom_kills} process(es) of the job"
    if usage.output_bytes > config.max_output_mb * MB or usage.exit_code == FILE_TOO_LARGE_EXIT:
        return (f"output limit exceeded (max_output_mb = {config.max_output_mb}): the job's folder held "
                f"{usage.output_bytes / MB:.0f} MB or a file grew past the limit")
    if failed and usage.ended_on_full_disk:
        return (f"the node's disk for jobs was full when the job ended (run.sh exited with code {usage.exit_code}); "
                f"its folder held {usage.output_bytes / MB:.0f} MB")
    if failed and (usage.refused_forks or (usage.refused_forks is None and _says(tail, _NO_FORK))):
        return f"process limit reached (max_processes = {config.max_processes}): the job could not start more"
    if failed and _says(tail, _NO_FILES):
        return f"open-file limit reached (max_open_files = {config.max_open_files} per process)"
    if failed and usage.oom_kills is None and config.max_memory_mb and _says(tail, _NO_MEMORY):
        return f"memory limit reached (max_memory_mb = {config.max_memory_mb} per process)"
    return None


def overdue(started: Mapping[int, float], limits: Mapping[int, int], now: float) -> list[int]:
    """The tasks of `limits` ({task id: seconds}) that have run their seconds or more at `now`
    (`started` and `now` on one clock), in task order; a task not in `started` is not running."""
    return sorted(task_id for task_id, limit in limits.items()
                  if task_id in started and now - started[task_id] >= limit)


def time_limit_reason(limit: int) -> str:
    """The reason of a job stopped at its time limit of `limit` seconds (on any backend)."""
    return f"time limit ({limit} s)"


def limit_reason(config: ClientConfig, guard: "OutputGuard", task_id: int, folder: str, usage: Usage) -> str | None:
    """The ended job's verdict, with its folder measured (or as the guard measured it when it stopped
    it); the folder of a job over the output limit, or stopped for a full disk, is emptied at once."""
    stopped = guard.forget(task_id)
    size, disk_full = stopped if stopped is not None else (folder_bytes(folder), False)
    usage = replace(usage, output_bytes=size, disk_full=disk_full,
                    ended_on_full_disk=not disk_full and guard.disk_full())
    reason = verdict(config, usage)
    if reason and (disk_full or size > config.max_output_mb * MB):
        tasks.remove_folder(folder)  # a failed job's folder is never fetched: give the disk back now
        os.makedirs(folder, exist_ok=True)
    if reason:
        log.warning("task %d: %s", task_id, reason)
    return reason


def _says(tail: str, phrases: tuple[str, ...]) -> bool:
    return any(phrase in tail for phrase in phrases)


def folder_bytes(folder: str) -> int:
    """The size of what a folder holds (regular files' lengths, never following links): what its zip
    would hold. Unreadable parts count as empty."""
    total = 0
    pending = [folder]
    while pending:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(info.st_mode):
                        pending.append(entry.path)
                    elif stat.S_ISREG(info.st_mode):
                        total += info.st_size
        except OSError:
            continue
    return total


class OutputGuard:
    """A thread that stops running jobs whose folder grew past max_output_mb, or the largest one when
    the disk under `tasks_path` is nearly full.

    `stop(task_id)` must be safe to call from this thread (it signals the job's processes).
    """

    def __init__(self, limit_bytes: int, tasks_path: str, stop: Callable[[int], None]):
        self.limit = limit_bytes
        self.tasks_path = tasks_path
        self.stop = stop
        self.lock = threading.Lock()
        self.watched: dict[int, str] = {}
        #: Tasks it stopped: task id → (bytes measured, because the disk was full).
        self.stopped: dict[int, tuple[int, bool]] = {}
        threading.Thread(target=self._run, name="output-guard", daemon=True).start()

    def watch(self, task_id: int, folder: str) -> None:
        with self.lock:
            self.watched[task_id] = folder

    def stopped_it(self, task_id: int) -> bool:
        with self.lock:
            return task_id in self.stopped

    def forget(self, task_id: int) -> tuple[int, bool] | None:
        """Stop watching; (bytes measured, disk full) if the guard stopped it."""
        with self.lock:
            self.watched.pop(task_id, None)
            return self.stopped.pop(task_id, None)

    def _run(self) -> None:
        while True:
            time.sleep(GUARD_SECONDS)
            with self.lock:
                watched = {task_id: folder for task_id, folder in self.watched.items() if task_id not in self.stopped}
            sizes = {task_id: folder_bytes(folder) for task_id, folder in watched.items()}
            over = [(task_id, False) for task_id, size in sizes.items() if size > self.limit]
            if not over and sizes and self.disk_full():
                over = [(max(sizes, key=sizes.get), True)]
            for task_id, disk_full in over:
                self._stop(task_id, sizes[task_id], disk_full)

    def disk_full(self) -> bool:
        """The disk under `tasks_path` is nearly full."""
        try:
            disk = os.statvfs(self.tasks_path)
        except OSError:
            return False
        free, total = disk.f_bavail * disk.f_frsize, disk.f_blocks * disk.f_frsize
        return free < min(DISK_RESERVE_BYTES, total * DISK_RESERVE_SHARE)

    def _stop(self, task_id: int, size: int, disk_full: bool) -> None:
        with self.lock:
            if task_id not in self.watched:
                return  # it ended meanwhile
            self.stopped[task_id] = (size, disk_full)
        log.warning("task %d: %s; stopping it", task_id,
                    f"the disk for jobs is full and its folder is the largest ({size // MB} MB)" if disk_full
                    else f"its folder holds {size // MB} MB, more than max_output_mb")
        try:
            self.stop(task_id)
        except Exception:  # noqa: BLE001 — the guard must keep watching the others
            log.exception("could not stop task %d", task_id)
