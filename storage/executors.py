"""The server's registry of executor nodes: written by each service's dispatcher, read by the web."""
from __future__ import annotations

from datetime import datetime

from pony.orm import db_session, select

from storage.models import Executor, Job
from storage.states import ACTIVE


@db_session
def registered(service: str) -> list[str]:
    """URLs of executors that registered themselves for `service`."""
    return list(select(e.url for e in Executor if e.service == service and e.registered))


@db_session
def urls() -> list[str]:
    """URLs of every executor the server knows (configured or registered)."""
    return list(select(e.url for e in Executor))


@db_session
def record(url: str, service: str, slots: int, state: str, now: datetime | None, *,
           registered: bool | None = None) -> None:
    """Create or update an executor's row; `now` is when it was last heard from (None: unchanged)."""
    executor = Executor.get(url=url)
    if executor is None:
        executor = Executor(url=url, service=service, registered=bool(registered))
    executor.service, executor.slots, executor.state = service, slots, state
    if registered:
        executor.registered = True
    if now is not None:
        executor.last_seen = now


@db_session
def listing() -> list[dict]:
    """Every executor with its state, slots and the number of jobs it holds now."""
    states = [s.value for s in ACTIVE]
    running: dict[str, int] = {}
    for url in select(j.executor for j in Job if j.state in states and j.executor is not None).without_distinct():
        running[url] = running.get(url, 0) + 1
    return [e.to_dict(running.get(e.url, 0)) for e in Executor.select().order_by(Executor.service, Executor.url)]
