"""Fault injection for the reliability tests: make an actor fail on one job's message.

Set ORCHESTRATOR_FAULTS (inherited by every actor process) to comma-separated entries
`role:MessageType:job_id[:once]`, e.g. `retriever:ExecutorEvent:7`: that actor then raises
InjectedFault whenever it handles such a message about that job (with `:once`, only the first
time in each process). Unset, this costs one dictionary lookup.
"""
from __future__ import annotations

import os


class InjectedFault(RuntimeError):
    """Raised on purpose by a test's fault plan."""


def _plan(raw: str) -> dict[tuple[str, str], dict[int, bool]]:
    """(role, message type) → {job_id: only once?}"""
    plan: dict[tuple[str, str], dict[int, bool]] = {}
    for entry in filter(None, (item.strip() for item in raw.split(","))):
        role, kind, job_id, *once = entry.split(":")
        plan.setdefault((role, kind), {})[int(job_id)] = once == ["once"]
    return plan


PLAN = _plan(os.environ.get("ORCHESTRATOR_FAULTS", ""))
_fired: set[tuple[str, str, int]] = set()


def maybe_fail(role: str, msg) -> None:
    targets = PLAN.get((role, type(msg).__name__)) if PLAN else None
    if not targets:
        return
    ids = {msg.job_id} if hasattr(msg, "job_id") else set(getattr(msg, "job_ids", ()))
    for job_id in sorted(ids & set(targets)):
        key = (role, type(msg).__name__, job_id)
        if targets[job_id] and key in _fired:
            continue
        _fired.add(key)
        raise InjectedFault(f"injected fault: {role} fails on {type(msg).__name__} of job {job_id}")
