"""SlurmBackend: a task is a Slurm job, submitted with sbatch and followed with squeue.

Owns the Slurm side of the executor: submitting (`sbatch --wrap=...` in the task's folder, which
the cluster's nodes share: the job's `bash run.sh` wrapped as this node wraps its jobs, in its
bubblewrap sandbox with its rlimits, actors/node/sandbox.py, run inside the allocation), one `squeue`
call per poll for all the node's jobs, mapping Slurm's states onto task outcomes, and re-attaching
to its jobs after a restart. The CLI calls and their parsing are in actors/node/backends/slurm_cli.py.
max_memory_mb becomes the job's `--mem` (unless sbatch_args sets one), so Slurm's cgroup holds it;
a job's max_runtime becomes its `--time` (slurm_cli.time_limit_args), and Slurm's TIMEOUT of such a
job its reason "time limit (N s)".

Nothing is guessed. A job squeue no longer lists is looked up with `scontrol show job`, then in
Slurm's jobcomp log; one that none of them knows is asked about again at every poll, and only
after VANISHED_GIVE_UP_SECONDS reported lost, saying so. While Slurm does not answer at all, jobs
keep their state.

The crash window between sbatch returning and the job id being written is closed by the job's
name: it is `orch-<job uid>-<attempt>`, fixed before submitting. A task still `accepted` when the
node starts may have been submitted already: it is looked up by that name first, and re-attached
instead of being submitted twice.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from actors.node import scripts, tes_wrap
from actors.node.backends import slurm_cli
from actors.node.backends.base import Ended, Started
from actors.node.backends.slurm_cli import SlurmJob, SlurmRefused, SlurmUnavailable
from actors.node.backends.slurm_health import SlurmHealth
from actors.node.job_limits import MB, OutputGuard, Usage, limit_reason, time_limit_reason
from actors.node.sandbox import Wrapping, environment
from conf.settings import ClientConfig
from storage.clock import utcnow
from storage.node import tasks
from storage.node.states import TaskState
from storage.node.tes_plan import PlanError

#: How long a job that Slurm no longer knows at all is asked about before it is reported lost.
VANISHED_GIVE_UP_SECONDS = 600.0
#: Before calling squeue or sbatch, the controller is pinged unless it answered this recently.
FRESH_SECONDS = 0.5
#: sbatch refused the job: it never ran, as with a run.sh the local backend cannot start.
REFUSED_EXIT_CODE = 126

log = logging.getLogger("orchestrator.slurm")


def job_name(job_uid: str, attempt: int) -> str:
    """The Slurm job name of an attempt: unique, and known before sbatch is called."""
    return f"orch-{job_uid}-{attempt}"


@dataclass
class Tracked:
    slurm_id: str
    #: Slurm said RUNNING once (the server was told the job started).
    started: bool = False
    #: When squeue, scontrol and the jobcomp log all stopped knowing it (monotonic seconds).
    vanished_since: float | None = None


class SlurmBackend:
    def __init__(self, config: ClientConfig, wrapping: Wrapping):
        self.config = config
        self.wrapping = wrapping
        #: Slurm's --mem holds max_memory_mb (an rlimit on address space would only approximate it).
        self.mem_by_slurm = bool(config.max_memory_mb) and not any(
            arg.split("=", 1)[0] in ("--mem", "--mem-per-cpu", "--mem-per-gpu") for arg in config.sbatch_args)
        self.sbatch_args = config.sbatch_args + ((f"--mem={config.max_memory_mb}M",) if self.mem_by_slurm else ())
        self.guard = OutputGuard(config.max_output_mb * MB, config.tasks_path, self._cancel_for_size)
        self.jobs: dict[int, Tracked] = {}
        #: Accepted tasks that may have been submitted before the node stopped (looked up by name first).
        self.unverified: set[int] = set()
        self.health = SlurmHealth()
        self.unreachable = False

    def problem(self) -> str | None:
        return self.health()

    def active(self) -> int:
        return len(self.jobs)

    def holds(self, task_id: int) -> bool:
        return task_id in self.jobs

    def poll_delay(self) -> float:
        return self.config.poll_interval

    def prepare(self) -> None:
        """Between jobs: nothing to make ready (Slurm starts the jobs)."""

    # --- restart --------------------------------------------------------------------------------

    def recover(self) -> list[Ended]:
        """Re-attach to the jobs a previous run of the node submitted; their outcome comes by polling."""
        for task_id, slurm_id, started in tasks.slurm_jobs():
            self.jobs[task_id] = Tracked(slurm_id, started)
            self.guard.watch(task_id, tasks.find(task_id)["dir"])
        if self.jobs:
            log.warning("re-attached to Slurm jobs %s", ", ".join(t.slurm_id for t in self.jobs.values()))
        accepted = tasks.attempts_in(TaskState.ACCEPTED)
        self.unverified = {task_id for task_id, _, _ in accepted}
        # NOTE: against a down controller squeue hangs; start() then looks each one up later.
        problem = self.health()
        try:
            if problem is None:
                self.adopt(accepted)
        except SlurmUnavailable as exc:
            problem = str(exc)
        if problem:
            log.warning("cannot look up this node's earlier submissions yet: %s", problem)
        return []

    def adopt(self, candidates: list[tuple[int, str, int]]) -> None:
        """Re-attach accepted tasks whose job Slurm already has (submitted just before a crash)."""
        names = {job_name(uid, attempt): task_id for task_id, uid, attempt in candidates}
        found = slurm_cli.find_by_names(list(names))
        # NOTE: after MinJobAge squeue forgets finished jobs; the jobcomp log still names them.
        finished = slurm_cli.jobcomp_names(self.config.jobcomp_log, set(names) - set(found))
        for name, slurm_id in {**finished, **found}.items():
            task_id = names[name]
            log.warning("task %d was submitted as Slurm job %s before the node stopped; re-attached",
                        task_id, slurm_id)
            tasks.mark_submitted(task_id, slurm_id)
            self.jobs[task_id] = Tracked(slurm_id)
            self.guard.watch(task_id, tasks.find(task_id)["dir"])
        self.unverified -= set(names.values())

    # --- submitting -----------------------------------------------------------------------------

    def start(self, task_id: int, task: dict) -> list | None:
        """Submit the task; None when Slurm cannot be asked now (the task waits and is tried again)."""
        if self.health.fresh(FRESH_SECONDS):
            return None  # NOTE: against a down controller sbatch hangs ~9 s, blocking this actor
        try:
            if task_id in self.unverified:
                self.adopt([(task_id, task["job_uid"], task["attempt"])])
                if task_id in self.jobs:
                    return []
            refused = tes_wrap.refusal(task, self.wrapping)
            if refused:
                return [Ended(task_id, TaskState.FINISHED, None, None, refused)]
            folder = task["dir"]
            command = tes_wrap.command(self.config, self.wrapping, task, limit_memory=not self.mem_by_slurm)
            extra, _ = slurm_cli.time_limit_args(self.sbatch_args, task["max_runtime"])
            slurm_id = slurm_cli.submit(folder, job_name(task["job_uid"], task["attempt"]), command,
                                        self.config.partition, extra, environment(self.config, folder),
                                        self.wrapping.bwrap, tes_wrap.stage_needs(task))
        except PlanError as exc:  # NOTE: not raised on: the tick would try it again for ever, first in line
            log.error("task %d could not be started: %s", task_id, exc)
            return [Ended(task_id, TaskState.FINISHED, REFUSED_EXIT_CODE, reason=f"the executor could not start "
                                                                                   f"run.sh: {exc}")]
        except SlurmRefused as exc:
            log.error("sbatch refused task %d: %s", task_id, exc)
            return [Ended(task_id, TaskState.FINISHED, REFUSED_EXIT_CODE, f"slurm: sbatch refused the job: {exc}")]
        except SlurmUnavailable as exc:
            log.warning("cannot submit task %d now: %s", task_id, exc)
            # NOTE: a timed-out sbatch may still have submitted it: look it up by name next time.
            self.unverified.add(task_id)
            return None
        try:
            tasks.mark_submitted(task_id, slurm_id)
        except Exception:
            self.unverified.add(task_id)  # NOTE: Slurm has it, unrecorded: the next start adopts it by name
            raise
        self.jobs[task_id] = Tracked(slurm_id)
        self.guard.watch(task_id, folder)
        return []

    def _cancel_for_size(self, task_id: int) -> None:
        """The output guard's thread: cancel a job whose folder grew too large."""
        tracked = self.jobs.get(task_id)
        if tracked is not None:
            slurm_cli.cancel(tracked.slurm_id)

    # --- following ------------------------------------------------------------------------------

    def poll(self) -> list:
        if not self.jobs:
            return []
        if self.health.fresh(FRESH_SECONDS):
            return []  # NOTE: against a down controller squeue hangs ~18 s; the jobs keep their state
        try:
            known = slurm_cli.squeue([tracked.slurm_id for tracked in self.jobs.values()])
            vanished = {t.slurm_id: t.vanished_since is None for t in self.jobs.values() if t.slurm_id not in known}
            if vanished:
                known.update(self.resolve(vanished))
        except SlurmUnavailable as exc:
            if not self.unreachable:
                log.error("cannot poll Slurm; the jobs keep their state until it answers: %s", exc)
            self.unreachable = True
            return []
        self.unreachable = False
        events = []
        for task_id, tracked in list(self.jobs.items()):
            status = known.get(tracked.slurm_id)
            if status is None:
                events.extend(self.still_unknown(task_id, tracked))
            else:
                tracked.vanished_since = None
                events.extend(self.follow(task_id, tracked, status))
        return events

    def resolve(self, vanished: dict[str, bool]) -> dict[str, SlurmJob]:
        """Jobs squeue forgot ({slurm id: newly}): scontrol for the newly forgotten ones (one call each,
        once in a job's life: it reads the same job table as squeue), then the jobcomp log."""
        found = {}
        for job_id in sorted(job_id for job_id, newly in vanished.items() if newly):
            status = slurm_cli.scontrol_job(job_id)
            if status is not None:
                found[job_id] = status
        found.update(slurm_cli.jobcomp(self.config.jobcomp_log, set(vanished) - set(found)))
        return found

    def still_unknown(self, task_id: int, tracked: Tracked) -> list[Ended]:
        now = time.monotonic()
        if tracked.vanished_since is None:
            tracked.vanished_since = now
            log.warning("Slurm job %s of task %d is unknown to squeue, scontrol and the jobcomp log; "
                        "asking again at each poll", tracked.slurm_id, task_id)
        if now - tracked.vanished_since < VANISHED_GIVE_UP_SECONDS:
            return []
        del self.jobs[task_id]
        self.guard.forget(task_id)
        reason = (f"slurm: job {tracked.slurm_id} vanished: squeue, scontrol and the jobcomp log did not know it "
                  f"for {VANISHED_GIVE_UP_SECONDS:.0f} s")
        log.error("task %d lost: %s", task_id, reason)
        return [Ended(task_id, TaskState.LOST, None, reason)]

    def follow(self, task_id: int, tracked: Tracked, status: SlurmJob) -> list:
        """The events one job's status means: started once it runs, its outcome once it ended."""
        phase = slurm_cli.phase(status.state)
        if phase == "pending":
            return []
        if phase == "running":
            if tracked.started:
                return []
            tracked.started = True
            tasks.mark_started(task_id, utcnow())
            return [Started(task_id)]
        del self.jobs[task_id]
        task = tasks.find(task_id)
        folder = task["dir"]
        tail = scripts.stderr_tail(folder)
        if phase != "completed":
            # NOTE: Slurm's verdict goes last, so the server's cut to the tail of stderr keeps it.
            said = slurm_cli.describe(status)
            tail = f"{tail}\n{said}" if tail and not tail.endswith("\n") else f"{tail}{said}"
        # NOTE: from the task's row, not from memory: a job re-attached after a restart maps the same.
        _, limit = slurm_cli.time_limit_args(self.sbatch_args, task["max_runtime"])
        if limit and status.state.startswith("TIMEOUT"):
            self.guard.forget(task_id)
            return [Ended(task_id, TaskState.FINISHED, slurm_cli.exit_code(status), tail, time_limit_reason(limit))]
        if phase in ("completed", "failed") or self.guard.stopped_it(task_id):
            exit_code = slurm_cli.exit_code(status)
            reason = limit_reason(self.config, self.guard, task_id, folder,
                                  Usage(exit_code, int(status.state.startswith("OUT_OF_MEMORY")), None,
                                        stderr_tail=tail))
            # NOTE: the batch script execs the stage: Slurm's signal is the stage's death
            return [Ended(task_id, TaskState.FINISHED, exit_code, tail,
                          reason or tes_wrap.reason(task, stage_exited=not status.signal))]
        self.guard.forget(task_id)
        if phase == "cancelled":
            return [Ended(task_id, TaskState.CANCELLED, None, tail)]
        log.warning("task %d lost: %s", task_id, slurm_cli.describe(status))
        return [Ended(task_id, TaskState.LOST, None, tail)]

    def kill(self, task_id: int) -> bool:
        """Cancel the task's job; False if it is not in Slurm."""
        tracked = self.jobs.pop(task_id, None)
        self.guard.forget(task_id)
        if tracked is None:
            return False
        try:
            slurm_cli.cancel(tracked.slurm_id)
        except SlurmUnavailable as exc:
            log.error("could not cancel Slurm job %s of task %d: %s", tracked.slurm_id, task_id, exc)
        return True

    def stop_all(self) -> list:
        """The node stops; its jobs run on in Slurm, and the next start re-attaches to them."""
        return []
