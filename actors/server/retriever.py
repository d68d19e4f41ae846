"""RetrieverActor: turns executors' reports into job outcomes, fetching the results of a success
(and of a failed GA4GH TES task, whose logs are read from its results).

Accepts: ExecutorEvent (an executor's callback, handed on by the web layer), WakeupMessage (the slow
sweep that asks executors about jobs no report arrived for; "flush" to write the outcomes reported;
("collect", n) to take in the fetches that ended; ("refetch", job id) to fetch a job's results
again). Sends: JobEnded to the quota and to the service's dispatcher (ServerActor.job_ended);
JobQueued to the queue when a job comes back after its executor lost it (up to max_attempts; then
the job fails).

A report carries the attempt token; one from an earlier attempt never changes the job. A failure
is written at once; a success's results are fetched on a pool thread, so the actor goes on with
other reports meanwhile, and each job completes as soon as its own results are there, however
slow another's are. Results are fetched into a temporary file and renamed, so a 200 never serves a
partial zip. A fetch that did not get the results is tried again after fetch_retry_seconds; after
max_fetch_failures errors from the executor the job fails (`counted` says which count).

A failed GA4GH TES task is written Failed at once too (its slot frees, its outcome is never lost
nor run again); its results, which its logs are read from, are then fetched the same way and
attached to it (storage.jobs.attach_result). Best effort: an error, or max_fetch_failures answers
"still zipping", or a restart of this actor, leaves it without them.
"""
from __future__ import annotations

import os
import queue
from datetime import datetime, timedelta

from thespian.actors import WakeupMessage

from actors.messages import Configure, ExecutorEvent
from actors.server.base import ServerActor
from actors.server.executor_link import ExecutorLink, ExecutorUnreachable
from actors.server.parallel import CallPool
from conf.logs import event
from storage import job_events, jobs, tes_tasks
from storage import clock
from storage.states import ACTIVE, JobState

SWEEP_SECONDS = 5.0
#: A job is asked about when nothing happened to it for this long.
QUIET_SECONDS = 5.0
#: Executor task states from which the job may still finish there; any other means it never will.
ALIVE = {"accepted", "running", "finished"}
#: Results fetched from executors at the same time, at most.
FETCH_CONCURRENCY = 8
#: How long the actor waits for the fetches it just started before it goes on with other mail: most
#: results are ready and small, and are then written without a timer's delay; a slow one is
#: collected later, on timers from COLLECT_FIRST apart growing to COLLECT_MAX.
QUICK_FETCH_WAIT = 0.05
COLLECT_FIRST = 0.01
COLLECT_MAX = 0.1


class RetrieverActor(ServerActor):
    role = "retriever"

    def configured(self, msg: Configure) -> None:
        self.link = ExecutorLink(self.config.cluster_secret)
        self.calls = CallPool(FETCH_CONCURRENCY, "fetch")
        #: Outcomes reported and not yet written, by job id: (job, task id, exit code, stderr tail, the
        #: executor's reason for a failure).
        self.finishing: dict[int, tuple[jobs.JobRef, str, int | None, str | None, str | None]] = {}
        #: Fetches on the pool's threads, by job id, and their outcomes, which those threads put in
        #: `fetched` as (entry, stored, error) for the actor to collect.
        self.fetching: dict[int, tuple] = {}
        self.fetched: queue.SimpleQueue = queue.SimpleQueue()
        self.collect_number, self.collect_due, self.collect_delay = 0, None, COLLECT_FIRST
        #: Jobs whose results are fetched again at a ("refetch", job id) timer.
        self.refetching: set[int] = set()
        #: The failed TES tasks among those, by job id: their reported outcome (written already) and
        #: how many times their executor answered "still zipping".
        self.zipping: dict[int, tuple[tuple, int]] = {}
        os.makedirs(self.config.results_path, exist_ok=True)
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
        self.flush_soon()

    def write_outcomes(self) -> None:
        """Write the queued failures at once, then start fetching the results of the failed TES tasks
        among them; start fetching the results of the queued successes."""
        batch, self.finishing = [with_reason(entry) for entry in self.finishing.values()], {}
        failures = [entry for entry in batch if failed(entry)]
        ended = self.write([failure(entry) for entry in failures])
        started = {entry[0].id for entry in batch if not failed(entry) and self.start_fetch(entry)}
        started |= {entry[0].id for entry in self.failed_tes_tasks(failures, ended) if self.start_fetch(entry)}
        if started:
            self.collect(wait_for=started)

    def failed_tes_tasks(self, failures: list[tuple], ended: set[int]) -> list[tuple]:
        """The failed TES tasks among `failures` that were written Failed now (`ended`): their results
        are fetched after. None when that cannot be looked up (their logs are optional)."""
        try:
            tes = tes_tasks.among(entry[0].id for entry in failures if entry[0].id in ended)
        except Exception:  # noqa: BLE001 — the outcomes are written; the other fetches must still start
            self.log.exception("could not tell the failed TES tasks among jobs %s", sorted(ended))
            return []
        return [entry for entry in failures if entry[0].id in tes]

    def start_fetch(self, entry: tuple) -> bool:
        """Fetch the results of a reported outcome on a pool thread, unless they are being fetched."""
        job = entry[0]
        if job.id in self.fetching:
            return False
        self.fetching[job.id] = entry
        self.calls.start(self.fetch, entry, self.fetched.put)
        return True

    def write(self, outcomes: list) -> set[int]:
        """Write outcomes in one transaction and free the slots of the jobs they ended; returns the
        ids of the jobs they ended (a stale one ends none)."""
        ended = list(filter(None, jobs.finish_many(outcomes, clock.utcnow()))) if outcomes else []
        job_events.ended(self.log, *(job for job, _ in ended))
        self.job_ended(*(job for job, held_slot in ended if held_slot))
        return {job.id for job, _ in ended}

    def fetch(self, entry) -> bool:
        """Runs on a pool thread: the task's zip into the job's result file; False while the
        executor is still making it."""
        job, remote_id = entry[:2]
        try:
            return self.link.fetch(job.executor, remote_id, self.config.result_file(job.id))
        except ExecutorUnreachable as exc:
            self.log.warning("could not fetch the results of job %d: %s", job.id, exc)
            raise

    # --- fetches under way: their outcomes come back through a queue -------------------------

    def arm_collect(self, delay: float) -> None:
        """Collect the fetches' outcomes after `delay`, unless a collect is armed sooner already.

        NOTE: a pool thread cannot send the actor a message (Thespian's transport is the actor's own
        thread), so the actor looks: soon after a fetch starts, as most end within milliseconds,
        then less and less often while a slow one goes on. A timer cannot be cancelled; a
        superseded one is ignored.
        """
        due = clock.monotonic() + delay
        if self.collect_due is not None and self.collect_due <= due:
            return
        self.collect_number += 1
        self.collect_due, self.collect_delay = due, delay
        self.wakeupAfter(delay, payload=("collect", self.collect_number))

    def collect(self, wait_for: set[int] | None = None) -> None:
        """Write the outcomes of the fetches that ended (waiting up to QUICK_FETCH_WAIT for those of
        the jobs `wait_for`, just started): completions in one transaction; a fetch that did not get
        the results is tried again later, and one the executor answered with an error counts
        towards max_fetch_failures."""
        if wait_for is None:
            self.collect_due = None  # this is the armed collect
        deadline = clock.monotonic() + (QUICK_FETCH_WAIT if wait_for else 0.0)
        outcomes = []
        try:
            while True:
                left = deadline - clock.monotonic()
                try:
                    if left > 0 and wait_for and not wait_for.isdisjoint(self.fetching):
                        entry, stored, error = self.fetched.get(timeout=left)
                    else:
                        entry, stored, error = self.fetched.get_nowait()
                except queue.Empty:
                    break
                job, stderr_tail = entry[0], entry[3]
                self.fetching.pop(job.id, None)
                if failed(entry):
                    self.attach(entry, stored, error)
                elif stored:
                    result = self.config.result_file(job.id)
                    self.retrieved(job, result)
                    outcomes.append((job.id, job.attempts, JobState.COMPLETED,
                                     {"exit_code": 0, "stderr_tail": stderr_tail, "result_path": result}))
                elif self.counted(error) and self.fetch_failed(job, error):
                    continue
                else:
                    self.refetch_later(job.id)
            self.write(outcomes)
        finally:
            if self.fetching:
                self.arm_collect(COLLECT_FIRST if wait_for else min(self.collect_delay * 2, COLLECT_MAX))

    def retrieved(self, job: jobs.JobRef, result: str) -> None:
        event(self.log, "retrieved", job=job.id, service=job.service, executor=job.executor,
              bytes=os.path.getsize(result))

    def attach(self, entry: tuple, stored: bool, error: Exception | None) -> None:
        """The fetch of a failed TES task's results ended: attach them (a result of a job cleaned
        meanwhile is removed), or fetch again later while its executor is still zipping them."""
        job = entry[0]
        _, busy = self.zipping.pop(job.id, (entry, 0))
        result = self.config.result_file(job.id)
        if stored and jobs.attach_result(job.id, job.attempts, result):
            self.retrieved(job, result)
        elif stored:
            jobs.remove_file(result)
        elif error is None and busy + 1 < self.config.max_fetch_failures:
            self.zipping[job.id] = (entry, busy + 1)
            self.refetch_later(job.id)
        else:
            self.log.warning("failed job %d stays without its results: %s", job.id,
                             error or f"still being zipped after {busy + 1} tries")

    @staticmethod
    def counted(error: Exception | None) -> bool:
        """Whether a failed fetch counts against the job: the executor answered, with an error about
        this result (409: it could not zip it; 500). Not counted: no answer or a cut-off one (the
        executor is down or restarting: the executor-lost path deals with that), 404 (it does not
        know the task: the sweep's question finds that out and runs the job again), a busy or
        unreachable executor behind a proxy (429, 502-504), and the server's own disk failing."""
        status = getattr(error, "status", None)
        return status is not None and status not in (404, 408, 429, 502, 503, 504)

    def fetch_failed(self, job: jobs.JobRef, error: Exception) -> bool:
        """Count the failure (persisted, so a restart does not reset it); True if it failed the job."""
        ended = jobs.fetch_failed(job.id, job.attempts, str(error), self.config.max_fetch_failures, clock.utcnow())
        if ended is None:
            return False
        self.log.error("job %d failed: its results could not be fetched after %d tries: %s", job.id,
                       self.config.max_fetch_failures, error)
        job_events.ended(self.log, ended[0])
        if ended[1]:
            self.job_ended(ended[0])
        return True

    def refetch_later(self, job_id: int) -> None:
        if job_id not in self.refetching:
            self.refetching.add(job_id)
            self.wakeupAfter(self.config.fetch_retry_seconds, payload=("refetch", job_id))

    def refetch(self, job_id: int) -> None:
        """Ask the executor about the job again (finished: its results are fetched anew); a failed
        TES task's results are simply fetched again."""
        self.refetching.discard(job_id)
        if job_id in self.zipping:
            if self.start_fetch(self.zipping[job_id][0]):
                self.collect(wait_for={job_id})
            return
        job = jobs.get_ref(job_id)
        if job is None or job.state not in ACTIVE or not job.executor or self.busy(job_id):
            return
        try:
            self.ask_about(job)
        except ExecutorUnreachable:
            pass  # the sweep asks again; the executor-lost path ends it if the executor stays away

    def busy(self, job_id: int) -> bool:
        """The job's outcome is being written, its results fetched, or fetched again soon."""
        return job_id in self.finishing or job_id in self.fetching or job_id in self.refetching

    # --- the slow sweep: recover reports that never arrived -----------------------------------

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        if self.flush_due(msg):
            self.write_outcomes()
            return
        if isinstance(msg.payload, tuple):
            kind, number = msg.payload
            if kind == "collect" and number == self.collect_number:
                self.collect()
            elif kind == "refetch":
                self.refetch(number)
            return
        try:
            if self.peers is not None:
                self.sweep(clock.utcnow())
        finally:
            self.wakeupAfter(SWEEP_SECONDS)

    def sweep(self, now: datetime) -> None:
        """Ask the executors about the active jobs not heard of for QUIET_SECONDS before `now`."""
        quiet_since = now - timedelta(seconds=QUIET_SECONDS)
        silent: set[str] = set()
        for job in jobs.stale_active(quiet_since):
            if not job.executor or job.executor in silent or self.busy(job.id):
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
        ended = jobs.finish(job.id, job.attempts, JobState.CANCELLED, clock.utcnow(),
                            reason="cancelled on its executor's cluster", stderr_tail=stderr_tail)
        if ended is not None:
            job_events.ended(self.log, ended[0])
        if ended is not None and ended[1]:
            self.job_ended(job)


def failed(entry: tuple) -> bool:
    """Whether a reported outcome (job, task id, exit code, stderr tail, reason) is a failure."""
    return entry[2] != 0 or bool(entry[4])


def with_reason(entry: tuple) -> tuple:
    """The reported outcome, with the reason of a failure its executor gave none for.

    NOTE: the TES views and list tell EXECUTOR_ERROR (a command failed) by this reason (jobs.command_failed)."""
    job, remote_id, exit_code, stderr_tail, reason = entry
    if exit_code != 0 and not reason:
        reason = jobs.command_failed(exit_code) if exit_code is not None else "run.sh could not be run"
    return job, remote_id, exit_code, stderr_tail, reason


def failure(entry: tuple) -> tuple:
    """The Failed outcome of a reported failure (its reason given: `with_reason`)."""
    job, _, exit_code, stderr_tail, reason = entry
    return job.id, job.attempts, JobState.FAILED, {"exit_code": exit_code, "reason": reason, "stderr_tail": stderr_tail}
