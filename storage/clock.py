"""The project's one clock, read by every actor through this module (`clock.utcnow()`), so a test
can set the time of a whole in-process actor system in one place.

`utcnow`: naive UTC datetimes, as stored in the databases (stamps, retention cut-offs).
`monotonic`: seconds that never jump back (timers, time-outs, "not heard from since").
"""
from __future__ import annotations

import time
from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def monotonic() -> float:
    return time.monotonic()
