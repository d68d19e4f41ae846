"""DispatcherActor: one per service; knows the service's executors and sends admitted jobs to them.

Accepts: Dispatch (jobs now Dispatching), JobEnded (an executor slot is free), CancelJob (from the
web layer: a job cancelled on request, ended here like every other), ExecutorHeartbeat (an
executor registers or says it is alive, perhaps draining), WakeupMessage ("probe": executors that
did not answer; "check": the regular look at every executor, at losses, at the load on each and at
Dispatching jobs this actor has not heard of). Sends: Capacity and JobEnded to the quota, JobQueued
to the queue for jobs of a lost executor.

Each job goes to the executor scheduling.choose_executor names: the lowest overflow tier with a free
slot (an executor's /health and heartbeats give its tier), so a tier-2 executor gets work only while
every usable tier-1 one is full; the service's capacity is the slots of all tiers together.

What it learns of each executor it writes to the registry (storage/executors.py) as the states of
actors/server/executor_states.py, and logs each change as an executor event (conf/logs.py:
registered, alive, draining, lost, gone). An executor that never answered since the server
started is `unknown`, said once at INFO: a configured node that is not started is not a fault.

Before each send it persists the attempt number and the executor chosen, so the executor's report
of an older attempt is recognised and ignored. A send that may have reached its executor is
repeated to that executor with the same attempt (the executor recognises it), never to another
one, so no job runs twice; one that certainly did not arrive may go anywhere. An executor not
heard from for executor_timeout seconds is lost: its jobs go back to the queue (or fail after
max_attempts), and tasks of stale attempts it still holds when it returns are killed.

A service no longer configured keeps its dispatcher while its jobs are on executors ("retired"):
it watches only the executors holding them, so they complete if their executor reports, and fail
if it is lost (there is no queue to send them back to).
"""
from __future__ import annotations

import logging

from thespian.actors import WakeupMessage

from actors.messages import CancelJob, Capacity, Configure, Dispatch, ExecutorHeartbeat, JobEnded
from actors.server.base import ServerActor
from actors.server.executor_link import ExecutorLink, ExecutorRefused, ExecutorUnreachable
from actors.server.executor_states import ALIVE, DRAINING, GONE, LOST, UNKNOWN, after_contact, after_silence
from actors.server.parallel import CallPool
from actors.server.scheduling import KnownExecutor, choose_executor, is_lost
from conf.logs import event
from conf.settings import MAX_TIER
from storage import clock, executors, job_events, jobs
from storage.states import ACTIVE, JobState

PROBE_RETRY_SECONDS = 1.0
CHECK_SECONDS = 30.0
#: A job whose send may have reached an executor waits this long for it to come back.
PIN_TIMEOUT_SECONDS = 60.0
#: Jobs sent to executors at the same time, at most.
SEND_CONCURRENCY = 8


class DispatcherActor(ServerActor):
    role = "dispatcher"

    def configured(self, msg: Configure) -> None:
        self.service = msg.service
        self.link = ExecutorLink(self.config.cluster_secret)
        self.timeout = self.config.executor_timeout
        self.check_every = min(CHECK_SECONDS, self.timeout / 3)
        settings = self.config.service(self.service)
        #: The service is no longer configured: only its jobs under way are watched (see forget_idle).
        self.retired = settings is None
        static = () if self.retired else settings.clients
        self.executors: dict[str, KnownExecutor] = {}
        self.last_seen: dict[str, float] = {}
        self.down_since: dict[str, float] = {}
        #: Executors whose heartbeats arrive while the server cannot reach them (logged once).
        self.one_way: set[str] = set()
        # NOTE: an executor that holds jobs stays watched, even if the configuration dropped it.
        holding = {job.executor for job in jobs.active_in(self.service) if job.executor}
        registered = () if self.retired else executors.registered(self.service)
        left = executors.gone()
        for url in (*static, *registered, *sorted(holding - set(static))):
            self.add_executor(url).state = GONE if url in left else UNKNOWN
        self.pending: dict[int, None] = {}  # an ordered set: the jobs to send, oldest first
        self.counter = 0
        self.capacity_told = -1
        self.probe_armed = False
        self.calls = CallPool(SEND_CONCURRENCY, "submit")
        self.reconcile()
        self.probe(self.executors.values())
        self.wakeupAfter(self.check_every, payload="check")

    def add_executor(self, url: str) -> KnownExecutor:
        slot = self.executors.get(url)
        if slot is None:
            slot = self.executors[url] = KnownExecutor(url)
            self.last_seen[url] = clock.monotonic()  # a newcomer gets a full timeout to answer
        return slot

    def rebuild(self) -> None:
        self.reconcile()

    def peers_changed(self) -> None:
        self.capacity_told = -1
        self.tell_capacity()
        self.send_soon()

    def reconcile(self) -> None:
        """Re-read from the database the load on each executor and the jobs waiting to be sent."""
        loads = jobs.in_flight_by_executor(self.service)
        for url, slot in self.executors.items():
            slot.in_flight = loads.get(url, 0)
        for job_id in jobs.dispatching_jobs(self.service):
            self.pending.setdefault(job_id)

    # --- executors: probes, heartbeats, losses --------------------------------------------------

    def probe(self, slots) -> None:
        for slot in list(slots):
            try:
                health = self.link.health(slot.url)
                if health["service"] != self.service:
                    raise ExecutorUnreachable(f"{slot.url} runs service {health['service']!r}, not {self.service!r}")
                self.heard_from(slot, int(health["slots"]), health.get("status") == "draining",
                                tier=_tier(health.get("tier")))
                self.note_backend(slot, health.get("backend"))
                self.kill_stale(slot.url, _held(health.get("tasks")))
            except (ExecutorUnreachable, ValueError, TypeError) as exc:
                self.unreachable(slot, str(exc))
        self.arm_probe()
        self.tell_capacity()

    def note_backend(self, slot: KnownExecutor, backend) -> None:
        """Keep how the executor runs jobs (its jobs' run times are counted per backend)."""
        if isinstance(backend, str) and backend and backend != slot.backend and not self.retired:
            slot.backend = backend
            executors.set_backend(slot.url, backend)

    def unreachable(self, slot: KnownExecutor, error: str) -> None:
        """A probe did not get through: said once per outage (at INFO for an executor not heard from
        since the server started, not at all for one that left), the reason kept for the registry."""
        if slot.reachable or slot.url not in self.down_since:
            slot.error = error
            if slot.state in (ALIVE, DRAINING):
                self.log.warning("executor %s of %s is unreachable: %s", slot.url, self.service, error)
            elif slot.state == UNKNOWN:
                self.log.info("executor %s of %s has not answered since the server started (%s); it is "
                              "listed as unknown until it does", slot.url, self.service, error)
            if slot.state != GONE:
                self.record(slot.url, slot.slots, slot.state, None, error=error)
        self.mark_down(slot)

    def heard_from(self, slot: KnownExecutor, slots: int, draining: bool, *, tier: int,
                   registered: bool | None = None, direct: bool = True, leaving: bool = False) -> None:
        if not direct and slot.url in self.down_since and not leaving:
            # NOTE: it reaches us, but we could not reach it at this URL (a wrong advertise_url, a
            # firewall): only the probe's answer brings it back, and it is lost after
            # executor_timeout like any executor we cannot reach, so its jobs do not wait forever.
            # (One that left and starts again is quietly brought back by the probe's answer.)
            if slot.url not in self.one_way and slot.state != GONE:
                self.one_way.add(slot.url)
                self.log.error("executor %s of %s sends heartbeats, but the server cannot reach it at that URL; "
                               "check its advertise_url (or host and port) and the network between them",
                               slot.url, self.service)
            return
        self.one_way.discard(slot.url)
        state, name = after_contact(slot.state, draining, leaving)
        was = (slot.state, slot.slots, slot.tier)
        slot.slots, slot.state, slot.tier = slots, state, tier
        slot.reachable, slot.draining = state != GONE, state != ALIVE
        self.last_seen[slot.url] = clock.monotonic()
        if state == GONE:
            self.mark_down(slot)  # probed until it answers as a node started again; quietly
            self.arm_probe()
        else:
            self.down_since.pop(slot.url, None)
        if was != (state, slots, tier) or registered:
            if self.record(slot.url, slots, state, clock.utcnow(), registered=registered, tier=tier):
                name = "registered"
        if name is not None:
            event(self.log, name, executor=slot.url, service=self.service, slots=slots)

    def record(self, url: str, slots: int, state: str, now, registered: bool | None = None,
               error: str | None = None, tier: int | None = None) -> bool:
        """Note the executor's state in the registry (GET /executors); True if it registered just
        now. A retired service's dispatcher does not: the address may serve a configured service
        now (a renamed one)."""
        return not self.retired and executors.record(url, self.service, slots, state, now, registered=registered,
                                                     error=error, tier=tier)

    def forget_idle(self) -> None:
        """A retired service's executors that hold none of its jobs any more are no longer watched."""
        if self.retired:
            holding = {job.executor for job in jobs.active_in(self.service)}
            for url in set(self.executors) - holding:
                del self.executors[url]
                self.down_since.pop(url, None)

    def mark_down(self, slot: KnownExecutor) -> None:
        slot.reachable = False
        self.down_since.setdefault(slot.url, clock.monotonic())

    def arm_probe(self) -> None:
        if not self.probe_armed and any(not s.reachable for s in self.executors.values()):
            self.probe_armed = True
            self.wakeupAfter(min(PROBE_RETRY_SECONDS, self.check_every), payload="probe")

    def tell_capacity(self) -> None:
        total = sum(s.slots for s in self.executors.values() if s.usable)
        if self.peers and total != self.capacity_told:
            self.capacity_told = total
            self.send(self.peers.quota, Capacity(self.service, total))

    def check_losses(self) -> None:
        now = clock.monotonic()
        for url, slot in self.executors.items():
            if slot.reachable or slot.state == LOST or not is_lost(self.last_seen[url], now, self.timeout):
                continue
            held = jobs.active_on(url)
            slot.state, name = after_silence(slot.state, bool(held), now - self.last_seen[url], self.timeout)
            if name is None:
                continue  # never heard from, or it left, and it holds nothing: it stays so
            reason = f"not heard from for {self.timeout:.0f} s" + (f" (last error: {slot.error})" if slot.error else "")
            event(self.log, name, logging.WARNING, executor=url, service=self.service, slots=slot.slots, reason=reason)
            self.record(url, slot.slots, LOST, None, error=reason)
            for job in held:
                self.pending.pop(job.id, None)
                self.job_lost(job.id, job.attempts, f"executor {url} was lost")

    def receiveMsg_ExecutorHeartbeat(self, msg: ExecutorHeartbeat, sender) -> None:
        slot = self.add_executor(msg.url)
        if slot.url in self.down_since and not msg.leaving:
            # NOTE: it may have started since the last probe: a one-way executor is one that does
            # not answer now, not one that answered no probe yet.
            self.probe([slot])
        self.heard_from(slot, msg.slots, msg.draining, tier=msg.tier, registered=True, direct=False,
                        leaving=msg.leaving)
        if slot.reachable:  # a kill cannot get through otherwise; the probe's answer brings the list again
            self.kill_stale(msg.url, msg.tasks)
        self.tell_capacity()
        self.send_soon()

    def kill_stale(self, url: str, held) -> None:
        """Stop tasks an executor holds for attempts that no longer count (it was lost meanwhile)."""
        for task_id, job_id, attempt in held:
            job = jobs.get_ref(job_id)
            # NOTE: judged by attempt, not by URL: one executor may be known under two URLs.
            if job is None or attempt < job.attempts or job.state not in ACTIVE:
                try:
                    self.link.kill(url, task_id)
                except ExecutorUnreachable:
                    pass

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        try:
            if msg.payload == "check":
                self.forget_idle()
                self.reconcile()
                self.capacity_told = -1  # say it again: a Capacity message may have been lost
                self.probe(self.executors.values())
            elif self.flush_due(msg):
                self.send_pending()
                return
            else:
                self.probe_armed = False
                self.probe([s for s in self.executors.values() if not s.reachable])
            self.check_losses()
            self.send_soon()
        finally:
            if msg.payload == "check":
                self.wakeupAfter(self.check_every, payload="check")

    # --- jobs -----------------------------------------------------------------------------------

    def receiveMsg_Dispatch(self, msg: Dispatch, sender) -> None:
        for job_id in msg.job_ids:
            self.pending.setdefault(job_id)
        self.send_soon()

    def receiveMsg_CancelJob(self, msg: CancelJob, sender) -> None:
        """Cancelled on request: ended like any job (`job_ended` frees its slots), and its task is
        stopped now (a task whose send was not answered yet is stopped at the executor's next
        heartbeat: kill_stale)."""
        job = jobs.get_ref(msg.job_id)
        if job is None or job.state is not JobState.CANCELLED:
            return
        self.pending.pop(job.id, None)
        self.job_ended(job)
        if job.executor and job.remote_id:
            try:
                self.link.kill(job.executor, job.remote_id)
            except ExecutorUnreachable as exc:
                self.log.warning("could not stop the task of cancelled job %d now: %s", job.id, exc)

    def receiveMsg_JobEnded(self, msg: JobEnded, sender) -> None:
        for _, executor in msg.ended:
            self.free_slot(executor)
        self.send_soon()

    def free_slot(self, executor: str | None) -> None:
        slot = self.executors.get(executor)
        if slot is not None and slot.in_flight > 0:
            slot.in_flight -= 1

    def send_soon(self) -> None:
        """Send the pending jobs once the messages already waiting are handled.

        NOTE: those messages (more Dispatch, JobEnded) only add to `pending`; sending after them
        turns a burst into one batch, whose jobs go out side by side.
        """
        if self.peers is not None:
            self.flush_soon()

    def send_pending(self) -> None:
        """Send every pending job that has somewhere to go, oldest first."""
        refs = jobs.get_refs(self.pending)
        batch: list[tuple[jobs.JobRef, KnownExecutor, bool]] = []
        unplaced = 0
        for job_id in list(self.pending):
            job = refs.get(job_id)
            if job is None or job.state is not JobState.DISPATCHING:
                del self.pending[job_id]  # sent already, or ended meanwhile
                continue
            pinned = self.executors.get(job.executor) if job.executor else None
            if pinned is not None and not pinned.reachable and not self.pin_expired(pinned):
                continue  # it may be on that executor: wait for it to come back
            slot = pinned if pinned is not None and pinned.reachable else choose_executor(self.executors.values())
            if slot is None:
                unplaced += 1
                continue
            del self.pending[job_id]
            resend = slot is pinned
            if not resend:
                slot.in_flight += 1  # taken now, so the next job of the batch sees it
            self.counter += 1
            slot.last_used = self.counter
            batch.append((job, slot, resend))
        if unplaced:
            event(self.log, "held", logging.DEBUG, service=self.service, why="no_executor", jobs=unplaced)
        if not batch:
            return
        try:
            attempts = jobs.begin_attempts([(job.id, slot.url) for job, slot, resend in batch if not resend], clock.utcnow())
        except Exception:  # noqa: BLE001 — nothing was sent; the next check's reconcile tries again
            self.log.exception("recording the attempts of %d jobs failed", len(batch))
            for job, slot, resend in batch:
                if not resend:
                    slot.in_flight -= 1
            return
        sends = []
        for job, slot, resend in batch:
            attempt = job.attempts if resend else attempts.get(job.id)
            if attempt is None:
                slot.in_flight -= 1  # cancelled or moved on meanwhile
            else:
                sends.append((job, slot, attempt, resend))
        accepted = []
        for (job, slot, attempt, resend), remote_id, error in self.calls.each(self.submit, sends):
            if error is None:
                self.last_seen[slot.url] = clock.monotonic()
                accepted.append((job.id, attempt, remote_id))
                event(self.log, "dispatched", job=job.id, service=self.service, executor=slot.url, attempt=attempt,
                      tier=slot.tier)
            else:
                self.not_accepted(job, slot, attempt, resend, error)
        if accepted:
            jobs.mark_submitted(accepted, clock.utcnow())

    def submit(self, send) -> str:
        """Runs on a pool thread: the executor's task id for this job, or the link's exception."""
        job, slot, attempt, _ = send
        return self.link.submit(slot.url, job.id, job.uid, attempt, self.config.own_url, job.dir, job.max_runtime)

    def pin_expired(self, slot: KnownExecutor) -> bool:
        return clock.monotonic() - self.down_since.get(slot.url, clock.monotonic()) > PIN_TIMEOUT_SECONDS

    def not_accepted(self, job: jobs.JobRef, slot: KnownExecutor, attempt: int, resend: bool, exc: Exception) -> None:
        """The executor did not take the job: try again later or elsewhere, or fail it if refused."""
        if isinstance(exc, ExecutorUnreachable):
            self.log.warning("executor %s unreachable while sending job %d: %s", slot.url, job.id, exc)
            slot.error = str(exc)
            if not exc.delivered and not resend:
                jobs.unassign(job.id, attempt)  # it never got there: free to go anywhere
                slot.in_flight -= 1
            self.pending[job.id] = None
            self.mark_down(slot)
            self.arm_probe()
            self.tell_capacity()
        elif isinstance(exc, ExecutorRefused) and exc.status == 503:  # draining: it takes nothing new
            if not resend:  # a resend stays pinned: the first send may be running there
                jobs.unassign(job.id, attempt)
                slot.in_flight -= 1
            slot.draining = True
            self.pending[job.id] = None
            self.tell_capacity()
        elif isinstance(exc, (ExecutorRefused, OSError)):
            reason = (f"the executor refused the job: {exc}" if isinstance(exc, ExecutorRefused)
                      else f"the job's files could not be read: {exc}")
            self.log.error("job %d not sent to %s: %s", job.id, slot.url, reason)
            ended = jobs.finish(job.id, attempt, JobState.FAILED, clock.utcnow(), reason=reason)
            if ended is not None:  # else it ended meanwhile (cancelled), and that ending freed its slot
                job_events.ended(self.log, ended[0])
                self.job_ended(ended[0])
        else:  # a bug: the next check's reconcile tries again, with the same attempt on the same executor
            self.log.error("sending job %d to %s failed", job.id, slot.url, exc_info=exc)


def _tier(raw) -> int:
    """The tier of an executor's /health: 1 when it says none (an earlier version) or nonsense."""
    return raw if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= MAX_TIER else 1


def _held(raw) -> list[tuple[str, int, int]]:
    """The (task_id, job_id, attempt) list of an executor's /health, ignoring malformed entries."""
    if not isinstance(raw, list):
        return []
    return [(str(t[0]), t[1], t[2]) for t in raw
            if isinstance(t, list) and len(t) == 3 and isinstance(t[1], int) and isinstance(t[2], int)]
