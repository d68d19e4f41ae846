"""The server's job states, the table of allowed transitions, and the one function that moves a job.

Every change of `Job.state` goes through `advance`, so an illegal move is an error at the line that
tried it, an outcome (Completed, Failed, Cancelled) can only ever be followed by Cleaned, and every
move is recorded (`job.changed`: the change feed and the webhooks' outbox, storage/models.py).
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum


class JobState(str, Enum):
    QUEUED = "Queued"            #: stored, waiting for a quota slot
    DISPATCHING = "Dispatching"  #: admitted by the quota, being sent to an executor
    SUBMITTED = "Submitted"      #: an executor accepted it and holds it
    RUNNING = "Running"          #: run.sh has started on the executor
    COMPLETED = "Completed"      #: run.sh exited 0 and the results are stored here
    FAILED = "Failed"            #: it cannot complete; `reason` says why
    CANCELLED = "Cancelled"      #: stopped on request
    CLEANED = "Cleaned"          #: an outcome whose data the retention period removed


#: The outcomes: every accepted job ends in exactly one of these.
TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED})
#: Holding a quota slot: every one of these counts against runs_per_user and max_runs.
ACTIVE = frozenset({JobState.DISPATCHING, JobState.SUBMITTED, JobState.RUNNING})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.DISPATCHING, JobState.FAILED, JobState.CANCELLED}),
    # Back to QUEUED: no executor took it, or its executor was lost; it waits for a slot again.
    # On to RUNNING or an outcome: the executor's report can overtake its answer to the submit.
    JobState.DISPATCHING: frozenset({JobState.SUBMITTED, JobState.RUNNING, JobState.COMPLETED, JobState.FAILED,
                                     JobState.QUEUED, JobState.CANCELLED}),
    JobState.SUBMITTED: frozenset({JobState.RUNNING, JobState.COMPLETED, JobState.FAILED,
                                   JobState.QUEUED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.COMPLETED, JobState.FAILED, JobState.QUEUED, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset({JobState.CLEANED}),
    JobState.FAILED: frozenset({JobState.CLEANED}),
    JobState.CANCELLED: frozenset({JobState.CLEANED}),
    JobState.CLEANED: frozenset(),
}


class InvalidTransition(Exception):
    """A state change the transitions table does not allow."""

    def __init__(self, job_id: int, from_state: JobState, to_state: JobState):
        super().__init__(f"job {job_id}: {from_state.value} -> {to_state.value} is not allowed")
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state


def can_advance(current: JobState, new: JobState) -> bool:
    return new in TRANSITIONS[current]


def advance(job, new: JobState, now: datetime) -> None:
    """Move `job` (a storage entity) to `new`, stamping the time fields that belong to it, and record
    the move in the same transaction (`job.changed`, with when its slot was taken if it held one).

    Raises:
        InvalidTransition: the table does not allow the move.
    """
    current = JobState(job.state)
    if not can_advance(current, new):
        raise InvalidTransition(job.id, current, new)
    # NOTE: a slot is held from admission (Dispatching) to the end: fair share charges that time.
    held_since = job.dispatched_at if current in ACTIVE else None
    job.state = new.value
    job.updated_at = now
    if new is JobState.QUEUED:
        job.started_at = None  # it will run again; started_at belongs to the attempt that runs
    elif new is JobState.DISPATCHING:
        job.dispatched_at = now
    elif new is JobState.RUNNING and job.started_at is None:
        job.started_at = now
    elif new in TERMINAL:
        job.finished_at = now
        job.outcome = new.value
    elif new is JobState.CLEANED:
        job.cleaned_at = now
    job.changed(new, now, held_since)
