"""`GET /jobs`: the caller's jobs, newest first, filtered and paged by an opaque cursor.

Runs in the server's main process (web threads); the read is storage/job_list.py. This module owns
the query string: every parameter is checked, and anything it does not accept (an unknown
parameter, a repeated one, a bad value, a cursor it did not make) is a 400 that says what is
accepted, before the database is read. A portal sees its own jobs only; an operator sees every
portal's, and may filter by `portal`. A portal may pass its own name (the same jobs); any other
name gets 400 rather than being ignored: a filter that silently does nothing would look as if it
had worked.
"""
from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone

import falcon

from conf.settings import ServerConfig
from storage import job_list, public_ids
from storage.fair_share import GROUP, GROUP_RULE
from storage.jobs import EVERY_PORTAL
from web.common import DEFAULT_LIMIT, MAX_LIMIT, positive_int

PARAMETERS = ("user_id", "service", "status", "created_after", "created_before", "portal", "group", "limit", "cursor")
#: The cursor's format version: its first byte, so that a later format can tell old cursors apart.
CURSOR_VERSION = b"\x01"
CURSOR_REFUSED = "cursor is not one this server gave: send the next_cursor of the previous page unchanged."
ISO_FORMAT = ("an ISO 8601 date or time, e.g. 2026-11-30, 2026-11-30T06:00:00Z or 2026-11-30T07:00:00+01:00 "
              "(without an offset: UTC)")


def bad(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Invalid job list query", description=description)


def encode_cursor(ref: int | str) -> str:
    """The cursor after the job `ref` (its public id, or its number without tokens)."""
    return base64.urlsafe_b64encode(CURSOR_VERSION + str(ref).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> int | str:
    """The job reference in a cursor `encode_cursor` made; 400 for anything else."""
    try:
        ref = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)[1:].decode("ascii")
    except (binascii.Error, ValueError):
        ref = ""
    found = ref if public_ids.well_formed(ref) else positive_int(ref)
    # NOTE: compared with what this server would write, so that the bits base64 leaves unused in
    # its last character cannot be changed unnoticed either.
    if found is None or encode_cursor(found) != text:
        raise bad(CURSOR_REFUSED)
    return found


def parse_time(name: str, text: str) -> datetime:
    """An ISO 8601 time as the naive UTC the database stores."""
    try:
        value = datetime.fromisoformat(text)
        return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
    except (ValueError, OverflowError):  # OverflowError: an offset moves it out of years 1-9999
        raise bad(f"{name} must be {ISO_FORMAT}; got {text[:40]!r}.") from None


class JobList:
    """`GET /jobs?user_id=&group=&service=&status=&created_after=&created_before=&portal=&limit=&cursor=`
    → `{"jobs": [job, ...], "next_cursor": str|null}`."""

    def __init__(self, config: ServerConfig):
        self.config = config

    def on_get(self, req, resp):
        query = self.parse(req.context.portal, falcon.uri.parse_query_string(req.query_string, keep_blank=True))
        views, last = job_list.page(query)
        resp.media = {"jobs": views, "next_cursor": None if last is None else encode_cursor(last)}

    def parse(self, scope: str | None, params: dict[str, str | list[str]]) -> job_list.Query:
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise bad(f"unknown parameter {unknown[0][:40]!r}; accepted: {', '.join(PARAMETERS)}.")
        for name, value in params.items():
            if isinstance(value, list) and name != "status":
                raise bad(f"{name} may be given once; only status may be repeated.")
        statuses = params.get("status", [])
        states = [part for value in ([statuses] if isinstance(statuses, str) else statuses) for part in value.split(",")]
        for state in states:
            if state not in job_list.STATES:
                raise bad(f"status {state[:40]!r} is not a job state; send one or more of: "
                          f"{', '.join(job_list.STATES)} (repeat status, or separate them with commas).")
        user_id = params.get("user_id")
        if user_id is not None and positive_int(user_id) is None:
            raise bad(f"user_id must be a positive integer; got {user_id[:40]!r}.")
        group = params.get("group")
        if group is not None and not GROUP.fullmatch(group):
            raise bad(f"group must be {GROUP_RULE}, as at upload; got {group[:70]!r}.")
        limit = params.get("limit", str(DEFAULT_LIMIT))
        if positive_int(limit, MAX_LIMIT) is None:
            raise bad(f"limit must be an integer from 1 to {MAX_LIMIT}; got {limit[:40]!r}.")
        after = None
        if "cursor" in params:
            after = job_list.position(decode_cursor(params["cursor"]), scope)
            if after is None:  # a job this caller cannot see, exactly like one that does not exist
                raise bad(CURSOR_REFUSED)
        return job_list.Query(
            scope=scope, user_id=None if user_id is None else int(user_id), group=group,
            service=self.known("service", params.get("service"), [s.name for s in self.config.services], scope),
            states=tuple(dict.fromkeys(states)),
            created_after=parse_time("created_after", params["created_after"]) if "created_after" in params else None,
            created_before=parse_time("created_before", params["created_before"]) if "created_before" in params else None,
            portal=self.portal_filter(scope, params.get("portal")), limit=int(limit), after=after)

    def portal_filter(self, scope: str | None, name: str | None) -> str | None:
        """An operator's `portal` filter; a portal may name itself (the same jobs), no other."""
        if name is None or (scope is not None and name == scope):
            return None
        if scope != EVERY_PORTAL:
            raise bad(f"a portal sees only its own jobs: portal may only be {scope!r}, or left out."
                      if scope else "this server has no portals (no tokens): leave portal out.")
        return self.known("portal", name, [portal for portal, _ in self.config.tokens], scope)

    def known(self, column: str, name: str | None, configured: list[str], scope: str | None) -> str | None:
        """`name` if it is configured or names jobs `scope` sees (one no longer configured); else 400."""
        if name is None or name in configured or (len(name) <= 64 and job_list.has_jobs(column, name, scope)):
            return name
        raise bad(f"{column} {name[:64]!r} has no jobs here; send one of: {', '.join(configured) or '(none)'}.")
