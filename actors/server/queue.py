"""QueueActor: the queued jobs of every service, grouped by user, each user's in `queue_order`
(higher priority first, then the order they arrived).

A user is a (portal, user_id) pair (`UserKey`): portals number their users independently.

Accepts: JobQueued (a new or returned job), Admitted (the quota took these, and who cannot start
more now), SlotsFreed (ask again), WakeupMessage ("flush": send the admission requests a burst of
messages asked for; otherwise the slow resync with the database). Sends: AdmissionRequest to the
quota, at most one per service and flush, and none for a job whose user (or service) the quota
said is at its limit until a slot frees up.

The index is rebuilt from the database when the actor starts, so a re-created queue loses nothing;
the periodic resync repairs a lost JobQueued message.
"""
from __future__ import annotations

import logging
from bisect import insort
from collections import deque
from itertools import islice

from thespian.actors import WakeupMessage

from actors.messages import AdmissionRequest, Admitted, Configure, JobQueued, SlotsFreed, UserKey
from actors.server.base import ServerActor
from conf.logs import event
from storage import clock, jobs
from storage.fair_share import queue_order

RESYNC_SECONDS = 10.0


class UserQueue:
    """One user's queued job ids in `queue_order` (higher priority first, then by id, which grows
    with upload time): a first-in first-out deque per (priority, group), kept sorted by id.

    NOTE: few lanes (at most 21 priorities, and a user's jobs are in one group or a few), so the
    next jobs are the fronts of a few deques; the common moves (a new upload appended, an admitted
    job taken from the front) are O(1), and a job removed from elsewhere (a cancel) costs a scan of
    its deque up to it, as before priorities."""

    __slots__ = ("lanes",)

    def __init__(self):
        self.lanes: dict[tuple[int, str | None], deque[int]] = {}

    def __bool__(self) -> bool:
        return bool(self.lanes)

    def add(self, priority: int, group: str | None, job_id: int) -> None:
        ids = self.lanes.setdefault((priority, group), deque())
        if not ids or ids[-1] < job_id:
            ids.append(job_id)
        else:  # a requeued job: back to its place by id
            insort(ids, job_id)

    def remove(self, priority: int, group: str | None, job_id: int) -> None:
        ids = self.lanes[priority, group]
        if ids[0] == job_id:
            ids.popleft()
        else:
            ids.remove(job_id)
        if not ids:
            del self.lanes[priority, group]

    def first(self, count: int) -> tuple[int, ...]:
        """The next `count` jobs of each of its groups (and of no group), in the order they should
        start: so that when one group is at its runs_per_group, the quota sees the user's jobs
        outside it too (their next `count` would otherwise all be the capped group's)."""
        if len(self.lanes) == 1:  # the common case: one priority, one group
            return tuple(islice(next(iter(self.lanes.values())), count))
        taken: dict[str | None, int] = {}
        picked: list[tuple[int, int]] = []
        for priority, group in sorted(self.lanes, key=lambda lane: -lane[0]):
            ids = list(islice(self.lanes[priority, group], count - taken.get(group, 0)))
            taken[group] = taken.get(group, 0) + len(ids)
            picked.extend(queue_order(priority, job_id) for job_id in ids)
        return tuple(job_id for _, job_id in sorted(picked))


class ServiceQueue:
    """The queued jobs of one service: per user, in `queue_order` (priority, then first-in first-out);
    each job's group and upload time."""

    def __init__(self):
        self.by_user: dict[UserKey, UserQueue] = {}
        #: job id → (user, priority, group, queued at: epoch seconds)
        self.jobs: dict[int, tuple[UserKey, int, str | None, float]] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, user: UserKey, job_id: int, priority: int = 0, group: str | None = None,
            queued_at: float = 0.0) -> bool:
        if job_id in self.jobs:
            return False
        self.by_user.setdefault(user, UserQueue()).add(priority, group, job_id)
        self.jobs[job_id] = (user, priority, group, queued_at)
        return True

    def remove(self, job_id: int) -> None:
        found = self.jobs.pop(job_id, None)
        if found is None:
            return
        user, priority, group, _ = found
        waiting = self.by_user[user]
        waiting.remove(priority, group, job_id)
        if not waiting:
            del self.by_user[user]

    def request(self, service: str, per_user: int) -> AdmissionRequest:
        """The quota's request: each waiting user's next `per_user` jobs (of each group) in the order
        they should start, the labels of those jobs, and when each user's next job was queued."""
        candidates, labels, since = [], [], []
        for user, waiting in self.by_user.items():
            heads = waiting.first(per_user)
            candidates.append((user, heads))
            since.append((user, self.jobs[heads[0]][3]))
            for job_id in heads:
                _, priority, group, _ = self.jobs[job_id]
                if priority or group is not None:
                    labels.append((job_id, priority, group))
        return AdmissionRequest(service, tuple(candidates), tuple(labels), tuple(since))


class QueueActor(ServerActor):
    role = "queue"

    def configured(self, msg: Configure) -> None:
        #: What the quota's last answer said: services at their limit, users at runs_per_user.
        self.full: set[str] = set()
        self.at_limit: dict[str, set[UserKey]] = {}
        self.asking: set[str] = set()
        self.queues = {svc.name: ServiceQueue() for svc in self.config.services}
        self.resync()
        self.wakeupAfter(RESYNC_SECONDS)

    def rebuild(self) -> None:
        self.queues = {name: ServiceQueue() for name in self.queues}
        self.resync()

    def peers_changed(self) -> None:
        for service in self.queues:
            self.unblock(service)  # a new quota: what the old one said no longer holds
            self.request_admission(service)

    def resync(self) -> None:
        """Reload a service's queue from the database when its size disagrees."""
        for service, queue in self.queues.items():
            if jobs.count_queued(service) == len(queue):
                continue
            fresh = ServiceQueue()
            for row in jobs.queued_jobs(service):
                fresh.add(row.user, row.id, row.priority, row.group, row.queued_at)
            self.queues[service] = fresh
            self.unblock(service)
            if self.peers:
                self.request_admission(service)

    def request_admission(self, service: str) -> None:
        """Ask the quota to admit jobs of `service`, once the messages already waiting are handled.

        NOTE: a burst of uploads (JobQueued) or of freed slots then costs one AdmissionRequest, not
        one each: the quota's answer to the first would only be re-computed for the others.
        """
        self.asking.add(service)
        self.flush_soon()

    def send_admission_requests(self) -> None:
        asking, self.asking = self.asking, set()
        for service in asking:
            queue = self.queues.get(service)
            if queue and self.peers is not None:
                per_user = self.config.service(service).runs_per_user
                self.send(self.peers.quota, queue.request(service, per_user))

    def receiveMsg_JobQueued(self, msg: JobQueued, sender) -> None:
        queue = self.queues.get(msg.service)
        queued_at = msg.queued_at if msg.queued_at is not None else clock.epoch(clock.utcnow())
        if queue is None or not queue.add(msg.user, msg.job_id, msg.priority or 0, msg.group, queued_at):
            return
        if not self.blocked(msg.service, msg.user):
            self.request_admission(msg.service)
        else:  # the quota's last answer holds it back: the same decision, taken here
            event(self.log, "held", logging.DEBUG, job=msg.job_id, service=msg.service, user=msg.user[1],
                  portal=msg.user[0], why="service_capacity" if msg.service in self.full else "user_quota")

    def blocked(self, service: str, user: UserKey) -> bool:
        """The quota's last answer said this user's job could not start now."""
        return service in self.full or user in self.at_limit.get(service, ())

    def receiveMsg_Admitted(self, msg: Admitted, sender) -> None:
        queue = self.queues.get(msg.service)
        for job_id in msg.job_ids + msg.gone:
            queue.remove(job_id)
        if msg.gone:
            # NOTE: a job cancelled while queued took a turn and slot it did not use: ask again now
            # rather than at the next freed slot or resync (up to RESYNC_SECONDS later).
            self.request_admission(msg.service)
        if msg.full:
            self.full.add(msg.service)
        else:
            self.full.discard(msg.service)
        self.at_limit[msg.service] = set(msg.at_limit)

    def receiveMsg_SlotsFreed(self, msg: SlotsFreed, sender) -> None:
        self.unblock(msg.service)
        self.request_admission(msg.service)

    def unblock(self, service: str) -> None:
        self.full.discard(service)
        self.at_limit.pop(service, None)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        if self.flush_due(msg):
            self.send_admission_requests()
            return
        try:
            self.resync()
        finally:
            self.wakeupAfter(RESYNC_SECONDS)
