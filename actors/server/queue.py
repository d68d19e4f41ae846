"""QueueActor: the queued jobs of every service, grouped by user, in the order they arrived.

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
from collections import OrderedDict, deque

from thespian.actors import WakeupMessage

from actors.messages import AdmissionRequest, Admitted, Configure, JobQueued, SlotsFreed, UserKey
from actors.server.base import ServerActor
from conf.logs import event
from storage import jobs

RESYNC_SECONDS = 10.0


class ServiceQueue:
    """The queued job ids of one service: per user, first-in first-out."""

    def __init__(self):
        self.by_user: OrderedDict[UserKey, deque[int]] = OrderedDict()
        self.owner: dict[int, UserKey] = {}

    def __len__(self) -> int:
        return len(self.owner)

    def add(self, user: UserKey, job_id: int) -> bool:
        if job_id in self.owner:
            return False
        self.by_user.setdefault(user, deque()).append(job_id)
        self.owner[job_id] = user
        return True

    def remove(self, job_id: int) -> None:
        user = self.owner.pop(job_id, None)
        if user is None:
            return
        waiting = self.by_user[user]
        if waiting and waiting[0] == job_id:
            waiting.popleft()
        else:
            waiting.remove(job_id)
        if not waiting:
            del self.by_user[user]

    def heads(self, per_user: int) -> tuple[tuple[UserKey, tuple[int, ...]], ...]:
        return tuple((user, tuple(waiting[i] for i in range(min(per_user, len(waiting)))))
                     for user, waiting in self.by_user.items())


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
            for user, job_id in jobs.queued_jobs(service):
                fresh.add(user, job_id)
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
                self.send(self.peers.quota, AdmissionRequest(service, queue.heads(per_user)))

    def receiveMsg_JobQueued(self, msg: JobQueued, sender) -> None:
        queue = self.queues.get(msg.service)
        if queue is None or not queue.add(msg.user, msg.job_id):
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
