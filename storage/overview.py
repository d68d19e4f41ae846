"""What the server's jobs add up to, per service: the reads behind `GET /services` and the status page.

Runs in the server's main process (web threads). Every read is bounded however many jobs the
database holds: waiting and active jobs through the (service, state) index, their groups through
the (state, group) index (a range that leaves out the jobs without a group), the last hour's
outcomes through the (state, finished_at) index, the latest failures by the same index; a fair_share
service's users by usage from the usage table (one row per recent user) and its few active jobs.
`portal` restricts every count to one portal's jobs (None: every job).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pony.orm import count, db_session, desc, select

from storage.models import Job
from storage.states import ACTIVE, TERMINAL, JobState
from storage.usage import UserKey, admissions, usage_now

#: Where a job that ended is (a Cleaned one keeps its outcome).
_ENDED = [state.value for state in TERMINAL] + [JobState.CLEANED.value]
_ACTIVE = [state.value for state in ACTIVE]
_WAITING = [JobState.QUEUED.value] + _ACTIVE


@dataclass
class ServiceFigures:
    """One service's jobs as the database holds them now."""

    queued: int = 0
    active: int = 0
    #: (portal, user_id, queued jobs) of each user with jobs waiting, most first.
    waiting_users: list[tuple[str | None, int, int]] = field(default_factory=list)
    #: (outcome, created_at, started_at, finished_at) of each job that ended since `since`.
    ended: list[tuple[str, datetime, datetime | None, datetime]] = field(default_factory=list)
    #: (portal, group, queued, active) of each group with jobs waiting or active, most jobs first.
    groups: list[tuple[str | None, str, int, int]] = field(default_factory=list)


@db_session
def figures(since: datetime, portal: str | None = None, restrict: bool = False) -> dict[str, ServiceFigures]:
    """Per service: queued and active counts, the users waiting, and the jobs that ended since
    `since`. `restrict`: count only `portal`'s jobs."""
    by_service: dict[str, ServiceFigures] = {}

    def of(service: str) -> ServiceFigures:
        return by_service.setdefault(service, ServiceFigures())

    waiting = select(j for j in Job if j.state in _WAITING)
    if restrict:
        waiting = waiting.filter(lambda j: j.portal == portal)
    for service, state, number in select((j.service, j.state, count()) for j in waiting):
        if state == JobState.QUEUED.value:
            of(service).queued += number
        else:
            of(service).active += number
    queued = select(j for j in Job if j.state == JobState.QUEUED.value)
    if restrict:
        queued = queued.filter(lambda j: j.portal == portal)
    for service, owner, user_id, number in select((j.service, j.portal, j.user_id, count()) for j in queued):
        of(service).waiting_users.append((owner, user_id, number))
    grouped: dict[str, dict[tuple[str | None, str], list[int]]] = {}
    in_groups = select(j for j in Job if j.state in _WAITING and j.group is not None)
    if restrict:
        in_groups = in_groups.filter(lambda j: j.portal == portal)
    for service, owner, group, state, number in select((j.service, j.portal, j.group, j.state, count())
                                                       for j in in_groups):
        counts = grouped.setdefault(service, {}).setdefault((owner, group), [0, 0])
        counts[state != JobState.QUEUED.value] += number
    for service, groups in grouped.items():
        of(service).groups = sorted(((owner, group, queued, active) for (owner, group), (queued, active)
                                     in groups.items()), key=lambda g: (-g[2] - g[3], str(g[0]), g[1]))
    ended = select(j for j in Job if j.state in _ENDED and j.finished_at >= since)
    if restrict:
        ended = ended.filter(lambda j: j.portal == portal)
    rows = select((j.service, j.outcome, j.created_at, j.started_at, j.finished_at) for j in ended).without_distinct()
    for service, outcome, created, started, finished in rows:
        of(service).ended.append((outcome, created, started, finished))
    for figures_of in by_service.values():
        figures_of.waiting_users.sort(key=lambda user: (-user[2], str(user[0]), user[1]))
    return by_service


@db_session
def recent_failures(limit: int, portal: str | None = None, restrict: bool = False) -> list[dict]:
    """The `limit` latest Failed jobs, newest first: id, service, user, when, exit code, reason and
    the last line of its stderr."""
    failed = select(j for j in Job if j.state == JobState.FAILED.value)
    if restrict:
        failed = failed.filter(lambda j: j.portal == portal)
    return [{"id": j.public_id or j.id, "service": j.service, "user_id": j.user_id, "finished_at": j.finished_at,
             "reason": j.reason, "exit_code": j.exit_code,
             "stderr_last": (j.stderr_tail or "").strip().rsplit("\n", 1)[-1][-300:] or None}
            for j in failed.order_by(lambda j: desc(j.finished_at))[:limit]]


@db_session
def usage_ranking(service: str, half_life: float, now: datetime, portal: str | None = None,
                  restrict: bool = False) -> list[tuple[UserKey, float]]:
    """The users of `service` by their fair-share usage at `now` (slot-seconds, as the quota scores
    it: decayed, with their active jobs' run so far), most first; `restrict`: `portal`'s only."""
    used = usage_now(service, half_life, now, admissions(service)[1])
    return sorted(((user, usage) for user, usage in used.items() if not restrict or user[0] == portal),
                  key=lambda item: (-item[1], str(item[0][0]), item[0][1]))
