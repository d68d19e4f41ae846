"""QuotaActor: who may start a job now. Owns the active jobs per (service, user), per (service,
group) and per service, and, for the services whose policy is fair_share, each user's usage.

A user is a (portal, user_id) pair (`UserKey`): portals number their users independently, so their
runs_per_user limits and round-robin turns are apart; a group is a (portal, group) pair likewise.
Under fair_share, users are served by `fair_share_score` (their decayed usage, what their active
jobs ran so far, their portal's share, how long their next job waited); under round_robin, by
turns alone. Usage comes from storage/usage.py: folded here at every resync (what ended while no
quota ran is then counted: usage survives restarts); a job's end counts in memory at once meanwhile.

Accepts: AdmissionRequest (from the queue), JobEnded (slots are free), Capacity (a dispatcher's
reachable slots). Sends: Admitted to the queue (the answer to every request, also when nothing was
admitted), Dispatch to the service's dispatcher, SlotsFreed to the queue.

It is the only writer of Queued → Dispatching, and it writes before it hands the jobs on. Its
active sets are rebuilt from the database at start and after every resync, and a JobEnded is
idempotent, so a lost or repeated message cannot skew the counts.
"""
from __future__ import annotations

import logging
from collections import defaultdict

from thespian.actors import WakeupMessage

from actors.messages import AdmissionRequest, Admitted, Capacity, Configure, Dispatch, JobEnded, SlotsFreed, UserKey
from actors.server.base import ServerActor
from actors.server.scheduling import admit
from conf.logs import event
from conf.settings import ServiceConfig
from storage import clock, jobs, usage
from storage.fair_share import user_score

RESYNC_SECONDS = 10.0


#: A group of users: (portal, group), since portals name their groups independently.
GroupKey = tuple[str | None, str]


class QuotaActor(ServerActor):
    role = "quota"

    def configured(self, msg: Configure) -> None:
        self.capacity: dict[str, int] = {}
        self.last_turn: dict[str, dict[UserKey, int]] = defaultdict(dict)
        self.turn = 0
        #: fair_share services: each user's usage (slot-seconds of ended runs) as of `usage_at`.
        self.usage: dict[str, dict[UserKey, float]] = {}
        self.usage_at: float = 0.0
        self.resync()
        self.wakeupAfter(RESYNC_SECONDS)

    def resync(self) -> None:
        # NOTE: folds what ended while no quota ran (a stop, a previous server), so usage survives
        # restarts; before the read of the active jobs, so a job that ends between the two is
        # counted as ended, never both as running and as charged.
        self.fold_usage()
        rows = jobs.active_jobs()  # read first: a failed read leaves the current sets in place
        self.active: dict[str, dict[UserKey, set[int]]] = defaultdict(lambda: defaultdict(set))
        self.in_group: dict[str, dict[GroupKey, set[int]]] = defaultdict(lambda: defaultdict(set))
        #: job id → (service, user, group or None, admitted at: epoch seconds)
        self.owner: dict[int, tuple[str, UserKey, GroupKey | None, float]] = {}
        now = clock.epoch(clock.utcnow())
        for row in rows:
            self._hold(row.service, row.user, row.id, row.group,
                       clock.epoch(row.dispatched_at) if row.dispatched_at else now)
        if self.peers:
            # NOTE: a JobEnded that raced this reload finds no holder; ask for admission anyway.
            for service in self.config.services:
                self.send(self.peers.queue, SlotsFreed(service.name))

    def rebuild(self) -> None:
        self.resync()

    def peers_changed(self) -> None:
        for service in self.config.services:
            self.send(self.peers.queue, SlotsFreed(service.name))

    def _hold(self, service: str, user: UserKey, job_id: int, group: str | None, since: float) -> None:
        key = (user[0], group) if group is not None else None
        self.active[service][user].add(job_id)
        if key is not None:
            self.in_group[service][key].add(job_id)
        self.owner[job_id] = (service, user, key, since)

    def limit(self, service: str) -> int:
        settings = self.config.service(service)
        capacity = self.capacity.get(service, 0)
        return min(settings.max_runs, capacity) if settings.max_runs else capacity

    def fold_usage(self) -> None:
        """Fold the charges of ended runs into the users' usage, then reload the usage of the
        fair_share services (round_robin ones never read it: their charges are folded all the same,
        so the table stays small whatever the policy). A failure (the database busy) is logged and
        leaves the usage as it was: it delays usage, never an admission."""
        now = clock.utcnow()
        try:
            usage.fold(self.half_life, now)
            self.usage = {svc.name: usage.usage_by_user(svc.name, svc.half_life_seconds, now)
                          for svc in self.config.services if svc.policy == "fair_share"}
        except Exception as exc:  # the next resync tries again
            self.log.warning("could not fold the fair-share usage (%s: %s); trying again at the next resync",
                             exc.__class__.__name__, exc)
            return
        self.usage_at = clock.epoch(now)

    def charge(self, service: str, user: UserKey, since: float) -> None:
        """Count an ended job's slot time (from `since`, its admission) in the user's usage at once,
        as the database's charge does, until the next resync folds the charge itself.

        NOTE: stored usage is as of `usage_at` and decays from then: the charge is scaled up by the
        decay since, so that it counts in full now (at most a resync period: never large)."""
        settings = self.config.service(service)
        if settings is None or settings.policy != "fair_share":
            return
        now = clock.epoch(clock.utcnow())
        growth = 0.5 ** (-(now - self.usage_at) / settings.half_life_seconds)
        users = self.usage.setdefault(service, {})
        users[user] = users.get(user, 0.0) + max(now - since, 0.0) * growth

    def half_life(self, service: str) -> float:
        settings = self.config.service(service)
        # NOTE: the charges of a service no longer configured decay with the default half-life.
        return settings.half_life_seconds if settings else ServiceConfig("").half_life_seconds

    def scores(self, msg: AdmissionRequest, settings: ServiceConfig, now: float) -> dict[UserKey, float] | None:
        """fair_share: each candidate user's `fair_share_score`; round_robin: None (turns alone)."""
        if settings.policy != "fair_share":
            return None
        stored = self.usage.get(msg.service, {})
        active, since = self.active[msg.service], dict(msg.waiting_since)

        def score(user: UserKey) -> float:
            running = [self.owner[job_id][3] for job_id in active.get(user, ())]
            return user_score(stored.get(user, 0.0), self.usage_at, running, self.config.share(user[0]),
                              since.get(user, now), now, settings.half_life_seconds)

        return {user: score(user) for user, _ in msg.candidates}

    def receiveMsg_AdmissionRequest(self, msg: AdmissionRequest, sender) -> None:
        settings = self.config.service(msg.service)
        if settings is None or self.peers is None:
            return
        active = self.active[msg.service]
        in_group = self.in_group[msg.service]
        now = clock.utcnow()
        labels = {job_id: (priority, group) for job_id, priority, group in msg.labels}
        group_of = {job_id: (user[0], labels[job_id][1]) for user, ids in msg.candidates for job_id in ids
                    if labels.get(job_id, (0, None))[1] is not None}
        candidates = [(user, tuple(j for j in ids if j not in self.owner)) for user, ids in msg.candidates]
        scores = self.scores(msg, settings, clock.epoch(now))
        granted = admit([c for c in candidates if c[1]], {u: len(s) for u, s in active.items()},
                        sum(len(s) for s in active.values()), settings.runs_per_user, self.limit(msg.service),
                        self.last_turn[msg.service], scores=scores, group_of=group_of,
                        active_by_group={g: len(s) for g, s in in_group.items()},
                        runs_per_group=settings.runs_per_group)
        claimed, gone = jobs.claim_for_dispatch([job_id for _, job_id in granted], now) if granted else ([], [])
        claimed_set = set(claimed)
        for user, job_id in granted:
            if job_id in claimed_set:
                self.turn += 1
                self.last_turn[msg.service][user] = self.turn
                group = group_of.get(job_id)
                self._hold(msg.service, user, job_id, group[1] if group else None, clock.epoch(now))
                event(self.log, "admitted", job=job_id, user=user[1], portal=user[0], service=msg.service,
                      active=len(active[user]), runs_per_user=settings.runs_per_user,
                      priority=labels.get(job_id, (0, None))[0] or None, group=group[1] if group else None,
                      score=round(scores[user], 3) if scores else None)
        # NOTE: answered even when nothing was admitted, so the queue stops asking for users who
        # cannot start anything until a slot frees up (a burst of uploads would ask once per job).
        full = sum(len(s) for s in active.values()) >= self.limit(msg.service)
        at_limit = tuple(user for user, _ in msg.candidates if len(active.get(user, ())) >= settings.runs_per_user)
        capped = {g for g, s in in_group.items() if settings.runs_per_group is not None
                  and len(s) >= settings.runs_per_group}
        self.tell_held(msg.service, candidates, set(granted), at_limit,
                       {job_id for job_id, group in group_of.items() if group in capped})
        self.send(self.peers.queue, Admitted(msg.service, tuple(claimed), full, at_limit, tuple(gone)))
        if claimed:
            self.send(self.peers.dispatcher(msg.service), Dispatch(msg.service, tuple(claimed)))

    def tell_held(self, service: str, candidates, granted: set, at_limit: tuple, group_capped: set) -> None:
        """A DEBUG `held` for each user who still has jobs waiting: at their runs_per_user, every
        waiting one's group at its runs_per_group, or the service is full."""
        for user, job_ids in candidates:
            waiting = [job_id for job_id in job_ids if (user, job_id) not in granted]
            if waiting:
                why = ("user_quota" if user in at_limit else
                       "group_quota" if all(job_id in group_capped for job_id in waiting) else "service_capacity")
                event(self.log, "held", logging.DEBUG, service=service, user=user[1], portal=user[0], why=why,
                      jobs=len(waiting))

    def receiveMsg_JobEnded(self, msg: JobEnded, sender) -> None:
        held = [job_id for job_id in msg.job_ids if job_id in self.owner]
        if not held or self.peers is None:
            return
        # NOTE: a job still active came back and was admitted again: that hold is the new one.
        freed = set(held) - jobs.active_among(held)
        for job_id in freed:
            service, user, group, since = self.owner.pop(job_id)
            self.charge(service, user, since)
            users = self.active[service]
            users[user].discard(job_id)
            if not users[user]:
                del users[user]
            if group is not None:
                groups = self.in_group[service]
                groups[group].discard(job_id)
                if not groups[group]:
                    del groups[group]
        if freed:
            self.send(self.peers.queue, SlotsFreed(msg.service))

    def receiveMsg_Capacity(self, msg: Capacity, sender) -> None:
        grew = msg.slots > self.capacity.get(msg.service, 0)
        self.capacity[msg.service] = msg.slots
        if grew and self.peers:
            self.send(self.peers.queue, SlotsFreed(msg.service))

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        try:
            self.resync()
        finally:
            self.wakeupAfter(RESYNC_SECONDS)
