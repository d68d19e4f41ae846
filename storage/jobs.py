"""Operations on server jobs, shared by the web layer and the actors.

Each function opens its own short `db_session` (a short write transaction keeps SQLite writers from
starving each other) and returns plain data, never a live entity. Every state change goes through
`storage.states.advance`. The writers of many rows write them in one transaction, and row by row
when that fails (`_row_by_row`), so one row that cannot be stored never holds back the others.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Collection, Iterable, Iterator, Sequence

from pony.orm import OptimisticCheckError, TransactionIntegrityError, commit, db_session, flush, select

from storage import clock, database, public_ids
from storage.models import Job, db, record_change
from storage.states import ACTIVE, TERMINAL, JobState, advance, can_advance
from storage.storable import storable

_RETRIES = 5

log = logging.getLogger("orchestrator.jobs")


def remove_file(path: str) -> None:
    """Remove a job's file (its result zip) if it is still there."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def retrying(fn):
    """Run `fn` again when another process changed the same row meanwhile (optimistic check).

    Its arguments are used again, so batches are passed as sequences, never as one-shot iterators.
    """
    def wrapper(*args, **kwargs):
        for attempt in range(_RETRIES):
            try:
                return fn(*args, **kwargs)
            except (OptimisticCheckError, TransactionIntegrityError):
                if attempt == _RETRIES - 1:
                    raise
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _row_by_row(write_one, rows: Sequence, now: datetime, salvage=None) -> list:
    """`write_one(row, now)` for each row, all in one transaction; if that transaction fails, each
    row again in a transaction of its own, so a row the database refuses does not sink the others.

    A row refused on its own is logged, and handed to `salvage(row, now, error)` if given, which
    writes what can be written of it instead (in a transaction of its own). Returns each row's
    result: write_one's, salvage's, or None for a row that could not be written. Raises the first
    error when not one row could be written, or at once when another process holds SQLite's write
    lock: then the fault is the database's, not a row's.
    """
    try:
        return _together(write_one, rows, now)
    except Exception as exc:  # noqa: BLE001 — whatever the driver or Pony's checks refused
        if database.is_locked(exc):
            raise  # another process holds the write lock: each row would wait the busy timeout again
        log.warning("a write of %d rows failed (%s: %s); writing them one by one", len(rows),
                    exc.__class__.__name__, storable(str(exc))[:300])
    results, errors = [], []
    for row in rows:
        try:
            results.append(_together(write_one, [row], now)[0])
            continue
        except Exception as exc:  # noqa: BLE001
            log.error("could not write %s %r: %s: %s", write_one.__name__, row[0], exc.__class__.__name__,
                      storable(str(exc))[:300])
            error = exc
        result = None
        if salvage is not None:
            try:
                result, error = salvage(row, now, error), None
            except Exception as exc:  # noqa: BLE001
                error = exc
        results.append(result)
        if error is not None:
            errors.append(error)
    if len(errors) == len(rows):
        raise errors[0]
    return results


@retrying
@db_session
def _together(write_one, rows: Sequence, now: datetime) -> list:
    return [write_one(row, now) for row in rows]


@dataclass(frozen=True)
class JobRef:
    """The fields actors need to act on a job."""

    id: int
    user_id: int
    #: The portal that submitted it; None without tokens.
    portal: str | None
    service: str
    state: JobState
    dir: str
    attempts: int
    executor: str | None
    remote_id: str | None
    #: When it was created, started and ended, and how (for the events of its end: storage/job_events.py).
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str | None = None
    #: Seconds it may run once started (sent to its executor); None: no limit.
    max_runtime: int | None = None
    #: Its scheduling labels (storage.jobs.Labels), for the queue when it is queued again.
    priority: int = 0
    group: str | None = None

    @property
    def uid(self) -> str:
        """The job's unique name (its folder's), which no other server job shares."""
        return os.path.basename(self.dir)

    @staticmethod
    def of(job: Job) -> "JobRef":
        return JobRef(job.id, job.user_id, job.portal, job.service, JobState(job.state), job.dir, job.attempts,
                      job.executor, job.remote_id, job.created_at, job.started_at, job.finished_at, job.exit_code,
                      job.reason, job.max_runtime, job.priority or 0, job.group)


# --- web ---------------------------------------------------------------------------------------

class QueueFull(Exception):
    """The user (of that portal) already has the service's max_queued_per_user jobs waiting."""


#: The reason of a job that failed only because run.sh exited non-zero (the retriever writes it; the
#: TES views and list tell EXECUTOR_ERROR by it: web/tes/views.py, storage/tes_tasks.py).
COMMAND_FAILED_REASON = "run.sh exited with code "


def command_failed(exit_code: int) -> str:
    """The reason of a job whose run.sh exited with `exit_code` (not 0), when nothing else failed."""
    return f"{COMMAND_FAILED_REASON}{exit_code}"


@dataclass(frozen=True)
class Labels:
    """What an upload says of its job's scheduling: its priority among its user's jobs, its group,
    and its time limit (the upload's, else its service's; None: none)."""

    priority: int = 0
    group: str | None = None
    max_runtime: int | None = None


def create_job(user_id: int, service: str, folder: str, now: datetime, portal: str | None = None,
               max_queued: int | None = None, callback_url: str | None = None,
               labels: Labels = Labels(), also: Callable[[int], None] | None = None) -> tuple[int, dict]:
    """Write a new Queued job (and its first change-log entry); a portal's job (a server with
    tokens) gets a public id; `callback_url`: where its webhooks go; `labels`: its priority, group and
    time limit; `also(its number)` writes what belongs with it in the same transaction (a TES task's
    document: storage/tes_tasks.py).

    Returns:
        (its number, its view). Raises QueueFull when the portal's user already has `max_queued` waiting.
    """
    if max_queued is None:
        return _insert(user_id, service, folder, now, portal, callback_url, labels, also)
    return _insert_limited(user_id, service, folder, now, portal, max_queued, callback_url, labels, also)


@db_session
def _insert(user_id: int, service: str, folder: str, now: datetime, portal: str | None,
            callback_url: str | None, labels: Labels, also: Callable[[int], None] | None) -> tuple[int, dict]:
    job = _new_job(user_id, service, folder, now, portal, callback_url, labels, also)
    view = job.to_dict(new=True)
    commit()
    return job.id, view


def _new_job(user_id: int, service: str, folder: str, now: datetime, portal: str | None,
             callback_url: str | None, labels: Labels, also: Callable[[int], None] | None) -> Job:
    """The new Queued job's row, its change-log entry and what `also` writes (in the caller's session)."""
    job = Job(user_id=user_id, service=service, dir=folder, created_at=now, updated_at=now, portal=portal,
              public_id=public_ids.new() if portal is not None else None, callback_url=callback_url,
              priority=labels.priority, group=labels.group, max_runtime=labels.max_runtime)
    flush()  # assigns the id; reading the row after commit would cost another query
    record_change(job.id, portal, callback_url, JobState.QUEUED, now)
    if also is not None:
        also(job.id)
    return job


@db_session
def create_failed(user_id: int, service: str, folder: str, now: datetime, reason: str, portal: str | None = None,
                  labels: Labels = Labels(), also: Callable[[int], None] | None = None) -> tuple[JobRef, dict]:
    """Write a new job that cannot run (a TES task with an input it cannot have) as Failed with
    `reason`, with what `also` writes, in one transaction: it is never queued, holds no quota slot
    and no queued place (max_queued_per_user does not count it); the change log has its creation and
    its end, as any job's.

    Returns:
        (the job as stored, for the events of its end: storage/job_events.py; its view).
    """
    job = _new_job(user_id, service, folder, now, portal, None, labels, also)
    advance(job, JobState.FAILED, now)
    job.reason = reason[:1000]
    return JobRef.of(job), job.to_dict()


@db_session(immediate=True)
def _insert_limited(user_id: int, service: str, folder: str, now: datetime, portal: str | None,
                    max_queued: int, callback_url: str | None, labels: Labels,
                    also: Callable[[int], None] | None) -> tuple[int, dict]:
    """The count and the insert in one write transaction, so two uploads cannot both squeeze in."""
    # NOTE: Pony compiles `j.portal == portal` to IS NULL when portal is None (no tokens).
    waiting = select(j for j in Job if j.service == service and j.portal == portal and j.user_id == user_id
                     and j.state == JobState.QUEUED.value).count()
    if waiting >= max_queued:
        raise QueueFull(waiting)
    return _insert(user_id, service, folder, now, portal, callback_url, labels, also)


def _names(ref: int | str, public_id: str | None) -> bool:
    """A public id names its job; a number names only a job without one (no tokens, or created
    before public ids existed), so a portal cannot reach a new job by guessing numbers."""
    return isinstance(ref, str) or public_id is None


#: Passed as the portal by an operator, who sees every portal's jobs; no portal has this name
#: (conf/settings.py: names start with a letter or digit).
EVERY_PORTAL = "*"


def visible(ref: int | str, portal: str | None) -> Job | None:
    """The job `ref` (a public id, or a number) names, if `portal` may see it: a portal sees only
    what it submitted, an operator (EVERY_PORTAL) everything."""
    job = Job.get(public_id=ref) if isinstance(ref, str) else Job.get(id=ref)
    return job if job is not None and portal in (job.portal, EVERY_PORTAL) and _names(ref, job.public_id) else None


@db_session
def job_view(ref: int | str, portal: str | None = None, more=None) -> dict | None:
    """The job's view, if `portal` may see it; `more(job)` (read in the same session) adds keys to it."""
    job = visible(ref, portal)
    if job is None:
        return None
    view = job.to_dict()
    if more is not None:
        view.update(more(job))
    return view


@retrying
@db_session
def cancel(ref: int | str, portal: str | None, now: datetime) -> tuple[dict, JobRef | None] | None:
    """Cancel a job that has not ended, on its portal's request.

    Returns:
        None if `portal` sees no such job; else (its view; the job as it is now if this call
        cancelled it, else None: it had ended already).
    """
    job = visible(ref, portal)
    if job is None:
        return None
    ended = _finish(job.id, None, JobState.CANCELLED, now, {"reason": "cancelled on request"})
    return job.to_dict(), (ended[0] if ended is not None else None)


@db_session
def download_info(ref: int | str, portal: str | None = None) -> tuple[JobState, str | None] | None:
    """The state and result file of the job `ref` names, if `portal` may see it (as `visible`)."""
    # NOTE: four columns by a unique key, not the whole row: portals poll this, and parsing a
    # row's five time stamps is most of the cost of reading it.
    columns = select((j.state, j.result_path, j.portal, j.public_id) for j in Job)
    row = (columns.where(lambda j: j.public_id == ref) if isinstance(ref, str)
           else columns.where(lambda j: j.id == ref)).first()
    if row is None or row[2] != portal or not _names(ref, row[3]):
        return None
    return JobState(row[0]), row[1]


@db_session
def folder_names() -> set[str]:
    """The base names of every job folder the database knows."""
    return {os.path.basename(path) for path in select(j.dir for j in Job)}


@db_session
def ping() -> None:
    Job.select().exists()


def write_lock_free() -> bool:
    """Whether a write could start now (see storage.database.write_lock_free)."""
    return database.write_lock_free(db)


def unserved(service: str) -> str:
    """The reason a job of a service this server no longer configures cannot run (again)."""
    return f"service {service!r} is no longer configured on this server"


@retrying
@db_session
def fail_unserved(services: list[str], now: datetime) -> list[JobRef]:
    """Fail the waiting jobs of services that are no longer configured; returns them."""
    waiting = [JobState.QUEUED.value, JobState.DISPATCHING.value]
    failed = []
    for job in select(j for j in Job if j.state in waiting and j.service not in services):
        advance(job, JobState.FAILED, now)
        job.reason = unserved(job.service)
        failed.append(JobRef.of(job))
    return failed


@db_session
def unserved_under_way(services: list[str]) -> list[str]:
    """The services not among `services` that still have jobs on an executor (Submitted, Running)."""
    states = [JobState.SUBMITTED.value, JobState.RUNNING.value]
    return sorted(select(j.service for j in Job if j.state in states and j.service not in services))


# --- queue and quota ---------------------------------------------------------------------------

@dataclass(frozen=True)
class QueuedJob:
    """What the queue keeps of a queued job."""

    user: tuple[str | None, int]
    id: int
    priority: int
    group: str | None
    #: When it was created, epoch seconds of the naive UTC stamp.
    queued_at: float


def queued_jobs(service: str, page: int = 10_000) -> Iterator[QueuedJob]:
    """The service's queued jobs, oldest first, read `page` rows at a time so a long queue never
    sits in memory twice (as rows and as the queue's index)."""
    after = 0
    while True:
        with db_session:
            rows = select((j.portal, j.user_id, j.id, j.priority, j.group, j.created_at) for j in Job
                          if j.service == service and j.id > after
                          and j.state == JobState.QUEUED.value).order_by(3)[:page]
        yield from (QueuedJob((portal, user_id), job_id, priority or 0, group, clock.epoch(created))
                    for portal, user_id, job_id, priority, group, created in rows)
        if len(rows) < page:
            return
        after = rows[-1][2]


@db_session
def count_queued(service: str) -> int:
    return select(j for j in Job if j.service == service and j.state == JobState.QUEUED.value).count()


@dataclass(frozen=True)
class ActiveJob:
    """What the quota keeps of a job holding a slot."""

    service: str
    user: tuple[str | None, int]
    id: int
    group: str | None
    #: When it was admitted (its run time counts toward its user's fair-share usage from then).
    dispatched_at: datetime | None


@db_session
def active_jobs() -> list[ActiveJob]:
    """Every job holding a slot."""
    states = [s.value for s in ACTIVE]
    return [ActiveJob(service, (portal, user_id), job_id, group, dispatched_at)
            for service, portal, user_id, job_id, group, dispatched_at
            in select((j.service, j.portal, j.user_id, j.id, j.group, j.dispatched_at) for j in Job
                      if j.state in states)]


@db_session
def active_among(job_ids: Iterable[int]) -> set[int]:
    """Those of the jobs that hold a quota slot (Dispatching, Submitted or Running)."""
    ids, states = list(job_ids), [state.value for state in ACTIVE]
    return set(select(j.id for j in Job if j.id in ids and j.state in states)) if ids else set()


def claim_for_dispatch(job_ids: Iterable[int], now: datetime) -> tuple[list[int], list[int]]:
    """Move Queued jobs to Dispatching in one transaction.

    Returns:
        (claimed, gone): the ids moved, and the ids that were no longer Queued (or could not be
        claimed: the queue's resync finds them again).
    """
    ids = list(job_ids)
    moved = _row_by_row(_claim, [(job_id,) for job_id in ids], now)
    return [i for i, ok in zip(ids, moved) if ok], [i for i, ok in zip(ids, moved) if not ok]


def _claim(row: tuple[int], now: datetime) -> bool:
    job = Job.get(id=row[0])
    if job is None or job.state != JobState.QUEUED.value:
        return False
    advance(job, JobState.DISPATCHING, now)
    return True


# --- dispatcher --------------------------------------------------------------------------------

@db_session
def dispatching_jobs(service: str) -> list[int]:
    """Jobs admitted but not yet confirmed by an executor, oldest first (to send again)."""
    return list(select(j.id for j in Job if j.service == service
                       and j.state == JobState.DISPATCHING.value).order_by(1))


@db_session
def in_flight_by_executor(service: str) -> dict[str, int]:
    states = [s.value for s in ACTIVE]
    counts: dict[str, int] = {}
    for executor in select(j.executor for j in Job if j.service == service and j.state in states
                           and j.executor is not None).without_distinct():
        counts[executor] = counts.get(executor, 0) + 1
    return counts


def begin_attempts(assignments: Sequence[tuple[int, str]], now: datetime) -> dict[int, int]:
    """Persist "attempt N of job J goes to executor E" for each (J, E) before sending, so a late
    report of an older attempt is recognised. Returns {J: N} for the jobs still Dispatching."""
    numbers = _row_by_row(_begin_attempt, assignments, now)
    return {job_id: number for (job_id, _), number in zip(assignments, numbers) if number is not None}


def _begin_attempt(assignment: tuple[int, str], now: datetime) -> int | None:
    job_id, executor = assignment
    job = Job.get(id=job_id)
    if job is None or job.state != JobState.DISPATCHING.value:
        return None
    job.attempts += 1
    job.executor = executor
    job.remote_id = None
    job.fetch_failures = None
    job.updated_at = now
    return job.attempts


@retrying
@db_session
def unassign(job_id: int, attempt: int) -> None:
    """Attempt `attempt` certainly never reached its executor: take it back, as if never made."""
    job = Job.get(id=job_id)
    if job is not None and job.attempts == attempt and job.state == JobState.DISPATCHING.value:
        job.attempts -= 1
        job.executor = None


def mark_submitted(accepted: Sequence[tuple[int, int, str]], now: datetime) -> None:
    """Executors accepted these (job_id, attempt, task id); a report may already have moved a job on.
    A task id that cannot be stored is left out: the retriever looks the task up by (job, attempt)."""
    _row_by_row(_mark_submitted, accepted, now)


def _mark_submitted(accepted: tuple[int, int, str], now: datetime) -> None:
    job_id, attempt, remote_id = accepted
    job = Job.get(id=job_id)
    if job is None or job.attempts != attempt:
        return
    job.remote_id = remote_id
    if job.state == JobState.DISPATCHING.value:
        advance(job, JobState.SUBMITTED, now)


@retrying
@db_session
def requeue_or_fail(job_id: int, attempt: int, reason: str, max_attempts: int, now: datetime,
                    services: Collection[str]) -> tuple[JobRef, JobState, JobRef] | None:
    """An executor lost attempt `attempt`: back to the queue, or Failed once `max_attempts` were made
    or when its service is not among `services` (the configured ones: no queue would ever take it).

    Returns:
        (the job as it was, its new state, the job as it is now), or None when the attempt is stale
        or the job ended.
    """
    job = Job.get(id=job_id)
    if job is None or job.attempts != attempt or JobState(job.state) not in ACTIVE:
        return None
    before = JobRef.of(job)
    if job.attempts >= max_attempts or job.service not in services:
        advance(job, JobState.FAILED, now)
        job.reason = (f"{reason} (attempt {job.attempts} of {max_attempts})" if job.service in services
                      else f"{reason}; {unserved(job.service)}")
        return before, JobState.FAILED, JobRef.of(job)
    advance(job, JobState.QUEUED, now)
    job.reason = reason
    job.executor = job.remote_id = None
    return before, JobState.QUEUED, JobRef.of(job)


@db_session
def active_in(service: str) -> list[JobRef]:
    states = [s.value for s in ACTIVE]
    return [JobRef.of(j) for j in select(j for j in Job if j.service == service and j.state in states)]


@db_session
def active_on(executor: str) -> list[JobRef]:
    """Jobs whose current attempt is on `executor` (or may be, while it is being sent)."""
    states = [s.value for s in ACTIVE]
    return [JobRef.of(j) for j in select(j for j in Job if j.executor == executor and j.state in states)]


# --- retriever ---------------------------------------------------------------------------------

@db_session
def get_ref(job_id: int) -> JobRef | None:
    job = Job.get(id=job_id)
    return JobRef.of(job) if job else None


@db_session
def get_refs(job_ids: Iterable[int]) -> dict[int, JobRef]:
    """The jobs of those ids that exist, read in one transaction."""
    ids = list(job_ids)
    return {job.id: JobRef.of(job) for job in select(j for j in Job if j.id in ids)} if ids else {}


def mark_running(started: Sequence[tuple[int, int]], now: datetime) -> list[JobRef]:
    """Executors started these (job_id, attempt); a report that comes late or for another attempt is
    ignored. Returns the jobs that are Running now."""
    return [job for job in _row_by_row(_mark_running, started, now) if job is not None]


def _mark_running(started: tuple[int, int], now: datetime) -> JobRef | None:
    job_id, attempt = started
    job = Job.get(id=job_id)
    if job is not None and job.attempts == attempt and can_advance(JobState(job.state), JobState.RUNNING):
        advance(job, JobState.RUNNING, now)
        return JobRef.of(job)
    return None


@retrying
@db_session
def finish(job_id: int, attempt: int | None, state: JobState, now: datetime, *, exit_code: int | None = None,
           reason: str | None = None, stderr_tail: str | None = None,
           result_path: str | None = None) -> tuple[JobRef, bool] | None:
    """Give a job its outcome; None for a stale attempt or a job that already ended.

    Returns:
        (job, held_slot): held_slot tells whether the job was active, so a quota slot is now free.
    """
    return _finish(job_id, attempt, state, now, {"exit_code": exit_code, "reason": reason,
                                                 "stderr_tail": stderr_tail, "result_path": result_path})


def finish_many(outcomes: Sequence[tuple[int, int | None, JobState, dict]],
                now: datetime) -> list[tuple[JobRef, bool] | None]:
    """`finish` for each (job_id, attempt, state, details), in one transaction; `details` holds
    finish's keyword arguments. An outcome the database refuses ends its job all the same, without
    the details that came from outside (`_finish_plainly`)."""
    return _row_by_row(_finish_outcome, outcomes, now, salvage=_finish_plainly)


def _finish_outcome(outcome: tuple[int, int | None, JobState, dict], now: datetime) -> tuple[JobRef, bool] | None:
    job_id, attempt, state, details = outcome
    return _finish(job_id, attempt, state, now, details)


def _finish_plainly(outcome: tuple[int, int | None, JobState, dict], now: datetime,
                    error: Exception) -> tuple[JobRef, bool] | None:
    """The outcome, with what the server knows itself (state, exit code, result file) and without the
    executor's words (reason, stderr tail), which the database refused; a failure says so instead.

    NOTE: the job keeps its state: a fetched result is still a Completed job's, and what was lost is
    only its stderr tail (stderr.log is in its zip).
    """
    job_id, attempt, state, details = outcome
    kept = {"exit_code": details.get("exit_code"), "result_path": details.get("result_path")}
    if state is not JobState.COMPLETED:
        kept["reason"] = (f"its executor's report could not be stored ({error.__class__.__name__}: "
                          f"{storable(str(error))[:300]})")
    return _together(_finish_outcome, [(job_id, attempt, state, kept)], now)[0]


def _finish(job_id: int, attempt: int | None, state: JobState, now: datetime,
            details: dict) -> tuple[JobRef, bool] | None:
    assert state in TERMINAL
    job = Job.get(id=job_id)
    if job is None or (attempt is not None and job.attempts != attempt):
        return None
    if not can_advance(JobState(job.state), state):
        return None
    held_slot = JobState(job.state) in ACTIVE
    advance(job, state, now)
    job.exit_code = details.get("exit_code")
    job.reason = details.get("reason")
    job.stderr_tail = details.get("stderr_tail")
    job.result_path = details.get("result_path")
    return JobRef.of(job), held_slot


@retrying
@db_session
def fetch_failed(job_id: int, attempt: int, error: str, limit: int, now: datetime) -> tuple[JobRef, bool] | None:
    """Count a failed fetch of attempt `attempt`'s results; the `limit`-th fails the job with `error`.

    Returns:
        (job, held_slot) when this failure ended the job, else None.
    """
    job = Job.get(id=job_id)
    if job is None or job.attempts != attempt or JobState(job.state) not in ACTIVE:
        return None
    job.fetch_failures = (job.fetch_failures or 0) + 1
    if job.fetch_failures < limit:
        return None
    return _finish(job_id, attempt, JobState.FAILED, now, {
        "exit_code": 0, "reason": f"its results could not be fetched from {job.executor} after "
                                  f"{job.fetch_failures} tries: {error}"[:1000]})


@retrying
@db_session
def attach_result(job_id: int, attempt: int, result_path: str) -> bool:
    """Give attempt `attempt` of a Failed job the results fetched after its outcome was written (a
    failed TES task's logs are read from them: actors/server/retriever.py). False when the job is not
    that Failed attempt any more (the janitor cleaned it meanwhile): the file is then the caller's to
    remove. The janitor removes an attached result as any other (by the job's result file)."""
    job = Job.get(id=job_id)
    if job is None or job.attempts != attempt or job.state != JobState.FAILED.value:
        return False
    job.result_path = result_path
    return True


@retrying
@db_session
def set_remote_id(job_id: int, attempt: int, remote_id: str) -> None:
    """Record the executor's task id of attempt `attempt` (learned after the submit's answer was lost)."""
    job = Job.get(id=job_id)
    if job is not None and job.attempts == attempt and not job.remote_id:
        job.remote_id = remote_id


@db_session
def stale_active(older_than: datetime) -> list[JobRef]:
    """Submitted or Running jobs that have not changed since `older_than` (to ask their executor)."""
    states = [JobState.SUBMITTED.value, JobState.RUNNING.value]
    return [JobRef.of(j) for j in select(j for j in Job if j.state in states and j.updated_at < older_than)]


# --- janitor -----------------------------------------------------------------------------------

@db_session
def expired(cutoffs: dict[str, datetime], default_cutoff: datetime, limit: int) -> list[JobRef]:
    """Ended jobs finished before their service's cutoff, oldest first, at most `limit`."""
    outcomes = [s.value for s in TERMINAL]
    latest = max([default_cutoff, *cutoffs.values()])
    candidates = select(j for j in Job if j.state in outcomes and j.finished_at < latest).order_by(Job.finished_at)
    found = []
    for job in candidates:
        if job.finished_at < cutoffs.get(job.service, default_cutoff):
            found.append(JobRef.of(job))
            if len(found) >= limit:
                break
    return found


@retrying
@db_session
def mark_cleaned(job_id: int, now: datetime) -> bool:
    """Whether this call cleaned the job (an ended job that was not cleaned yet)."""
    job = Job.get(id=job_id)
    if job is None or not can_advance(JobState(job.state), JobState.CLEANED):
        return False
    advance(job, JobState.CLEANED, now)
    job.result_path = None
    return True


@db_session
def whereabouts(ref: int | str, portal: str | None = None) -> tuple[JobRef, str | None] | None:
    """The job `ref` names and the path of its result zip (None until fetched), if `portal` may see
    it (as `visible`): where its folder is to be read (web/follow.py)."""
    job = visible(ref, portal)
    return None if job is None else (JobRef.of(job), job.result_path)
