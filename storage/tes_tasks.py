"""The TES tasks' rows (storage/models.py TesTask): a task's document beside its job, read back
with the job's state for the TES views, and the list of a portal's tasks.

Runs in the server's main process (web threads: web/tes/); `among` also in the retriever's, `sidecar`
also in the janitor's.
"""
from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable

from pony.orm import db_session, select

from storage import job_list, jobs
from storage.columns import stored_time
from storage.models import Job, TesTag, TesTask, db


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
    result_path: str | None
    executor: str | None
    attempts: int
    document: dict


def writer(document: dict, portal: str | None) -> Callable[[int], None]:
    """What jobs.create_job's `also` runs: the task's row and its tags' (the list's filters), in
    the job's own transaction."""
    text = json.dumps(document)

    def write(job_id: int) -> None:
        TesTask(job=job_id, portal=portal, name=document.get("name") or "", document=text)
        for key, value in document.get("tags", {}).items():
            TesTag(job=job_id, key=key, value=value, portal=portal)
    return write


def _stored(job: Job, task: TesTask) -> Stored:
    return Stored(job.public_id or job.id, job.state, job.outcome, job.service, job.created_at, job.started_at,
                  job.finished_at, job.exit_code, job.reason, job.result_path, job.executor, job.attempts,
                  json.loads(task.document))


@db_session
def find(ref: int | str, portal: str | None) -> Stored | None:
    """The task `ref` names, if `portal` may see it and it was sent through TES (else None)."""
    job = jobs.visible(ref, portal)
    task = TesTask.get(job=job.id) if job is not None else None
    return None if task is None else _stored(job, task)


#: Each TES state as the (outcome, state) pairs of the jobs in it (a cleaned job keeps its outcome;
#: a job cleaned before outcomes were stored has none and shows SYSTEM_ERROR), as web/tes/views.py
#: `tes_state` maps them. States no job is ever in (PAUSED, ...) have none.
JOB_STATES: dict[str, tuple[tuple[str | None, str], ...]] = {
    "QUEUED": ((None, "Queued"),),
    "INITIALIZING": ((None, "Dispatching"), (None, "Submitted")),
    "RUNNING": ((None, "Running"),),
    "COMPLETE": (("Completed", "Completed"), ("Completed", "Cleaned")),
    "CANCELED": (("Cancelled", "Cancelled"), ("Cancelled", "Cleaned")),
    "EXECUTOR_ERROR": (("Failed", "Failed"), ("Failed", "Cleaned")),
    "SYSTEM_ERROR": (("Failed", "Failed"), ("Failed", "Cleaned"), (None, "Cleaned")),
}
#: Failed because run.sh exited non-zero (storage.jobs.command_failed), in SQL (web/tes/views.py
#: `tes_state`): what splits a Failed walk into EXECUTOR_ERROR and SYSTEM_ERROR; checked per Failed
#: task, not indexed.
COMMAND_FAILED = ("(COALESCE(j.exit_code, 0) <> 0 "
                  f"AND COALESCE(j.reason, '') = '{jobs.COMMAND_FAILED_REASON}' || CAST(j.exit_code AS TEXT))")


@dataclass(frozen=True)
class Filters:
    """What `GET /tasks` asks for: a name prefix (""), a TES state (None: any), tags as (key, value)
    pairs, all of which a task must have ("" value: any value)."""

    name_prefix: str = ""
    state: str | None = None
    tags: tuple[tuple[str, str], ...] = ()


@db_session
def page(portal: str | None, filters: Filters, after: int | str | None, limit: int,
         documents: bool = True) -> tuple[list[Stored], bool]:
    """Up to `limit` of `portal`'s tasks (EVERY_PORTAL: all) that match `filters`, newest first,
    after the task `after`; and whether more follow. Without `documents` (the MINIMAL view) their
    documents are left empty: parsing them is most of a page's time.

    Each filter is an index walk that reads its rows in page order and stops after `limit + 1`:
    a state is one walk per (outcome, state) pair of JOB_STATES (storage/models.py Job's
    (portal, outcome, state, id)); without one, the first tag's index (TesTag), else the name's
    or the portal's (TesTask). The other filters are checked on the rows walked (a primary-key
    lookup each), and an operator's list is one walk per portal; the walks are merged lazily.
    """
    start_id = None
    if after is not None:
        start = jobs.visible(after, portal)
        if start is None:
            return [], False
        start_id = start.id
    pairs = JOB_STATES.get(filters.state, ()) if filters.state else (None,)
    walks = [iter(job_list.execute(*walk_sql(scope, pair, filters, start_id, limit)))
             for scope in _portals(portal) for pair in pairs]
    found = [row[0] for row in itertools.islice(heapq.merge(*walks, reverse=True), limit + 1)]
    return _read(found[:limit], documents), len(found) > limit


def walk_sql(portal: str | None, pair: tuple[str | None, str] | None, filters: Filters, start_id: int | None,
             limit: int) -> tuple[str, list]:
    """The SQL (`?` placeholders) and parameters of one walk: the job numbers of `portal`'s tasks
    in (outcome, state) `pair` (None: any state) that match `filters`, newest first (tests read its
    query plan)."""
    quote = db.provider.quote_name
    task_table, tag_table, job_table = (quote(entity._table_) for entity in (TesTask, TesTag, Job))
    where: list[str] = []
    params: list[object] = []

    def equal(column: str, value: object) -> None:
        where.append(f"{column} IS NULL" if value is None else f"{column} = ?")
        params.extend([] if value is None else [value])

    tags = list(filters.tags)
    if pair is not None:
        key, tables = "j.id", [f"{job_table} j"]
        equal("j.portal", portal)
        equal("j.outcome", pair[0])
        equal("j.state", pair[1])
        if pair[0] == "Failed":
            where.append(COMMAND_FAILED if filters.state == "EXECUTOR_ERROR" else f"NOT {COMMAND_FAILED}")
        where.append(f"EXISTS (SELECT 1 FROM {task_table} t WHERE {_name_sql('t.job = j.id', filters, params)})")
    elif tags:
        first_key, first_value = tags.pop(0)
        key, tables = "g.job", [f"{tag_table} g"]
        equal("g.portal", portal)
        equal("g.key", first_key)
        if first_value:
            equal("g.value", first_value)
        if filters.name_prefix:
            where.append(f"EXISTS (SELECT 1 FROM {task_table} t WHERE {_name_sql('t.job = g.job', filters, params)})")
    else:
        key, tables = "t.job", [f"{task_table} t"]
        equal("t.portal", portal)
        where.append(_name_sql(where.pop(), filters, params))
    for tag_key, tag_value in tags:
        where.append(f"EXISTS (SELECT 1 FROM {tag_table} o WHERE o.job = {key} AND o.key = ?"
                     + (" AND o.value = ?)" if tag_value else ")"))
        params.extend([tag_key, tag_value] if tag_value else [tag_key])
    if start_id is not None:
        where.append(f"{key} < ?")
        params.append(start_id)
    sql = f"SELECT {key} FROM {', '.join(tables)} WHERE {' AND '.join(where)} ORDER BY {key} DESC LIMIT ?"
    return sql, params + [limit + 1]


def _name_sql(condition: str, filters: Filters, params: list) -> str:
    """`condition` and the name filter on `t`, its parameters added to `params`. The
    prefix test is exact everywhere; on SQLite the name's range (BINARY collation: bytewise, and
    UTF-8 keeps code point order) lets the index find it. A PostgreSQL collation need not sort a
    prefix's names together, so there the range would be wrong."""
    prefix = filters.name_prefix
    if not prefix:
        return condition
    sql = condition + " AND substr(t.name, 1, ?) = ?"
    params.extend([len(prefix), prefix])
    if db.provider.dialect == "SQLite":
        sql += " AND t.name >= ?"
        params.append(prefix)
        following = _following(prefix)
        if following is not None:
            sql += " AND t.name < ?"
            params.append(following)
    return sql


def _following(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (None: there is none)."""
    prefix = prefix.rstrip(chr(0x10FFFF))
    if not prefix:
        return None
    last = ord(prefix[-1]) + 1
    return prefix[:-1] + chr(0xE000 if 0xD800 <= last <= 0xDFFF else last)  # surrogates are no characters


def _portals(portal: str | None) -> list[str | None]:
    """The portals whose tasks `portal` sees: its own; an operator's (EVERY_PORTAL) every portal
    with tasks, found by a skip scan of TesTask's (portal, job) index, one seek each."""
    if portal != jobs.EVERY_PORTAL:
        return [portal]
    table, found = db.provider.quote_name(TesTask._table_), []
    value = job_list.execute(f"SELECT MIN(portal) FROM {table}", []).fetchone()[0]
    while value is not None:
        found.append(value)
        value = job_list.execute(f"SELECT MIN(portal) FROM {table} WHERE portal > ?", [value]).fetchone()[0]
    return found + [None]


def _read(job_ids: list[int], documents: bool) -> list[Stored]:
    """The page's tasks, in the order of `job_ids`, from their rows as the database returns them (no
    entities: Pony's parsing of a row costs about 0.3 ms)."""
    if not job_ids:
        return []
    quote = db.provider.quote_name
    columns = ", ".join(f"j.{quote(name)}" for name in READ_COLUMNS)
    document = "t.document" if documents else "'{}'"
    rows = job_list.execute(f"SELECT {columns}, {document} FROM {quote(Job._table_)} j JOIN {quote(TesTask._table_)} t "
                            f"ON t.job = j.id WHERE j.id IN ({', '.join('?' * len(job_ids))})", job_ids)
    by_id = {}
    for row in rows:
        values = dict(zip(READ_COLUMNS, row))
        for name in ("created_at", "started_at", "finished_at"):
            if values[name] is not None:
                values[name] = stored_time(values[name])
        job_id = values.pop("id")
        by_id[job_id] = Stored(values.pop("public_id") or job_id, document=json.loads(row[-1]), **values)
    return [by_id[job_id] for job_id in job_ids]


#: The job's columns a Stored holds, as `_read` selects them.
READ_COLUMNS = ("id", "public_id", "state", "outcome", "service", "created_at", "started_at", "finished_at",
                "exit_code", "reason", "result_path", "executor", "attempts")


def sidecar(result_path: str) -> str:
    """Where what a TES task's views read from its result zip is kept (web/tes/results.py): beside
    the zip, removed with it (actors/server/janitor.py)."""
    return f"{result_path}.tes.json"


@db_session
def among(job_ids: Iterable[int]) -> set[int]:
    """Those of the jobs that are TES tasks (the retriever fetches their results also when they
    failed: their logs are read from the zip)."""
    ids = list(job_ids)
    return set(select(t.job for t in TesTask if t.job in ids)) if ids else set()
