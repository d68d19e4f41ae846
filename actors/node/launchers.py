"""Job launchers made ready ahead of their jobs: a small shell that has already joined a fresh job
cgroup and waits for the command of the next job.

Runs in an executor node's ExecutorActor (local backend).

Why ahead: moving a process into a cgroup makes the kernel wait for an RCU grace period, 5 to 20 ms
on these machines, for each move; done when a job starts, that wait is in every job's turnaround.
A launcher pays it while the node is idle: when a job comes, the launcher is in its cgroup already
and `exec`s the job's command at once (its session, pid and start time are the job's). Launchers
are children of the ExecutorActor: if the actor dies, their stdin pipe closes and they exit.
"""
from __future__ import annotations

import logging
import os
import shlex
import subprocess
from dataclasses import dataclass

from actors.node.job_cgroups import JobCgroup, JobCgroups

log = logging.getLogger("orchestrator.executor")

#: Join the cgroups named by the arguments, then run the one line of shell the executor writes.
_PRELUDE = ('for procs do echo $$ > "$procs" || exit 125; done; '
            'IFS= read -r command || exit 0; eval "$command"')


@dataclass
class Launcher:
    process: subprocess.Popen
    cgroup: JobCgroup | None

    def run(self, folder: str, command: list[str]) -> subprocess.Popen:
        """Have the launcher become `command`, in `folder` (also its HOME), with stdout and stderr in
        files there."""
        folder = shlex.quote(os.path.abspath(folder))
        line = (f"cd {folder} && unset OLDPWD && exec > stdout.log 2> stderr.log < /dev/null && "
                f"export HOME={folder} && exec {shlex.join(command)}\n")
        self.process.stdin.write(line.encode())
        self.process.stdin.close()
        return self.process

    def discard(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        if self.cgroup:
            self.cgroup.remove()


class Launchers:
    """Keeps `spares` launchers ready, each in a job cgroup of its own (where the node has cgroups)."""

    def __init__(self, cgroups: JobCgroups | None, env: dict[str, str], cwd: str, spares: int,
                 memory_mb: int | None, processes: int):
        self.cgroups = cgroups
        self.env = env
        self.cwd = os.path.abspath(cwd)
        self.spares = spares
        self.memory_mb, self.processes = memory_mb, processes
        self.ready: list[Launcher] = []
        self.made = 0

    def take(self) -> Launcher:
        """A launcher for the next job: a ready one, else a new one.

        NOTE: no other is made ready now: moving it into its cgroup would slow the forks of the job
        starting beside it (they wait for the same kernel lock); `refill` once the node is quiet.
        """
        return self.ready.pop(0) if self.ready else self._new()

    def refill(self) -> None:
        while len(self.ready) < self.spares:
            self.ready.append(self._new())

    def _new(self) -> Launcher:
        self.made += 1
        cgroup = None
        if self.cgroups is not None:
            try:
                cgroup = self.cgroups.create(f"job-{os.getpid()}-{self.made}", self.memory_mb, self.processes)
            except OSError as exc:
                log.error("a job runs without a cgroup (its limits are rlimits only): %s", exc)
        process = subprocess.Popen(["/bin/sh", "-c", _PRELUDE, "orchestrator-job", *(cgroup.procs if cgroup else [])],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   cwd=self.cwd, env=self.env, start_new_session=True)
        return Launcher(process, cgroup)

    def close(self) -> None:
        for launcher in self.ready:
            launcher.discard()
        self.ready.clear()
