"""RetrieverActor: turns executors' reports into job outcomes, fetching the results of a success.

Accepts: ExecutorEvent (an executor's callback, handed on by the web layer), WakeupMessage (the slow
sweep that asks executors about jobs no report arrived for). Sends: JobEnded to the quota and to the
service's dispatcher; JobQueued to the queue when a job comes back after its executor lost it
(up to max_attempts; then the job fails).

A report carries the attempt token; one from an earlier attempt never changes the job. Results
are fetched into a temporary file and renamed, so a 200 never serves a partial zip.
"""
from __future__ import annotations

import os
from datetime import timedelta

from thespian.actors import WakeupMessage

from actors.base import ServerActor
from actors.executor_link import ExecutorLink, ExecutorUnreachable
from actors.messages import Configure, ExecutorEvent
from actors.parallel import CallPool
from storage import jobs
from storage.clock import utcnow
from storage.states import ACTIVE, JobState

SWEEP_SECONDS = 5.0
#: A job is asked about when nothing happened to it for this long.
QUIET_SECONDS = 5.0
#: Executor task states from which the job may still finish there; any other means it never will.
ALIVE = {"accepted", "running", "finished"}
#: Results fetched from executors at the same time, at most.
FETCH_CONCURRENCY = 8


class RetrieverActor(ServerActor):
    role = "retriever"

    def configured(self, msg: Configure) -> None:
        self.link = ExecutorLink(self.config.cluster_secret)
        self.calls = CallPool(FETCH_CONCURRENCY, "fetch")
        #: Outcomes reported and not yet written, by job id: (job, task id, exit code, stderr tail, the
        #: executor's reason for a failure).
        self.finishing: dict[int, tuple[jobs.JobRef, str, int | None, str | None, str | None]] = {}
        self.flush_armed = False
        os.makedirs(os.path.dirname(jobs.result_file(self.config.data_dir, 0)), exist_ok=True)
        self.wakeupAfter(0.1)

    def receiveMsg_ExecutorEvent(self, msg: ExecutorEvent, sender) -> None:
        if msg.event == "started":
            return  # the web layer records Running itself (storage.jobs.mark_running)
        job = jobs.get_ref(msg.job_id)
        if job is None or job.attempts != msg.attempt or job.state not in ACTIVE or not job.executor:
            return  # a late report of an older attempt, or of a job that already ended
        remote_id = job.remote_id
        if remote_id is None:
            # NOTE: the report overtook the executor's answer to the submit; trust its task id only
            # once the executor confirms that task is this job's attempt.
            remote_id = self.confirmed_task(job, msg.task_id)
            if remote_id is None:
                return
        if msg.event == "finished":
            self.finished(job, remote_id, msg.exit_code, msg.stderr_tail, msg.reason)
        elif msg.event == "lost":
            self.job_lost(job.id, job.attempts, "its executor lost it")
        elif msg.event == "cancelled":
            self.cancelled(job, msg.stderr_tail)

    def confirmed_task(self, job: jobs.JobRef, task_id: str | None) -> str | None:
        if not task_id:
            return None
        try:
            task = self.link.status(job.executor, task_id)
        except ExecutorUnreachable:
            return None
        ok = task is not None and task["job_id"] == job.id and task["attempt"] == job.attempts
        return task_id if ok else None

    def finished(self, job: jobs.JobRef, remote_id: str, exit_code: int | None, stderr_tail: str | None,
                 reason: str | None = None) -> None:
        """Queue the outcome; it is written after the messages already waiting, with theirs."""
        reason = reason[:1000] if isinstance(reason, str) and reason else None
        self.finishing[job.id] = (job, remote_id, exit_code, stderr_tail, reason)
        if not self.flush_armed:
            self.flush_armed = True
            self.wakeupAfter(0, payload="flush")

    def write_outcomes(self) -> None:
        """Fetch the results of the queued successes side by side, then write every outcome at once."""
        batch, self.finishing = list(self.finishing.values()), {}
        successes = [entry for entry in batch if entry[2] == 0 and not entry[4]]
        fetched = {job.id for (job, *_), _, error in self.calls.each(self.fetch, successes) if error is None}
        outcomes = []
        for job, remote_id, exit_code, stderr_tail, reason in batch:
            if exit_code != 0 or reason:
                reason = reason or (f"run.sh exited with code {exit_code}" if exit_code is not None
                                    else "run.sh could not be run")
                outcomes.append((job.id, job.attempts, JobState.FAILED,
                                 {"exit_code": exit_code, "reason": reason, "stderr_tail": stderr_tail}))
            elif job.id in fetched:
                outcomes.append((job.id, job.attempts, JobState.COMPLETED,
                                 {"exit_code": 0, "stderr_tail": stderr_tail,
                                  "result_path": jobs.result_file(self.config.data_dir, job.id)}))
            # NOTE: a result not fetched leaves its job active; the sweep asks the executor again.
        ended = jobs.finish_many(outcomes, utcnow()) if outcomes else []
        self.job_ended(*(job for job, held_slot in filter(None, ended) if held_slot))

    def fetch(self, entry) -> None:
        """Runs on a pool thread: the task's zip into the job's result file."""
        job, remote_id = entry[:2]
        try:
            self.link.fetch(job.executor, remote_id, jobs.result_file(self.config.data_dir, job.id))
        except ExecutorUnreachable as exc:
            self.log.warning("could not fetch the results of job %d: %s", job.id, exc)
            raise

    # --- the slow sweep: recover reports that never arrived -----------------------------------

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        if msg.payload == "flush":
            self.flush_armed = False
            self.write_outcomes()
            return
        try:
            if self.peers is not None:
                self.sweep()
        finally:
            self.wakeupAfter(SWEEP_SECONDS)

    def sweep(self) -> None:
        quiet_since = utcnow() - timedelta(seconds=QUIET_SECONDS)
        silent: set[str] = set()
        for job in jobs.stale_active(quiet_since):
            if not job.executor or job.executor in silent:
                continue
            try:
                self.ask_about(job)
            except ExecutorUnreachable:
                silent.add(job.executor)  # one unanswered question per executor and sweep
            except Exception:  # noqa: BLE001 — one bad job must not stop the sweep of the others
                self.log.exception("sweep of job %d failed", job.id)

    def ask_about(self, job: jobs.JobRef) -> None:
        if job.remote_id is None:
            # NOTE: the dispatcher died between the executor's answer and recording it.
            task = self.link.find(job.executor, job.uid, job.attempts)
            if task is None:
                self.job_lost(job.id, job.attempts, "its executor never received it")
                return
            jobs.set_remote_id(job.id, job.attempts, task["id"])
            job = jobs.get_ref(job.id)
        task = self.link.status(job.executor, job.remote_id)
        if task is not None and (task["job_id"], task["attempt"], task["state"]) == (job.id, job.attempts, "cancelled"):
            self.cancelled(job, task.get("stderr_tail"))
        elif task is None or task["job_id"] != job.id or task["attempt"] != job.attempts or task["state"] not in ALIVE:
            self.job_lost(job.id, job.attempts, "its executor no longer has it")
        elif task["state"] == "finished":
            self.finished(job, job.remote_id, task.get("exit_code"), task.get("stderr_tail"), task.get("reason"))

    def cancelled(self, job: jobs.JobRef, stderr_tail: str | None) -> None:
        """Cancelled where it ran (scancel of its Slurm job): an outcome, not a loss to run again."""
        ended = jobs.finish(job.id, job.attempts, JobState.CANCELLED, utcnow(),
                            reason="cancelled on its executor's cluster", stderr_tail=stderr_tail)
        if ended is not None and ended[1]:
            self.job_ended(job)
