"""The TES tasks' rows (storage/models.py TesTask): a task's document beside its job, read back
with the job's state for the TES views, and the list of a portal's tasks.

Runs in the server's main process (web threads: web/tes/); `among` also in the retriever's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Iterator

from pony.orm import db_session, desc, select

from storage import jobs
from storage.models import Job, TesTask


@dataclass(frozen=True)
class Stored:
    """What the TES views need of one task: its job's columns and the task document."""

    ref: int | str  # the job's public id, or its number without tokens
    state: str
    outcome: str | None
    service: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    reason: str | None
    stderr_tail: str | None
    result_path: str | None
    executor: str | None
    attempts: int
    document: dict


def writer(document: dict, portal: str | None) -> Callable[[int], None]:
    """What jobs.create_job's `also` runs: the task's row, in the job's own transaction."""
    text = json.dumps(document)
    return lambda job_id: TesTask(job=job_id, portal=portal, name=document.get("name") or "", document=text)


def _stored(job: Job, task: TesTask) -> Stored:
    return Stored(job.public_id or job.id, job.state, job.outcome, job.service, job.created_at, job.started_at, job.finished_at, job.exit_code,
                  job.reason, job.stderr_tail, job.result_path, job.executor, job.attempts, json.loads(task.document))


@db_session
def find(ref: int | str, portal: str | None) -> Stored | None:
    """The task `ref` names, if `portal` may see it and it was sent through TES (else None)."""
    job = jobs.visible(ref, portal)
    task = TesTask.get(job=job.id) if job is not None else None
    return None if task is None else _stored(job, task)


@db_session
def page(portal: str | None, name_prefix: str, after: int | str | None, keep: Callable[[Stored], bool],
         limit: int) -> tuple[list[Stored], bool]:
    """Up to `limit` of `portal`'s tasks (EVERY_PORTAL: all), newest first, after the task `after`,
    whose name starts with `name_prefix` and that `keep` accepts; and whether more follow.

    NOTE: the state and tag filters are applied while walking the portal's tasks, so a filter that
    matches few tasks reads many rows; a first slice (TES-STATUS.md).
    """
    query = select(t for t in TesTask)
    if portal != jobs.EVERY_PORTAL:
        query = query.filter(lambda t: t.portal == portal)
    if name_prefix:
        query = query.filter(lambda t: t.name.startswith(name_prefix))
    if after is not None:
        start = jobs.visible(after, portal)
        if start is None:
            return [], False
        start_id = start.id
        query = query.filter(lambda t: t.job < start_id)
    found = []
    for task in _walk(query.order_by(lambda t: desc(t.job))):
        stored = _stored(Job[task.job], task)
        if keep(stored):
            if len(found) == limit:
                return found, True
            found.append(stored)
    return found, False


def _walk(query, batch: int = 500) -> Iterator[TesTask]:
    offset = 0
    while True:
        rows = query.page(offset // batch + 1, batch)
        yield from rows
        if len(rows) < batch:
            return
        offset += batch


@db_session
def among(job_ids: Iterable[int]) -> set[int]:
    """Those of the jobs that are TES tasks (the retriever fetches their results also when they
    failed: their logs are read from the zip)."""
    ids = list(job_ids)
    return set(select(t.job for t in TesTask if t.job in ids)) if ids else set()
