"""The read behind `GET /jobs`: a page of jobs, newest first, with filters, by keyset.

Runs in the server's main process (web threads). A page costs the same with 1,000,000 jobs as with
ten, whatever the filters: each query walks an index whose leading columns are all equalities
(portal, [user_id or group,] service, state) and whose next one is `created_at`, so it reads its rows
already in page order and stops at `limit`. A filter that leaves a column open (no state asked,
several states, an operator's every portal, no service) becomes one such walk per value of that
column, and the walks are merged lazily (`heapq.merge`): a page reads at most `limit + 1` rows of
each walk, and only as many as it shows in all. The values of a column come from the database by
a skip scan (one index seek each), so portals and services no longer configured are listed too.

Order: `created_at` descending, then `id` descending; the position of a page's end is that of its
last job, named in the cursor by the id portals see (its public id, or its number without tokens),
so a cursor leaks no job count and stays correct while new jobs arrive (they sort before it).
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass
from datetime import datetime
from typing import Iterator

from pony.orm import db_session
from pony.utils import datetime2timestamp

from storage.columns import stored_time
from storage.jobs import EVERY_PORTAL, visible
from storage.models import TIMES, VIEW_COLUMNS, Job, db, view
from storage.states import JobState

STATES = tuple(state.value for state in JobState)
#: A walk's position: (created_at as the database returns it, id).
Position = tuple[object, int]


@dataclass(frozen=True)
class Query:
    """What a caller asks for; `scope` is the caller's portal as web.auth sets it (None without
    tokens: the jobs without a portal; EVERY_PORTAL: an operator), `portal` an operator's filter."""

    scope: str | None
    user_id: int | None = None
    #: A job's `group` label, exactly.
    group: str | None = None
    service: str | None = None
    states: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    portal: str | None = None
    limit: int = 100
    #: The position of the previous page's last job (`position`), or None for the first page.
    after: Position | None = None


@db_session
def page(query: Query) -> tuple[list[dict], str | int | None]:
    """Up to `query.limit` jobs in order, and the public reference of the last one when more follow
    (None: this is the last page)."""
    services = [query.service] if query.service else _distinct("service")
    walks = [_walk(portal, service, state, query) for portal in _portals(query) for service in services
             for state in (query.states or STATES)]
    found = list(itertools.islice(heapq.merge(*walks, reverse=True), query.limit + 1))
    views = views_of([job_id for _, job_id in found[:query.limit]])
    return views, (views[-1]["id"] if len(found) > query.limit else None)


def views_of(job_ids: list[int]) -> list[dict]:
    """The views of `job_ids`, in that order, from their rows as the database returns them (inside
    the caller's db_session): the list's page, and the change feed's jobs (storage/changes.py)."""
    if not job_ids:
        return []
    columns = ", ".join(_column(getattr(Job, name).column) for name in VIEW_COLUMNS)  # `group` is job_group
    rows = execute(f"SELECT {columns} FROM {_table()} WHERE {_column('id')} IN ({', '.join('?' * len(job_ids))})",
                   job_ids)
    by_id = {}
    for row in rows:
        values = dict(zip(VIEW_COLUMNS, row))
        for name in TIMES:  # as Pony gives them: SQLite returns the text Pony wrote
            if values[name] is not None:
                values[name] = stored_time(values[name])
        by_id[row[0]] = values
    return [view(by_id[job_id].__getitem__) for job_id in job_ids]


@db_session
def position(ref: int | str, scope: str | None) -> Position | None:
    """Where the job `ref` names sorts, if `scope` may see it (else None, as for no such job)."""
    job = visible(ref, scope)
    if job is None:
        return None
    cursor = execute(f"SELECT {_column('created_at')} FROM {_table()} WHERE {_column('id')} = ?", [job.id])
    return cursor.fetchone()[0], job.id


@db_session
def has_jobs(column: str, value: str, scope: str | None) -> bool:
    """Whether any job `scope` sees (a portal's own; EVERY_PORTAL: all) has `value` in `column`
    ("service" or "portal"): a name no longer configured still names jobs to list. Scoped, so that a
    portal learns nothing of other portals' jobs from which names it may send."""
    where, values = f"{_column(column)} = ?", [value]
    if scope != EVERY_PORTAL:
        where += f" AND {_column('portal')} IS ?"
        values.append(scope)
    return execute(f"SELECT 1 FROM {_table()} WHERE {where} LIMIT 1", values).fetchone() is not None


def _portals(query: Query) -> list[str | None]:
    if query.scope != EVERY_PORTAL:
        return [query.scope]
    if query.portal is not None:
        return [query.portal]
    return _distinct("portal") + [None]


def _distinct(column: str) -> list[str]:
    """The values of `column` (not NULL), by a skip scan: one index seek per value."""
    values, sql = [], f"SELECT MIN({_column(column)}) FROM {_table()} WHERE {_column(column)} > ?"
    value = execute(f"SELECT MIN({_column(column)}) FROM {_table()}", []).fetchone()[0]
    while value is not None:
        values.append(value)
        value = execute(sql, [value]).fetchone()[0]
    return values


def _walk(portal: str | None, service: str, state: str, query: Query) -> Iterator[Position]:
    """The jobs of one (portal, service, state) that match `query`, in page order, newest first."""
    return iter(execute(*walk_sql(portal, service, state, query)))


def walk_sql(portal: str | None, service: str, state: str, query: Query) -> tuple[str, list]:
    """The SQL (with `?` placeholders) and parameters of one walk (tests read its query plan)."""
    created, job_id = _column("created_at"), _column("id")
    where = [f"{_column('portal')} IS NULL" if portal is None else f"{_column('portal')} = ?",
             f"{_column('service')} = ?", f"{_column('state')} = ?"]
    params: list[object] = [portal] if portal is not None else []
    params += [service, state]
    if query.user_id is not None:
        where.append(f"{_column('user_id')} = ?")
        params.append(query.user_id)
    if query.group is not None:
        where.append(f"{_column('job_group')} = ?")
        params.append(query.group)
    if query.created_after is not None:
        where.append(f"{created} > ?")
        params.append(_stamp(query.created_after))
    if query.created_before is not None:
        where.append(f"{created} < ?")
        params.append(_stamp(query.created_before))
    if query.after is not None:
        # NOTE: the range on created_at is what the index walks; the id breaks ties of equal stamps.
        where.append(f"{created} <= ? AND ({created} < ? OR {job_id} < ?)")
        params += [query.after[0], query.after[0], query.after[1]]
    sql = (f"SELECT {created}, {job_id} FROM {_table()} WHERE {' AND '.join(where)} "
           f"ORDER BY {created} DESC, {job_id} DESC LIMIT ?")
    return sql, params + [query.limit + 1]


def execute(sql: str, params: list):
    """Run `sql` (with `?` placeholders) on this session's connection; returns the DB-API cursor,
    which SQLite steps lazily as it is read."""
    if db.provider.paramstyle != "qmark":
        sql = sql.replace("?", "%s")
    cursor = db.get_connection().cursor()
    cursor.execute(sql, params)
    return cursor


def _stamp(value: datetime) -> object:
    """A time as the database compares it with created_at: SQLite keeps Pony's text form."""
    return datetime2timestamp(value) if db.provider.dialect == "SQLite" else value


def _table() -> str:
    return db.provider.quote_name(Job._table_)


def _column(name: str) -> str:
    return db.provider.quote_name(name)

