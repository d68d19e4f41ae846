"""DispatcherActor: one per service; sends admitted jobs to that service's executors.

Accepts: Dispatch (jobs now Dispatching), JobEnded (an executor slot is free), WakeupMessage (probe
executors that did not answer, and a slow re-probe of all). Sends: Capacity and JobEnded to the
quota, JobQueued to the queue (a job no executor could take goes back to the queue... only when the
executor refused it for good is it failed).

Before each send it persists the attempt number and the executor chosen, so the executor's report
of an older attempt is recognised and ignored. At start it re-sends every job still Dispatching.
"""
from __future__ import annotations

from collections import deque

from thespian.actors import WakeupMessage

from actors.base import ServerActor
from actors.executor_link import ExecutorLink, ExecutorRefused, ExecutorUnreachable
from actors.messages import Capacity, Configure, Dispatch, JobEnded
from actors.scheduling import ExecutorSlot, choose_executor
from storage import jobs
from storage.states import JobState

PROBE_RETRY_SECONDS = 1.0
REPROBE_SECONDS = 30.0


class DispatcherActor(ServerActor):
    role = "dispatcher"

    def configured(self, msg: Configure) -> None:
        self.service = msg.service
        self.link = ExecutorLink()
        settings = self.config.service(self.service)
        loads = jobs.in_flight_by_executor(self.service)
        self.executors = {url: ExecutorSlot(url, in_flight=loads.get(url, 0)) for url in settings.clients}
        self.pending: deque[int] = deque(jobs.dispatching_jobs(self.service))
        self.counter = 0
        self.capacity_told = -1
        self.probe(self.executors.values())
        self.wakeupAfter(REPROBE_SECONDS, payload="reprobe")

    def peers_changed(self) -> None:
        self.capacity_told = -1
        self.tell_capacity()
        self.drain()

    # --- executors ------------------------------------------------------------------------------

    def probe(self, slots) -> None:
        for slot in list(slots):
            try:
                health = self.link.health(slot.url)
                slot.slots, slot.reachable = int(health["slots"]), True
            except (ExecutorUnreachable, KeyError, ValueError):
                slot.reachable = False
        if any(not s.reachable for s in self.executors.values()):
            self.wakeupAfter(PROBE_RETRY_SECONDS, payload="probe")
        self.tell_capacity()

    def tell_capacity(self) -> None:
        total = sum(s.slots for s in self.executors.values() if s.reachable)
        if self.peers and total != self.capacity_told:
            self.capacity_told = total
            self.send(self.peers.quota, Capacity(self.service, total))

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        if msg.payload == "reprobe":
            self.probe(self.executors.values())
            self.wakeupAfter(REPROBE_SECONDS, payload="reprobe")
        else:
            self.probe([s for s in self.executors.values() if not s.reachable])
        self.drain()

    # --- jobs -----------------------------------------------------------------------------------

    def receiveMsg_Dispatch(self, msg: Dispatch, sender) -> None:
        self.pending.extend(msg.job_ids)
        self.drain()

    def receiveMsg_JobEnded(self, msg: JobEnded, sender) -> None:
        slot = self.executors.get(msg.executor)
        if slot is not None and slot.in_flight > 0:
            slot.in_flight -= 1
        self.drain()

    def drain(self) -> None:
        """Send pending jobs while some executor has a free slot."""
        while self.pending and self.peers:
            slot = choose_executor(self.executors.values())
            if slot is None:
                return
            job_id = self.pending.popleft()
            self.send_job(job_id, slot)

    def send_job(self, job_id: int, slot: ExecutorSlot) -> None:
        now = jobs.utcnow()
        job = jobs.begin_attempt(job_id, slot.url, now)
        if job is None:
            return  # cancelled or already moved on meanwhile
        self.counter += 1
        slot.last_used = self.counter
        slot.in_flight += 1
        try:
            remote_id = self.link.submit(slot.url, job.id, job.attempts, self.config.own_url, job.dir)
        except ExecutorUnreachable as exc:
            self.log.warning("executor %s unreachable while sending job %d: %s", slot.url, job_id, exc)
            slot.in_flight -= 1
            slot.reachable = False
            self.pending.appendleft(job_id)
            self.probe([])  # re-arms the probe timer and tells the quota the capacity shrank
            return
        except ExecutorRefused as exc:
            slot.in_flight -= 1
            self.log.error("executor %s refused job %d: %s", slot.url, job_id, exc)
            ended = jobs.finish(job_id, job.attempts, JobState.FAILED, jobs.utcnow(),
                                reason=f"the executor refused the job: {exc}")
            if ended:
                self.send(self.peers.quota, JobEnded(self.service, job_id, None))
            return
        jobs.mark_submitted(job_id, job.attempts, remote_id, jobs.utcnow())
