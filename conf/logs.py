"""How the orchestrator records what it does: one call per job or executor event.

Runs in every process of a node (main process, actors). `event` writes one INFO line (DEBUG for
decisions that hold a job back) naming the event and its fields, as `queued job=12 user=7
service=example files=2 bytes=2048`; the fields also travel on the record (`record.event`,
`record.fields`), so a JSON formatter can write them as keys. Whatever else wants to know of each
event (the metrics) registers a listener here, so that each event is reported in one place.
"""
from __future__ import annotations

import logging
from typing import Callable

#: The events of a job's life (and of an upload refused).
JOB_EVENTS = ("rejected", "queued", "admitted", "dispatched", "running", "completed", "failed", "cancelled",
              "requeued", "retrieved", "cleaned")
#: The events of an executor as the server sees it.
EXECUTOR_EVENTS = ("registered", "alive", "lost", "draining", "gone")

#: Called with (event name, fields) for every event, whatever the log level.
LISTENERS: list[Callable[[str, dict], None]] = []


def event(log: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log the event `name` with its `fields` (None values are left out of the text line) and tell
    the listeners."""
    for listener in LISTENERS:
        try:
            listener(name, fields)
        except Exception:  # noqa: BLE001 — a listener's bug must not stop the job's way
            log.exception("a listener of %r events failed", name)
    if not log.isEnabledFor(level):
        return
    shown = " ".join(f"{key}={_shown(value)}" for key, value in fields.items() if value is not None)
    log.log(level, "%s %s", name, shown, extra={"event": name, "fields": fields})


def _shown(value) -> str:
    text = str(value)
    return repr(text) if (not text or any(c.isspace() or c in "\"'=" for c in text)) else text
