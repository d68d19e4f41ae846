"""The server's registry of executor nodes: reset by run_server.py at start, written by each
service's dispatcher, read by the web (GET /executors) and the metrics.

A row keeps what the server last knew; at a server's start nothing is known *now*, so every
executor is `unknown` until its dispatcher hears from it again (within a second for one that
answers; its last error stays), except one that is `gone` (its last word was that it left).
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import NamedTuple

from pony.orm import db_session, select

from storage.models import Executor, Job
from storage.states import ACTIVE

class ExecutorRow(NamedTuple):
    url: str
    service: str
    state: str
    slots: int
    #: Jobs it holds now (dispatching, submitted or running there).
    busy: int
    last_seen: datetime | None
    last_error: str | None
    registered: bool
    #: Its overflow tier; None until it told.
    tier: int | None


@db_session
def registered(service: str) -> list[str]:
    """URLs of executors that registered themselves for `service`."""
    return list(select(e.url for e in Executor if e.service == service and e.registered))


@db_session
def urls() -> list[str]:
    """URLs of every executor the server knows (configured or registered)."""
    return list(select(e.url for e in Executor))


@db_session
def gone() -> set[str]:
    """URLs of executors whose last word was that they leave."""
    return set(select(e.url for e in Executor if e.state == "gone"))


@db_session
def server_started(configured: dict[str, str]) -> None:
    """At the server's start (before its actors): nothing heard before is known now, and every
    configured executor (`configured`: URL → service) is listed at once, as `unknown`."""
    for executor in select(e for e in Executor if e.state != "gone"):
        executor.state = "unknown"
    for url, service in configured.items():
        if Executor.get(url=url) is None:
            Executor(url=url, service=service, state="unknown")


@db_session
def record(url: str, service: str, slots: int, state: str, now: datetime | None, *,
           registered: bool | None = None, error: str | None = None, tier: int | None = None) -> bool:
    """Create or update an executor's row; `now` is when it was last heard from (None: unchanged),
    `error` why it could not be reached, `tier` its overflow tier (each None: unchanged). True if
    this call registered it (it was not registered before)."""
    executor = Executor.get(url=url)
    if executor is None:
        executor = Executor(url=url, service=service, registered=False)
    newly = bool(registered) and not executor.registered
    executor.service, executor.slots, executor.state = service, slots, state
    if registered:
        executor.registered = True
    if now is not None:
        executor.last_seen = now
    if error is not None:
        executor.last_error = error[:1024]
    if tier is not None:
        executor.tier = tier
    return newly


@db_session
def rows() -> list[ExecutorRow]:
    """Every executor, by service then URL, with its state, slots and the jobs it holds now."""
    states = [s.value for s in ACTIVE]
    busy: dict[str, int] = {}
    for url in select(j.executor for j in Job if j.state in states and j.executor is not None).without_distinct():
        busy[url] = busy.get(url, 0) + 1
    return [ExecutorRow(e.url, e.service, e.state, e.slots, busy.get(e.url, 0), e.last_seen, e.last_error,
                        e.registered, e.tier)
            for e in Executor.select().order_by(Executor.service, Executor.url)]


def listing() -> list[dict]:
    """GET /executors: every executor as JSON (`running`: the jobs it holds now)."""
    return [{"url": row.url, "service": row.service, "state": row.state, "slots": row.slots, "running": row.busy,
             "tier": row.tier, "registered": row.registered, "last_seen": row.last_seen.isoformat() + "Z" if row.last_seen else None,
             "last_error": row.last_error}
            for row in rows()]


@db_session
def set_backend(url: str, backend: str) -> None:
    """Note how the executor at `url` runs jobs (its /health's `backend`)."""
    executor = Executor.get(url=url)
    if executor is not None and executor.backend != backend:
        executor.backend = backend[:16]


#: url → (backend, when read): `backend_of` reads the registry at most every BACKEND_TTL seconds.
_backends: dict[str, tuple[str | None, float]] = {}
BACKEND_TTL = 60.0


def backend_of(url: str | None) -> str | None:
    """How the executor at `url` runs jobs, as last probed (None if unknown); cached per process,
    since every ended job asks (its run time is counted per backend)."""
    if url is None:
        return None
    cached = _backends.get(url)
    now = time.monotonic()
    if cached is None or now - cached[1] > BACKEND_TTL or cached[0] is None:
        try:
            with db_session:
                executor = Executor.get(url=url)
                cached = (executor.backend if executor is not None else None, now)
        except Exception:  # noqa: BLE001 — a label is not worth failing the ending of a job (a locked database)
            return cached[0] if cached is not None else None
        _backends[url] = cached
    return cached[0]
