"""WebhookActor: sends the webhooks of the outbox (storage/webhooks.py), at least once each.

Accepts: WakeupMessage (its own timer: every POLL_SECONDS while sending, IDLE_POLL_SECONDS when
nothing was due). Sends nothing to other actors.
Started by the supervisor when `[server] webhook_hosts` is set.

Why an actor of its own: its HTTP calls go to hosts outside the cluster, which may be slow, dead or
hostile; in a process of its own they cannot hold up dispatch, retrieval or the web layer, and a
crash here is re-created by the supervisor like any other. The outbox is the database, so nothing
is lost with the process: an unfinished delivery is due again after a restart (its attempt counted
or not, it is sent again: at least once; the `webhook-id` lets a receiver drop the repeat).

Each portal has its own few threads (PER_PORTAL), so a slow receiver of one portal delays no other
portal's webhooks. A job's webhooks are delivered in the order of its moves: its next one is not
sent before the previous one was delivered or given up (a Running being retried holds back the
job's Completed). Each carries the job's view as it is when sent, so a late Running may show the
job ended already; its `type` names the move. A thread makes one attempt
(actors/server/webhook_post.py) and stores its outcome; a failure, or any error in the attempt, is
tried again with exponential backoff (`webhook_backoff_seconds`, doubling, at most an hour) until
`webhook_retry_hours` after the move, then given up. Events: webhook_delivered, webhook_failed,
webhook_gave_up.
"""
from __future__ import annotations

import logging
import queue
from datetime import datetime, timedelta

from thespian.actors import WakeupMessage

from actors.messages import Configure
from actors.server import webhook_post
from actors.server.base import ServerActor
from actors.server.parallel import CallPool
from conf.logs import event
from storage import clock, webhooks
from storage.jobs import EVERY_PORTAL

#: How often the outbox is read for due deliveries (an indexed query per portal: cheap) while
#: webhooks are being sent, and how often once none was due nor in flight at the last poll.
POLL_SECONDS = 0.25
IDLE_POLL_SECONDS = 1.0
#: Webhooks of one portal in flight at once.
PER_PORTAL = 4


class WebhookActor(ServerActor):
    role = "webhooks"

    def configured(self, msg: Configure) -> None:
        self.pools: dict[str | None, CallPool] = {}
        #: Deliveries on a thread now: delivery id -> (job, portal); threads put (id, job, rest until)
        #: of those they are done with in `finished` (a thread cannot message the actor).
        self.sending: dict[int, tuple[int, str | None]] = {}
        self.finished: queue.SimpleQueue = queue.SimpleQueue()
        #: Jobs whose last attempt's outcome could not be stored -> when they may be sent again.
        self.resting: dict[int, datetime] = {}
        self.wakeupAfter(POLL_SECONDS)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        busy = True
        try:
            busy = self.send_due()
        finally:
            self.wakeupAfter(POLL_SECONDS if busy else IDLE_POLL_SECONDS)

    def portals(self) -> list[str | None]:
        """Every portal a job's webhooks can belong to: None (no tokens, or a job stored before them),
        an operator's uploads (EVERY_PORTAL) and each portal of [tokens]. Asking each in turn is an
        index seek apiece, where finding the portals with due deliveries would walk them all."""
        return [None, EVERY_PORTAL, *(name for name, _ in self.config.tokens)]

    def send_due(self) -> bool:
        """Start the due deliveries the portals' threads have room for; whether any is on its way."""
        now = clock.utcnow()
        while not self.finished.empty():
            delivery_id, job, rest_until = self.finished.get()
            self.sending.pop(delivery_id, None)
            if rest_until is not None:
                self.resting[job] = rest_until
        self.resting = {job: until for job, until in self.resting.items() if until > now}
        busy: dict[str | None, int] = {}
        for _, portal in self.sending.values():
            busy[portal] = busy.get(portal, 0) + 1
        in_flight = {job for job, _ in self.sending.values()} | set(self.resting)
        for portal in self.portals():
            free = PER_PORTAL - busy.get(portal, 0)
            if free <= 0:
                continue  # that portal's threads are all taken; the other portals' go on
            for delivery in webhooks.due(now, portal, in_flight, free):
                self.sending[delivery.id] = (delivery.job, portal)
                self.pool(portal).start(self.attempt, delivery, self.done)
        return bool(self.sending)

    def pool(self, portal: str | None) -> CallPool:
        if portal not in self.pools:
            self.pools[portal] = CallPool(PER_PORTAL, f"webhooks-{portal or 'default'}")
        return self.pools[portal]

    def done(self, outcome) -> None:
        """On the thread, after `attempt`: the delivery may be picked again; if even its outcome could
        not be stored (e.g. the database locked), its job rests `webhook_backoff_seconds` in memory,
        so that the poll does not send it again at once, four times a second."""
        delivery, _, error = outcome
        rest_until = None
        if error is not None:
            self.log.error("webhook %s of job %d could not be recorded: %s", delivery.webhook_id, delivery.job, error)
            rest_until = clock.utcnow() + timedelta(seconds=self.config.webhook_backoff_seconds)
        self.finished.put((delivery.id, delivery.job, rest_until))

    def attempt(self, delivery: webhooks.Delivery) -> None:
        """On a thread: one attempt, then its outcome stored and logged. Whatever goes wrong in the
        attempt itself is a failed attempt, tried again with backoff like a receiver's 500."""
        config = self.config
        try:
            outcome = self.post_one(delivery)
        except Exception as exc:  # noqa: BLE001 -- any fault: counted, backed off, never a retry loop
            outcome = webhook_post.Outcome(None, f"{exc.__class__.__name__}: {exc}"[:500])
        attempt = delivery.attempts + 1
        fields = dict(job=delivery.job, portal=delivery.portal, url=delivery.url, state=delivery.event,
                      webhook_id=delivery.webhook_id, attempt=attempt, status=outcome.status)
        ended = clock.utcnow()
        if outcome.error is None:
            webhooks.record(delivery.id, ended, outcome.status, None, None)
            event(self.log, "webhook_delivered", **fields)
            return
        retry_at = None if outcome.final else webhooks.next_attempt(
            delivery.created_at, attempt, ended, config.webhook_backoff_seconds, config.webhook_retry_hours)
        webhooks.record(delivery.id, ended, outcome.status, outcome.error, retry_at)
        if retry_at is None:
            event(self.log, "webhook_gave_up", logging.WARNING, **fields, error=outcome.error)
        else:
            event(self.log, "webhook_failed", **fields, error=outcome.error, next_attempt_at=retry_at.isoformat() + "Z")

    def post_one(self, delivery: webhooks.Delivery) -> webhook_post.Outcome:
        secret = self.config.webhook_secret(delivery.portal)
        if secret is None:
            return webhook_post.Outcome(None, "no [webhooks] secret signs this portal's webhooks")
        return webhook_post.post(delivery, secret, self.config.webhook_hosts, self.config.webhook_timeout,
                                 clock.utcnow())
