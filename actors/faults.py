"""Fault injection for the reliability tests: make an actor fail on one job's message.

Set ORCHESTRATOR_FAULTS (inherited by every actor process) to comma-separated entries
`role:MessageType:job_id`, e.g. `retriever:ExecutorEvent:7`: that actor then raises InjectedFault
whenever it handles such a message about that job. Unset, this costs one dictionary lookup.
"""
from __future__ import annotations

import os


class InjectedFault(RuntimeError):
    """Raised on purpose by a test's fault plan."""


def _plan(raw: str) -> dict[tuple[str, str], set[int]]:
    plan: dict[tuple[str, str], set[int]] = {}
    for entry in filter(None, (item.strip() for item in raw.split(","))):
        role, kind, job_id = entry.split(":")
        plan.setdefault((role, kind), set()).add(int(job_id))
    return plan


PLAN = _plan(os.environ.get("ORCHESTRATOR_FAULTS", ""))


def maybe_fail(role: str, msg) -> None:
    targets = PLAN.get((role, type(msg).__name__)) if PLAN else None
    if not targets:
        return
    ids = {msg.job_id} if hasattr(msg, "job_id") else set(getattr(msg, "job_ids", ()))
    if ids & targets:
        raise InjectedFault(f"injected fault: {role} fails on {type(msg).__name__} of job {sorted(ids & targets)}")
