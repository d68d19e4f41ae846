"""The events of a job's life that several places emit: how it ended, and its return to the queue.

Runs in whichever server process changes the job (the web layer in the main process, the actors in
theirs), right after the change is stored, with the job as storage returned it (`jobs.JobRef`).
"""
from __future__ import annotations

import logging
from datetime import datetime

from conf.logs import event
from storage import executors
from storage.jobs import JobRef


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start is not None and end is not None else None


def ended(log: logging.Logger, *ended_jobs: JobRef) -> None:
    """`completed`, `failed` or `cancelled` for each job (as it is once ended), with its times."""
    for job in ended_jobs:
        event(log, job.state.value.lower(), job=job.id, user=job.user_id, service=job.service,
              executor=job.executor, backend=executors.backend_of(job.executor) if job.started_at else None,
              attempt=job.attempts or None, exit_code=job.exit_code, reason=job.reason,
              wait_seconds=_seconds(job.created_at, job.started_at),
              run_seconds=_seconds(job.started_at, job.finished_at),
              turnaround_seconds=_seconds(job.created_at, job.finished_at))


def requeued(log: logging.Logger, job: JobRef, reason: str) -> None:
    """The executor `job.executor` lost attempt `job.attempts`: the job waits in the queue again."""
    event(log, "requeued", job=job.id, service=job.service, executor=job.executor, attempt=job.attempts,
          reason=reason)
