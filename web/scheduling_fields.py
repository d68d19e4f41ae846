"""The upload's scheduling fields (web threads of the server, and of an executor for max_runtime):
`priority`, `group` and `max_runtime`, parsed and checked; a bad value is a 400 that says what is
accepted (web/server_app.py Upload.check, web/executor_app.py).

All are optional: `priority` (an integer in storage.fair_share.PRIORITIES, default 0) orders only its
own user's queued jobs; `group` (a label the portal chooses: a course, a project) is what
`runs_per_group` caps; `max_runtime` (seconds, at most the service's) stops the job at that limit.
"""
from __future__ import annotations

import re

from conf.settings import MAX_PERIOD_SECONDS
from storage.fair_share import GROUP, GROUP_RULE, PRIORITIES
from web.common import positive_int
from web.uploads import bad_request

#: The multipart fields this module reads.
FIELDS = frozenset({"priority", "group", "max_runtime"})


def priority(fields: dict[str, str]) -> int:
    raw = fields.get("priority")
    if raw is None:
        return 0
    text = raw.strip()
    accepted = f"an integer from {PRIORITIES.start} to {PRIORITIES.stop - 1}"
    # NOTE: a bare integer only ("+1", "1.0", "1_0" and non-ASCII digits are refused, as int() would take some).
    if not re.fullmatch(r"-?[0-9]{1,3}", text) or int(text) not in PRIORITIES:
        raise bad_request(f"priority must be {accepted} (higher starts first among the user's own jobs), "
                          f"got {raw[:40]!r}.")
    return int(text)


def group(fields: dict[str, str]) -> str | None:
    raw = fields.get("group")
    if raw is None:
        return None
    if not GROUP.fullmatch(raw):
        raise bad_request(f"group must be {GROUP_RULE}, got {raw[:70]!r}.")
    return raw


def max_runtime(fields: dict[str, str], ceiling: int | None) -> int | None:
    """The job's time limit in seconds: its `max_runtime` field (at most `ceiling`, the service's),
    else `ceiling`; None when neither sets one. An empty field counts as absent."""
    raw = (fields.get("max_runtime") or "").strip()
    if not raw:
        return ceiling
    limit = ceiling or int(MAX_PERIOD_SECONDS)
    value = positive_int(raw, limit)
    if value is None:
        where = "the service's max_runtime" if ceiling else "ten years"
        raise bad_request(f"max_runtime must be a whole number of seconds from 1 to {limit} ({where}), "
                          f"got {raw[:40]!r}.")
    return value
