"""The project's one clock, read by every actor through this module (`clock.utcnow()`), so a test
can set the time of a whole in-process actor system in one place.

`utcnow`: naive UTC datetimes, as stored in the databases (stamps, retention cut-offs).
`epoch`: such a datetime as seconds since the epoch (fair share's arithmetic). NOTE: not
`datetime.timestamp()`, which takes a naive datetime for local time: an hour off across a
daylight-saving change on a host that is not on UTC.
`monotonic`: seconds that never jump back (timers, time-outs, "not heard from since").
"""
from __future__ import annotations

import time
from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def epoch(moment: datetime) -> float:
    """Seconds since the epoch of a naive UTC datetime."""
    return moment.replace(tzinfo=timezone.utc).timestamp()


def monotonic() -> float:
    return time.monotonic()
