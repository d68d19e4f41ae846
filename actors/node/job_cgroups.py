"""A cgroup per job: the kernel enforces its memory and process limits, counts when they were hit,
and can find and kill every process of the job.

Runs in an executor node's ExecutorActor (local backend). `JobCgroups.detect` looks once, at start,
for a place this node may create cgroups in:
- cgroup v2, as root: `/sys/fs/cgroup/orchestrator/<node>`; as another user, the node's own
  cgroup when it was delegated to it (systemd `Delegate=yes`): the node's processes then move
  into a leaf `node/` of it, as the kernel requires, and jobs go into `jobs/`;
- cgroup v1 (memory and pids hierarchies), where the node may write (typically as root).
If none is usable, jobs are limited by rlimits only (actors/node/sandbox.py) and the start says so.

Every job cgroup of the node lives under one folder, `<node>/jobs`, capped at JOBS_SHARE of the
memory the node may use, so that jobs together cannot starve the node's own processes. What a
crashed run left there is killed and removed when the ExecutorActor recovers (LocalBackend.recover).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("orchestrator.cgroups")

ROOT = "/sys/fs/cgroup"
#: Jobs together may use this share of the memory the node may use.
JOBS_SHARE = 0.9
KILL_ROUNDS = 50
#: A busy job cgroup is tried again this many times, 2 ms apart.
REMOVE_ROUNDS = 2500


@dataclass(frozen=True)
class JobCgroup:
    """One job's cgroup: a folder per hierarchy (one on v2, memory and pids on v1)."""

    folders: tuple[str, ...]
    v2: bool

    @property
    def procs(self) -> list[str]:
        """The files a process writes its pid to, to join the job's cgroup."""
        return [os.path.join(folder, "cgroup.procs") for folder in self.folders]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.procs:
            try:
                with open(path) as handle:
                    found.update(int(line) for line in handle if line.strip())
            except OSError:
                continue
        return found

    def signal(self, signum: int) -> None:
        """Send `signum` to every process of the job (e.g. SIGTERM, to let it end by itself)."""
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def kill_once(self) -> bool:
        """SIGKILL every process in the job's cgroup now; False if there was none."""
        if self.v2 and _write(os.path.join(self.folders[0], "cgroup.kill"), "1"):
            return bool(self.pids())
        pids = self.pids()
        self.signal(signal.SIGKILL)
        return bool(pids)

    def kill(self) -> None:
        """Kill every process in the job's cgroup, those forking meanwhile too (waits for them)."""
        for _ in range(KILL_ROUNDS):
            if not self.kill_once():
                return
            time.sleep(0.01)

    def hits(self) -> tuple[int, int]:
        """(processes the OOM killer stopped, forks refused at the process limit)."""
        if self.v2:
            memory = _counter(os.path.join(self.folders[0], "memory.events"), "oom_kill")
            pids = _counter(os.path.join(self.folders[0], "pids.events"), "max")
            return memory, pids
        memory_dir, pids_dir = self.folders
        return (_counter(os.path.join(memory_dir, "memory.oom_control"), "oom_kill"),
                _counter(os.path.join(pids_dir, "pids.events"), "max"))

    def remove(self) -> None:
        """Kill what is left in it, and delete it (at once, or soon: see Remover)."""
        self.kill_once()
        if not self.try_remove():
            _remover.later(self)

    def try_remove(self) -> bool:
        """Delete the job's cgroup folders; False while one is still busy."""
        done = True
        for folder in self.folders:
            try:
                os.rmdir(folder)
            except FileNotFoundError:
                pass
            except OSError:  # busy: its last processes are still leaving it (a PID namespace's teardown)
                done = False
        return done


class Remover:
    """Deletes, from a thread of its own, the job cgroups that were still busy when their job ended.

    NOTE: a job's cgroup stays busy for a millisecond or two after its PID namespace ended; waiting
    for that on the ExecutorActor would add to every job's turnaround.
    """

    def __init__(self):
        self.lock = threading.Lock()
        self.pending: list[JobCgroup] = []
        self.thread: threading.Thread | None = None

    def later(self, cgroup: JobCgroup) -> None:
        with self.lock:
            self.pending.append(cgroup)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, name="cgroup-remover", daemon=True)
                self.thread.start()

    def _run(self) -> None:
        for _ in range(REMOVE_ROUNDS):
            time.sleep(0.002)
            with self.lock:
                for cgroup in self.pending:
                    cgroup.kill_once()  # NOTE: again: a process may have forked while the first kill went round
                self.pending = [cgroup for cgroup in self.pending if not cgroup.try_remove()]
                if not self.pending:
                    return
        with self.lock:
            for cgroup in self.pending:
                log.warning("job cgroup %s could not be removed; the next start removes it", cgroup.folders[0])
            self.pending = []


_remover = Remover()


class JobCgroups:
    """Where this node makes its jobs' cgroups."""

    def __init__(self, jobs_dirs: tuple[str, ...], v2: bool):
        self.jobs_dirs = jobs_dirs  # v2: (jobs,); v1: (memory jobs, pids jobs)
        self.v2 = v2

    @staticmethod
    def detect(node: str) -> "JobCgroups | None":
        """The node's cgroups for jobs (named after `node`), set up; None if this node cannot have any."""
        try:
            found = _v2(node) if os.path.exists(os.path.join(ROOT, "cgroup.controllers")) else _v1(node)
        except OSError as exc:
            log.info("no cgroups for jobs (%s): jobs are limited by rlimits only", exc)
            return None
        if found is None:
            log.info("no writable cgroups for jobs: jobs are limited by rlimits only")
        return found

    def describe(self) -> str:
        return f"cgroup {'v2' if self.v2 else 'v1'} under {self.jobs_dirs[0]}"

    def create(self, name: str, memory_mb: int | None, processes: int) -> JobCgroup:
        folders = self.existing(name).folders
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
        memory = str(memory_mb * 1024 * 1024) if memory_mb else None
        if self.v2:
            if memory:
                _write(os.path.join(folders[0], "memory.max"), memory)
                _write(os.path.join(folders[0], "memory.swap.max"), "0")  # a limit swap cannot get around
            _write(os.path.join(folders[0], "pids.max"), str(processes))
        else:
            if memory:
                _write(os.path.join(folders[0], "memory.limit_in_bytes"), memory)
                _write(os.path.join(folders[0], "memory.memsw.limit_in_bytes"), memory)
            _write(os.path.join(folders[1], "pids.max"), str(processes))
        return JobCgroup(folders, self.v2)

    def existing(self, name: str) -> JobCgroup:
        return JobCgroup(tuple(os.path.join(base, name) for base in self.jobs_dirs), self.v2)

    def clear_leftovers(self) -> None:
        """Kill and remove the job cgroups a previous run of this node left behind."""
        names = set()
        for base in self.jobs_dirs:
            names.update(entry.name for entry in os.scandir(base) if entry.is_dir())
        for name in sorted(names):
            cgroup = self.existing(name)
            if cgroup.pids():
                log.warning("killing what job cgroup %s of a previous run still held", name)
            cgroup.remove()


# --- finding and preparing the node's place ----------------------------------------------------

def _v2(node: str) -> JobCgroups | None:
    if os.geteuid() == 0:
        base = os.path.join(ROOT, "orchestrator", node)
        os.makedirs(base, exist_ok=True)
        _enable(os.path.join(ROOT, "orchestrator"))
    else:
        base = os.path.join(ROOT, _own_path("0", ""))
        if not os.access(os.path.join(base, "cgroup.subtree_control"), os.W_OK):
            return None
        leaf = os.path.join(base, "node")
        os.makedirs(leaf, exist_ok=True)
        with open(os.path.join(base, "cgroup.procs")) as handle:  # the kernel: no processes beside children
            for pid in [line.strip() for line in handle if line.strip()]:
                _write(os.path.join(leaf, "cgroup.procs"), pid)
    if not _enable(base):
        return None
    jobs = os.path.join(base, "jobs")
    os.makedirs(jobs, exist_ok=True)
    if not _enable(jobs):
        return None
    _write(os.path.join(jobs, "memory.max"), str(_jobs_memory(_read_int(os.path.join(base, "memory.max")))))
    return JobCgroups((jobs,), v2=True)


def _enable(folder: str) -> bool:
    """Let `folder`'s children have memory and pids limits."""
    with open(os.path.join(folder, "cgroup.controllers")) as handle:
        available = set(handle.read().split())
    if not {"memory", "pids"} <= available:
        return False
    return _write(os.path.join(folder, "cgroup.subtree_control"), "+memory +pids")


def _v1(node: str) -> JobCgroups | None:
    dirs = []
    for controller in ("memory", "pids"):
        mount = os.path.join(ROOT, controller)
        if not os.path.isdir(mount):
            return None
        base = os.path.join(mount, _own_path(controller, mount).lstrip("/"), f"orchestrator-{node}")
        jobs = os.path.join(base, "jobs")
        os.makedirs(jobs, exist_ok=True)
        if not os.access(jobs, os.W_OK):
            return None
        dirs.append(jobs)
    limit = _read_int(os.path.join(os.path.dirname(os.path.dirname(dirs[0])), "memory.limit_in_bytes"))
    _write(os.path.join(dirs[0], "memory.limit_in_bytes"), str(_jobs_memory(limit)))
    return JobCgroups(tuple(dirs), v2=False)


def _own_path(hierarchy: str, mount: str) -> str:
    """This process's cgroup in a hierarchy ("0" is v2's), from /proc/self/cgroup."""
    with open("/proc/self/cgroup") as handle:
        for line in handle:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            if (hierarchy == "0" and number == "0") or hierarchy in controllers.split(","):
                return path.lstrip("/")
    raise OSError(f"this process is in no {hierarchy} cgroup")


def _jobs_memory(node_limit: int | None) -> int:
    """What all jobs together may use: a share of the node's memory (or of its own cgroup's limit)."""
    with open("/proc/meminfo") as handle:
        total = int(handle.readline().split()[1]) * 1024
    if node_limit and node_limit < total:
        total = node_limit
    return int(total * JOBS_SHARE)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            return int(handle.read().strip())
    except (OSError, ValueError):
        return None  # absent, or "max"


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as handle:
            handle.write(value)
        return True
    except OSError:
        return False


def _counter(path: str, key: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0
