"""Why a job waits: the `queue` object of a job that has not started (`GET /jobs/{id}`, `POST /upload`).

Runs in the server's main process (web threads). The decision is pure (`explain`: counts, limits,
executors and `now` in, the object out); `queue_of` / `of_job` read those counts from the database,
each through an index, so a job's view stays cheap with 100,000 jobs queued.

- `position` mirrors the quota's rounds (actors/server/scheduling.py `admit`): users take one job
  per round, so the k-th queued job of its user starts in round k, after its user's k-1 and each
  other waiting user's first k jobs (k-1 for a user served after it in a round). The order within
  a round is the quota's `user_order` (storage/fair_share.py), the user's `rank`: under
  round_robin the user it served longest ago (never: first), then the one whose oldest job is
  older; under fair_share first by `fair_share_score` (decayed usage per portal share, less the
  oldest job's wait), from the same usage the quota reads (storage/usage.py) plus its active jobs'
  run so far. Its turns live in its memory, so `last_turns` stands in for them: a user with no job
  active counts as not served lately, one with jobs active as served when the latest of them was
  admitted. The position is thus an estimate; exact while users keep their order. Under fair_share
  a user whose score is far below the others' may take several turns in a row (the quota admits
  one job per freed slot, to the first in order), so a later rank's position is then optimistic.
  The quota counts a user's wait (the age credit, and the tie-break) from their next job, the first
  in `queue_order`; this view from their oldest queued job, which one index walk gives: the two
  differ only for a user with queued jobs of several priorities.
- `policy`: the service's policy, the user's `rank` (1: served next; 0: the job was admitted) and,
  under fair_share, its `usage` (slot-seconds, decayed) and its portal's `share` (null under
  round_robin, which uses neither). Other users count in the rank but are never named.
- A user's own jobs come in `queue_order` (storage/fair_share.py: higher priority first, then
  older): `position_for_user` counts the ones ahead in that order.
- A Dispatching job was admitted: position 0, about to start; only a missing or draining executor
  can still hold it.
- `waiting_for`, when several hold, is the one that would still hold the job after the others
  clear: `no_executor` and `draining` (only an operator clears them), then `runs_per_user` (a slot
  freed by another user's job does not help; one of its own does), then `runs_per_group` (one of its
  group's jobs must end), then the service's limit,
  `max_runs` or `executors_full`, whichever is the smaller; null when nothing holds it but its turn.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Mapping

from pony.orm import coalesce, count, db_session, min as smallest, select

from conf.settings import ServiceConfig
from storage.columns import iso, stored_time
from storage.fair_share import User, fair_share_score, user_order
from storage.models import Executor, Job, db
from storage.states import ACTIVE, JobState
from storage.usage import admissions, usage_now

#: Run times of this many of the service's latest Completed jobs make its history...
HISTORY = 20
#: ...and with fewer than this many, there is no estimate.
MIN_HISTORY = 5

_ACTIVE = [state.value for state in ACTIVE]


@dataclass(frozen=True)
class QueueFacts:
    """What decides a waiting job's place, read at one moment."""

    service: str
    user_id: int
    #: The job is Dispatching (admitted), not Queued.
    admitted: bool
    #: Its user's queued jobs of the service that start before it (`queue_order`: higher priority, or
    #: the same and older).
    ahead_of_user: int
    #: Per other user with queued jobs in the service: (how many, served before this job's user in a round).
    others: tuple[tuple[int, bool], ...]
    #: Active (dispatching, submitted, running) jobs of its user, and of the service.
    user_active: int
    service_active: int
    runs_per_user: int
    max_runs: int | None
    #: (state, slots) of each executor of the service (storage/executors.py states).
    executors: tuple[tuple[str, int], ...]
    #: Run seconds of the service's latest Completed jobs.
    recent_runs: tuple[float, ...]
    #: Its group (None: none), that group's active jobs in the service, and the service's cap.
    group: str | None = None
    group_active: int = 0
    runs_per_group: int | None = None
    #: The service's policy (round_robin, fair_share); under fair_share, the user's usage now
    #: (slot-seconds) and their portal's share (None under round_robin).
    policy: str = "round_robin"
    usage: float | None = None
    share: int | None = None


def positions(ahead_of_user: int, others: tuple[tuple[int, bool], ...]) -> tuple[int, int]:
    """(position in the service, position among its user's queued jobs), 1 being next, under round-robin."""
    k = ahead_of_user + 1
    ahead = ahead_of_user + sum(min(queued, k if before else k - 1) for queued, before in others)
    return ahead + 1, k


def last_turns(admitted: Mapping[User, datetime]) -> dict[User, int]:
    """The quota's `last_turn` (higher: served more recently) as it stands in for it: each user with
    active jobs by when the latest of them was admitted; users absent count as never served."""
    return {user: turn for turn, user in enumerate(sorted(admitted, key=admitted.__getitem__))}


def ranked(oldest: Mapping[User, int], admitted: Mapping[User, datetime],
           scores: Mapping[User, float] | None = None) -> list[User]:
    """The users with queued jobs (`oldest`: each one's oldest queued job) in the order the quota
    serves them (`user_order`, with `scores` under fair_share)."""
    return [user for user, _ in user_order([(user, (job,)) for user, job in oldest.items()], last_turns(admitted),
                                           scores)]


def capacity(executors: tuple[tuple[str, int], ...]) -> int:
    """The slots of the executors that take jobs now (alive, not draining)."""
    return sum(slots for state, slots in executors if state == "alive")


def holding(facts: QueueFacts, position: int) -> tuple[str | None, str]:
    """(waiting_for, detail): what holds the job back, in the order of the module docstring.

    NOTE: the words give no count of executors, slots or other users' jobs: a portal sees the
    service's limits (GET /services) but not the cluster's shape nor the other portals' load."""
    service = facts.service
    live = [state for state, _ in facts.executors if state in ("alive", "draining")]
    if not live:
        return "no_executor", f"no executor of service {service} is alive; the job starts once one is."
    if "alive" not in live:
        return "draining", (f"every live executor of service {service} is draining: each finishes its jobs and "
                            "takes no new ones.")
    if facts.admitted:
        return None, "admitted: being sent to an executor."
    if facts.user_active >= facts.runs_per_user:
        return "runs_per_user", (f"user {facts.user_id} has {facts.user_active} of {facts.runs_per_user} jobs active "
                                 f"in {service} (runs_per_user); it starts when one of them ends.")
    if facts.group is not None and facts.runs_per_group is not None and facts.group_active >= facts.runs_per_group:
        return "runs_per_group", (f"group {facts.group} has {facts.group_active} of {facts.runs_per_group} jobs active "
                                  f"in {service} (runs_per_group); it starts when one of them ends.")
    slots = capacity(facts.executors)
    if facts.max_runs is not None and facts.max_runs <= slots and facts.service_active >= facts.max_runs:
        return "max_runs", (f"service {service} runs its most jobs at once ({facts.max_runs}, max_runs); it starts "
                            "when one ends.")
    if facts.service_active >= slots:
        return "executors_full", f"every slot of the executors of {service} is taken; it starts when a job ends."
    if position <= 1:
        return None, "next to start."
    order = "least usage per share first" if facts.policy == "fair_share" else "one job each"
    return None, f"{position - 1} jobs ahead of it (users take turns, {order})."


def estimated_start(facts: QueueFacts, position: int, position_for_user: int, waiting_for: str | None,
                    now: datetime) -> datetime | None:
    """When the job should start: `now` plus as many median run times of the service's latest
    Completed jobs as rounds of slots must free up before it (for the service's limit, and for its
    user's runs_per_user, whichever takes more). None with fewer than MIN_HISTORY runs known, or
    while no executor takes jobs. A running job has done part of its run, so this errs late."""
    limit = capacity(facts.executors)
    if facts.max_runs is not None:
        limit = min(limit, facts.max_runs)
    if len(facts.recent_runs) < MIN_HISTORY or waiting_for in ("no_executor", "draining") or limit <= 0:
        return None
    if facts.admitted:
        return now

    def rounds(place: int, active: int, room: int) -> int:
        free = max(0, room - active)
        return 0 if place <= free else math.ceil((place - free) / room)

    waves = max(rounds(position, facts.service_active, limit),
                rounds(position_for_user, facts.user_active, facts.runs_per_user))
    return now + timedelta(seconds=waves * statistics.median(facts.recent_runs))


def explain(facts: QueueFacts, now: datetime) -> dict:
    """The `queue` object of a job that has not started."""
    position, for_user = (0, 0) if facts.admitted else positions(facts.ahead_of_user, facts.others)
    waiting_for, detail = holding(facts, position)
    rank = 0 if facts.admitted else 1 + sum(before for _, before in facts.others)
    return {"position": position, "position_for_user": for_user, "waiting_for": waiting_for, "detail": detail,
            "estimated_start": iso(estimated_start(facts, position, for_user, waiting_for, now)),
            "policy": {"name": facts.policy, "rank": rank, "share": facts.share,
                       "usage": None if facts.usage is None else round(facts.usage, 3)}}


# --- reads --------------------------------------------------------------------------------------

def facts_of(job: Job, settings: ServiceConfig, share_of: Callable[[str | None], int],
             now: datetime) -> QueueFacts:
    """The facts for `job` (Queued or Dispatching), inside the caller's db_session; `share_of(portal)`
    is the portal's fair-share weight ([shares])."""
    service, portal, user_id = job.service, job.portal, job.user_id
    me = (portal, user_id)
    queued = JobState.QUEUED.value
    # NOTE: a user's latest admission among their active jobs stands in for the quota's last turn;
    # their admissions are also their run so far (fair-share usage).
    active, since = admissions(service)
    admitted = {user: max(times) for user, times in since.items()}
    # NOTE: one GROUP BY over the (service, portal, user_id, state) index; min(id) is the user's oldest.
    waiting = {(owner, user): (number, oldest) for owner, user, number, oldest in
               select((j.portal, j.user_id, count(), smallest(j.id)) for j in Job
                      if j.service == service and j.state == queued)}
    usage = share = scores = None
    if settings.policy == "fair_share":
        used = usage_now(service, settings.half_life_seconds, now, since)
        # NOTE: the oldest job's id is the least of its user's, so its stamp is their longest wait.
        firsts = ", ".join(str(int(oldest)) for _, oldest in waiting.values())  # ids: numbers from the database
        created = {job_id: stored_time(at) for job_id, at in
                   db.select(f"SELECT id, created_at FROM {Job._table_} WHERE id IN ({firsts})")} if firsts else {}
        scores = {user: fair_share_score(used.get(user, 0.0), share_of(user[0]),
                                         (now - created[oldest]).total_seconds())
                  for user, (_, oldest) in waiting.items()}
        usage, share = used.get(me, 0.0), share_of(portal)
    order = ranked({user: oldest for user, (_, oldest) in waiting.items()}, admitted, scores)
    place = order.index(me) if me in waiting else len(order)
    others = tuple((waiting[user][0], index < place) for index, user in enumerate(order) if user != me)
    priority = job.priority or 0
    ahead = select(j for j in Job if j.service == service and j.portal == portal and j.user_id == user_id
                   and j.state == queued and (coalesce(j.priority, 0) > priority
                                              or (coalesce(j.priority, 0) == priority and j.id < job.id))).count()
    group_active = 0
    if job.group is not None and settings.runs_per_group is not None:
        group_active = select(j for j in Job if j.service == service and j.state in _ACTIVE and j.portal == portal
                              and j.group == job.group).count()
    executors = tuple(select((e.state, e.slots) for e in Executor if e.service == service).without_distinct())
    runs = select((j.id, j.started_at, j.finished_at) for j in Job if j.service == service
                  and j.state == JobState.COMPLETED.value).order_by(-1)[:HISTORY]  # newest first
    return QueueFacts(service, user_id, job.state == JobState.DISPATCHING.value, ahead, others,
                      active.get(me, 0), sum(active.values()),
                      settings.runs_per_user, settings.max_runs, executors,
                      tuple((end - start).total_seconds() for _, start, end in runs if start and end),
                      job.group, group_active, settings.runs_per_group, settings.policy, usage, share)


def _one_share(portal: str | None) -> int:
    """Every portal's share when the caller gives none (a server without [shares])."""
    return 1


def of_job(job: Job, settings: ServiceConfig | None, now: datetime,
           share_of: Callable[[str | None], int] = _one_share) -> dict:
    """`{"queue": ...}` for a job that has not started (inside the caller's db_session); {} for
    any other, or one of a service no longer configured (it will not start)."""
    if settings is None or job.state not in (JobState.QUEUED.value, JobState.DISPATCHING.value):
        return {}
    return {"queue": explain(facts_of(job, settings, share_of, now), now)}


@db_session
def unless_served(job_id: int, settings: ServiceConfig | None, now: datetime,
                  share_of: Callable[[str | None], int] = _one_share) -> dict:
    """`of_job` for the job numbered `job_id` (a job just uploaded) when no executor of its service
    takes jobs now (none alive, or every one draining); else {}.

    NOTE: an upload's answer says why it cannot start only then: working out its place reads every
    queued job's user, which at a few thousand queued costs more than the rest of the upload (8
    senders: 210 uploads/s without it, 125 with it), and a portal that wants the place asks
    `GET /jobs/{id}`."""
    if settings is None or select(e for e in Executor if e.service == settings.name and e.state == "alive").exists():
        return {}
    return queue_of(job_id, settings, now, share_of)


@db_session
def queue_of(job_id: int, settings: ServiceConfig | None, now: datetime,
             share_of: Callable[[str | None], int] = _one_share) -> dict:
    """`of_job` for the job numbered `job_id`."""
    job = Job.get(id=job_id)
    return of_job(job, settings, now, share_of) if job is not None else {}
