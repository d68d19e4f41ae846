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
from bisect import bisect_left, insort

from thespian.actors import WakeupMessage

from actors.messages import AdmissionRequest, Admitted, Configure, JobQueued, SlotsFreed, UserKey
from actors.server.base import ServerActor
from conf.logs import event
from storage import clock, jobs
from storage.fair_share import queue_order

RESYNC_SECONDS = 10.0


class UserQueue:
    """One user's queued jobs: `order` sorted by `queue_order` (the order they should start in),
    `ids` sorted by id (ids grow with upload time, so ids[0] is the oldest queued job).

    NOTE: bisect-sorted lists, not heaps: `heads` reads the first few in order and a job admitted or
    cancelled is removed from anywhere; both are a binary search and a memmove (microseconds at
    100,000 jobs of one user, measured in the report of this change)."""

    __slots__ = ("order", "ids")

    def __init__(self):
        self.order: list[tuple[int, int]] = []
        self.ids: list[int] = []

    def add(self, key: tuple[int, int], job_id: int) -> None:
        # NOTE: jobs mostly arrive in id order with equal priorities: appending is the common case.
        if not self.order or self.order[-1] < key:
            self.order.append(key)
        else:
            insort(self.order, key)
        if not self.ids or self.ids[-1] < job_id:
            self.ids.append(job_id)
        else:
            insort(self.ids, job_id)

    def remove(self, key: tuple[int, int], job_id: int) -> None:
        del self.order[bisect_left(self.order, key)]
        del self.ids[bisect_left(self.ids, job_id)]


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
        self.by_user.setdefault(user, UserQueue()).add(queue_order(priority, job_id), job_id)
        self.jobs[job_id] = (user, priority, group, queued_at)
        return True

    def remove(self, job_id: int) -> None:
        found = self.jobs.pop(job_id, None)
        if found is None:
            return
        user, priority = found[0], found[1]
        waiting = self.by_user[user]
        waiting.remove(queue_order(priority, job_id), job_id)
        if not waiting.ids:
            del self.by_user[user]

    def heads(self, per_user: int) -> tuple[tuple[UserKey, tuple[int, ...]], ...]:
        """Each waiting user's next `per_user` jobs, in the order they should start."""
        return tuple((user, tuple(job_id for _, job_id in waiting.order[:per_user]))
                     for user, waiting in self.by_user.items())

    def request(self, service: str, per_user: int) -> AdmissionRequest:
        """The quota's request: the heads, their labels, and each of their users' oldest queued time."""
        candidates = self.heads(per_user)
        labels = []
        for _, job_ids in candidates:
            for job_id in job_ids:
                _, priority, group, _ = self.jobs[job_id]
                if priority or group is not None:
                    labels.append((job_id, priority, group))
        oldest = tuple((user, self.jobs[self.by_user[user].ids[0]][3]) for user, _ in candidates)
        return AdmissionRequest(service, candidates, tuple(labels), oldest)


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
        queued_at = msg.queued_at if msg.queued_at is not None else clock.utcnow().timestamp()
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
        for job_id in msg.job_ids:
            queue.remove(job_id)
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
