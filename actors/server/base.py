"""What every server actor shares: the Configure/Peers hand-shake, Ping, and logging of strays.

Actors do no work in `__init__` (Thespian's rule): they start acting on `Configure`, and learn their
peers' addresses from `Peers`, which the supervisor sends again whenever one of them is re-created.
"""
from __future__ import annotations

import logging
import os
import traceback

from thespian.actors import ActorExitRequest, ActorSystemMessage, ActorTypeDispatcher, WakeupMessage

from actors.messages import ActorStarted, Batch, Configure, JobEnded, JobQueued, Peers, Ping, Pong
from actors.runtime import process_logging
from actors.runtime.lifeline import die_with_parent
from actors.server import faults
from storage import database, job_events, jobs
from storage import clock
from storage.models import db
from storage.states import JobState


#: The payload of the wakeup `ServerActor.flush_soon` arms.
FLUSH = "flush"


class ServerActor(ActorTypeDispatcher):
    """Base of the server's actors; subclasses override `configured` and `peers_changed`."""

    role = "actor"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.peers: Peers | None = None
        self.stopping = False
        self.early: list = []
        #: The last message whose handling raised: Thespian retries it once, at once.
        self.failed_once = None
        #: A flush is armed (`flush_soon`).
        self.flush_armed = False
        self.log = logging.getLogger(f"orchestrator.{self.role}")
        die_with_parent()
        process_logging.apply_thresholds()

    def receiveMsg_Configure(self, msg: Configure, sender) -> None:
        try:
            self.config = msg.config
            database.bind(db, msg.config.database_url, create_tables=False)
            self.configured(msg)
        except Exception:
            # NOTE: half-configured is worse than gone: exit, and the supervisor re-creates us.
            self.log.exception("%s could not start; exiting to be re-created", self.role)
            self.config = None
            self.send(self.myAddress, ActorExitRequest())
            return
        self.send(sender, ActorStarted(self.name(msg), os.getpid()))
        early, self.early = self.early, []
        for message, origin in early:  # what arrived before the settings, in arrival order
            try:
                self.receiveMessage(message, origin)
            except Exception:  # noqa: BLE001 — logged there; the rest must still be handled
                pass

    def receiveMsg_Peers(self, msg: Peers, sender) -> None:
        self.peers = msg
        self.peers_changed()

    def receiveMsg_Ping(self, msg: Ping, sender) -> None:
        self.send(sender, Pong(self.role))

    def receiveMsg_ActorExitRequest(self, msg, sender) -> None:
        self.stopping = True  # Thespian stops the actor after this returns

    def receiveMessage(self, msg, sender):
        if self.config is None and not isinstance(msg, (Configure, Ping, ActorSystemMessage)):
            # NOTE: a peer may learn this actor's address and write to it before the supervisor's
            # Configure arrives (messages from different senders are not ordered); keep it for later.
            self.early.append((msg, sender))
            return None
        try:
            faults.maybe_fail(self.role, msg)
            result = super().receiveMessage(msg, sender)
            self.failed_once = None
            return result
        except Exception as exc:
            if database.is_locked(exc):
                self.locked_out(msg)
                return None
            # NOTE: Thespian retries the message once, then returns it to its sender as poison.
            # Whatever this actor held in memory may be half-updated: rebuild it from the database.
            self.log.exception("%s failed handling %s", self.role, type(msg).__name__)
            try:
                self.rebuild()
            except Exception:  # noqa: BLE001
                self.log.exception("%s could not rebuild its state", self.role)
            if isinstance(msg, WakeupMessage):
                return None  # a timer re-arms itself once; a retry would arm it twice
            if self.failed_once is not None and self.failed_once == msg:
                # NOTE: Thespian's retry (a copy) failed too, so the message goes back to its sender
                # as poison; a sender outside the actor system (the web layer) cannot act on that.
                self.failed_once = None
                try:
                    self.fail_jobs_of(msg, traceback.format_exc())
                except Exception:  # noqa: BLE001 — the sender's poison handler tries again
                    self.log.exception("%s could not fail the jobs of a poison %s", self.role, type(msg).__name__)
            else:
                self.failed_once = msg
            raise

    def flush_soon(self) -> None:
        """Arm one wakeup (FLUSH) for after the messages already waiting: each of them only adds to
        what the flush writes or sends, so a burst costs one flush, not one each."""
        if not self.flush_armed:
            self.flush_armed = True
            self.wakeupAfter(0, payload=FLUSH)

    def flush_due(self, msg: WakeupMessage) -> bool:
        """Whether `msg` is the wakeup `flush_soon` armed (then disarmed: the caller flushes)."""
        if msg.payload != FLUSH:
            return False
        self.flush_armed = False
        return True

    def locked_out(self, msg) -> None:
        """Another process held the database's write lock past the busy timeout (an operator's open
        transaction): nothing is wrong with the message or its jobs, so they must not fail as poison.
        The message is dropped — messages are doorbells; the sweeps find its work in the database once
        the lock is let go — and the memory rebuilt as after any failure."""
        self.log.error("%s could not write while handling %s: the database is locked by another process; "
                       "its work is picked up again from the database once the lock is let go",
                       self.role, type(msg).__name__)
        try:
            self.rebuild()
        except Exception as exc:  # noqa: BLE001 — still locked: the next sweep rebuilds
            self.log.warning("%s could not rebuild its state yet: %s", self.role, exc)

    def rebuild(self) -> None:
        """Re-read from the database whatever this actor keeps in memory (after a crash)."""

    def receiveMsg_Batch(self, msg: Batch, sender) -> None:
        """Each message in turn, with Thespian's rule for a message that raises: one retry, then
        its jobs fail (receiveMessage does that on the second failure)."""
        for message in msg.messages:
            for _ in range(2):
                try:
                    self.receiveMessage(message, sender)
                    break
                except Exception:  # noqa: BLE001 — logged by receiveMessage; one bad message spoils no other
                    continue

    def receiveMsg_PoisonMessage(self, msg, sender) -> None:
        """A message this actor sent crashed its receiver twice: fail the jobs it was about (the
        receiver did so already; a second try finds them ended and changes nothing)."""
        self.fail_jobs_of(msg.poisonMessage, str(msg.details))

    def fail_jobs_of(self, poison, details: str) -> None:
        """Fail the jobs a message that crashed its receiver twice was about, so none stays stuck."""
        cause = (details.strip().splitlines() or ["unknown error"])[-1][:300]
        job_ids = [poison.job_id] if hasattr(poison, "job_id") else list(getattr(poison, "job_ids", ()))
        self.log.error("%s: a %s message crashed its receiver twice (%s); failing jobs %s", self.role,
                       type(poison).__name__, cause, job_ids)
        attempt = getattr(poison, "attempt", None)  # a report about one attempt fails only that one
        for job_id in job_ids:
            ended = jobs.finish(job_id, attempt, JobState.FAILED, clock.utcnow(),
                                reason=f"internal error while handling {type(poison).__name__}: {cause}")
            if ended is not None:
                job_events.ended(self.log, ended[0])
            if ended is not None and ended[1] and self.peers is not None:
                self.job_ended(ended[0])

    def receiveUnrecognizedMessage(self, msg, sender) -> None:
        self.log.warning("%s ignored an unexpected %s message", self.role, type(msg).__name__)

    # --- what several actors do when a job ends or comes back --------------------------------

    def job_ended(self, *ended: jobs.JobRef) -> None:
        """Tell the quota and each service's dispatcher that these jobs no longer hold a slot
        (one message per service and receiver, however many jobs)."""
        by_service: dict[str, list[tuple[int, str | None]]] = {}
        for job in ended:
            by_service.setdefault(job.service, []).append((job.id, job.executor))
        for service, held in by_service.items():
            message = JobEnded(service, tuple(held))
            self.send(self.peers.quota, message)
            dispatcher = self.peers.dispatcher(service)
            if dispatcher is not None:
                self.send(dispatcher, message)

    def job_lost(self, job_id: int, attempt: int, reason: str) -> None:
        """An executor lost this attempt: requeue the job, or fail it after max_attempts or when its
        service is no longer configured."""
        outcome = jobs.requeue_or_fail(job_id, attempt, reason, self.config.max_attempts, clock.utcnow(),
                                       {service.name for service in self.config.services})
        if outcome is None:
            return
        before, state, after = outcome
        if state is JobState.QUEUED:
            job_events.requeued(self.log, before, reason)
        else:
            job_events.ended(self.log, after)
        self.job_ended(before)
        if state is JobState.QUEUED:
            self.send(self.peers.queue, JobQueued(before.id, before.service, before.user_id, before.portal,
                                                  before.priority, before.group,
                                                  clock.epoch(before.created_at) if before.created_at else None))

    def name(self, msg: Configure) -> str:
        return f"{self.role}:{msg.service}" if msg.service else self.role

    def configured(self, msg: Configure) -> None:
        """Called once the settings arrived."""

    def peers_changed(self) -> None:
        """Called whenever the peers' addresses arrived or changed."""
