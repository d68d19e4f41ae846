"""QuotaActor: who may start a job now. Owns the active jobs per (service, user) and per service.

A user is a (portal, user_id) pair (`UserKey`): portals number their users independently, so their
runs_per_user limits and round-robin turns are apart.

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
from storage import jobs
from storage import clock

RESYNC_SECONDS = 10.0


class QuotaActor(ServerActor):
    role = "quota"

    def configured(self, msg: Configure) -> None:
        self.capacity: dict[str, int] = {}
        self.last_turn: dict[str, dict[UserKey, int]] = defaultdict(dict)
        self.turn = 0
        self.resync()
        self.wakeupAfter(RESYNC_SECONDS)

    def resync(self) -> None:
        rows = jobs.active_jobs()  # read first: a failed read leaves the current sets in place
        self.active: dict[str, dict[UserKey, set[int]]] = defaultdict(lambda: defaultdict(set))
        self.owner: dict[int, tuple[str, UserKey]] = {}
        for service, user, job_id in rows:
            self._hold(service, user, job_id)
        if self.peers:
            # NOTE: a JobEnded that raced this reload finds no holder; ask for admission anyway.
            for service in self.config.services:
                self.send(self.peers.queue, SlotsFreed(service.name))

    def rebuild(self) -> None:
        self.resync()

    def peers_changed(self) -> None:
        for service in self.config.services:
            self.send(self.peers.queue, SlotsFreed(service.name))

    def _hold(self, service: str, user: UserKey, job_id: int) -> None:
        self.active[service][user].add(job_id)
        self.owner[job_id] = (service, user)

    def limit(self, service: str) -> int:
        settings = self.config.service(service)
        capacity = self.capacity.get(service, 0)
        return min(settings.max_runs, capacity) if settings.max_runs else capacity

    def receiveMsg_AdmissionRequest(self, msg: AdmissionRequest, sender) -> None:
        settings = self.config.service(msg.service)
        if settings is None or self.peers is None:
            return
        active = self.active[msg.service]
        candidates = [(user, tuple(j for j in ids if j not in self.owner)) for user, ids in msg.candidates]
        granted = admit([c for c in candidates if c[1]], {u: len(s) for u, s in active.items()},
                        sum(len(s) for s in active.values()), settings.runs_per_user, self.limit(msg.service),
                        self.last_turn[msg.service])
        claimed, gone = jobs.claim_for_dispatch([job_id for _, job_id in granted], clock.utcnow()) if granted else ([], [])
        claimed_set = set(claimed)
        for user, job_id in granted:
            if job_id in claimed_set:
                self.turn += 1
                self.last_turn[msg.service][user] = self.turn
                self._hold(msg.service, user, job_id)
                event(self.log, "admitted", job=job_id, user=user[1], portal=user[0], service=msg.service,
                      active=len(active[user]), runs_per_user=settings.runs_per_user)
        # NOTE: answered even when nothing was admitted, so the queue stops asking for users who
        # cannot start anything until a slot frees up (a burst of uploads would ask once per job).
        full = sum(len(s) for s in active.values()) >= self.limit(msg.service)
        at_limit = tuple(user for user, _ in msg.candidates if len(active.get(user, ())) >= settings.runs_per_user)
        self.tell_held(msg.service, candidates, set(granted), at_limit)
        self.send(self.peers.queue, Admitted(msg.service, tuple(claimed) + tuple(gone), full, at_limit))
        if claimed:
            self.send(self.peers.dispatcher(msg.service), Dispatch(msg.service, tuple(claimed)))

    def tell_held(self, service: str, candidates, granted: set, at_limit: tuple) -> None:
        """A DEBUG `held` for each user who still has jobs waiting: at their runs_per_user, or the
        service is full."""
        for user, job_ids in candidates:
            waiting = sum(1 for job_id in job_ids if (user, job_id) not in granted)
            if waiting:
                event(self.log, "held", logging.DEBUG, service=service, user=user[1], portal=user[0],
                      why="user_quota" if user in at_limit else "service_capacity", jobs=waiting)

    def receiveMsg_JobEnded(self, msg: JobEnded, sender) -> None:
        held = [job_id for job_id in msg.job_ids if job_id in self.owner]
        if not held or self.peers is None:
            return
        # NOTE: a job still active came back and was admitted again: that hold is the new one.
        freed = set(held) - jobs.active_among(held)
        for job_id in freed:
            service, user = self.owner.pop(job_id)
            users = self.active[service]
            users[user].discard(job_id)
            if not users[user]:
                del users[user]
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
