"""What every server actor shares: the Configure/Peers hand-shake, Ping, and logging of strays.

Actors do no work in `__init__` (Thespian's rule): they start acting on `Configure`, and learn their
peers' addresses from `Peers`, which the supervisor sends again whenever one of them is re-created.
"""
from __future__ import annotations

import logging
import os

from thespian.actors import ActorTypeDispatcher

from actors.lifeline import die_with_parent
from actors.messages import ActorStarted, Configure, JobEnded, JobQueued, Peers, Ping, Pong
from storage import database, jobs
from storage.clock import utcnow
from storage.models import db
from storage.states import JobState


class ServerActor(ActorTypeDispatcher):
    """Base of the server's actors; subclasses override `configured` and `peers_changed`."""

    role = "actor"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.config = None
        self.peers: Peers | None = None
        self.stopping = False
        self.log = logging.getLogger(f"orchestrator.{self.role}")

    def receiveMsg_Configure(self, msg: Configure, sender) -> None:
        die_with_parent()
        self.config = msg.config
        database.bind(db, msg.config.database_url, create_tables=False)
        self.configured(msg)
        self.send(sender, ActorStarted(self.name(msg), os.getpid()))

    def receiveMsg_Peers(self, msg: Peers, sender) -> None:
        self.peers = msg
        self.peers_changed()

    def receiveMsg_Ping(self, msg: Ping, sender) -> None:
        self.send(sender, Pong(self.role))

    def receiveMsg_ActorExitRequest(self, msg, sender) -> None:
        self.stopping = True  # Thespian stops the actor after this returns

    def receiveMsg_PoisonMessage(self, msg, sender) -> None:
        self.log.error("%s: a %s message crashed its receiver twice: %s", self.role,
                       type(msg.poisonMessage).__name__, msg.details)

    def receiveUnrecognizedMessage(self, msg, sender) -> None:
        self.log.warning("%s ignored an unexpected %s message", self.role, type(msg).__name__)

    # --- what several actors do when a job ends or comes back --------------------------------

    def job_ended(self, job: jobs.JobRef) -> None:
        """Tell the quota and the service's dispatcher that `job` no longer holds a slot."""
        ended = JobEnded(job.service, job.id, job.executor)
        self.send(self.peers.quota, ended)
        dispatcher = self.peers.dispatcher(job.service)
        if dispatcher is not None:
            self.send(dispatcher, ended)

    def job_lost(self, job_id: int, attempt: int, reason: str) -> None:
        """An executor lost this attempt: requeue the job, or fail it after max_attempts."""
        outcome = jobs.requeue_or_fail(job_id, attempt, reason, self.config.max_attempts, utcnow())
        if outcome is None:
            return
        before, state = outcome
        self.log.warning("job %d: %s; %s", job_id, reason, "queued again" if state is JobState.QUEUED else "failed")
        self.job_ended(before)
        if state is JobState.QUEUED:
            self.send(self.peers.queue, JobQueued(before.id, before.service, before.user_id))

    def name(self, msg: Configure) -> str:
        return f"{self.role}:{msg.service}" if msg.service else self.role

    def configured(self, msg: Configure) -> None:
        """Called once the settings arrived."""

    def peers_changed(self) -> None:
        """Called whenever the peers' addresses arrived or changed."""
