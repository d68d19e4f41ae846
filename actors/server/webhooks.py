"""WebhookActor: sends the webhooks of the outbox (storage/webhooks.py), at least once each.

Accepts: WakeupMessage (its own timer, every POLL_SECONDS). Sends nothing to other actors.
Started by the supervisor when `[server] webhook_hosts` is set.

Why an actor of its own: its HTTP calls go to hosts outside the cluster, which may be slow, dead or
hostile; in a process of its own they cannot hold up dispatch, retrieval or the web layer, and a
crash here is re-created by the supervisor like any other. The outbox is the database, so nothing
is lost with the process: an unfinished delivery is due again after a restart (its attempt counted
or not, it is sent again: at least once; the `webhook-id` lets a receiver drop the repeat).

Each portal has its own few threads (PER_PORTAL), so a slow receiver of one portal delays no other
portal's webhooks; a job has at most one webhook in flight, so its webhooks leave in the order of its
moves. A thread makes one attempt (actors/server/webhook_post.py) and stores its outcome; a failure
is tried again with exponential backoff (`webhook_backoff_seconds`, doubling, at most an hour) until
`webhook_retry_hours` after the move, then given up. Events: webhook_delivered, webhook_failed,
webhook_gave_up.
"""
from __future__ import annotations

import logging
import queue

from thespian.actors import WakeupMessage

from actors.messages import Configure
from actors.server import webhook_post
from actors.server.base import ServerActor
from actors.server.parallel import CallPool
from conf.logs import event
from storage import clock, webhooks

#: How often the outbox is read for due deliveries (an indexed query: cheap).
POLL_SECONDS = 0.25
#: Webhooks of one portal in flight at once.
PER_PORTAL = 4


class WebhookActor(ServerActor):
    role = "webhooks"

    def configured(self, msg: Configure) -> None:
        self.pools: dict[str | None, CallPool] = {}
        #: Deliveries on a thread now: delivery id -> (job, portal); threads put the ids they are
        #: done with in `finished` (a thread cannot message the actor).
        self.sending: dict[int, tuple[int, str | None]] = {}
        self.finished: queue.SimpleQueue = queue.SimpleQueue()
        self.wakeupAfter(POLL_SECONDS)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender) -> None:
        try:
            self.send_due()
        finally:
            self.wakeupAfter(POLL_SECONDS)

    def send_due(self) -> None:
        while not self.finished.empty():
            self.sending.pop(self.finished.get(), None)
        busy: dict[str | None, int] = {}
        for _, portal in self.sending.values():
            busy[portal] = busy.get(portal, 0) + 1
        in_flight = {job for job, _ in self.sending.values()}
        now = clock.utcnow()
        for portal in webhooks.portals_due(now):
            free = PER_PORTAL - busy.get(portal, 0)
            if free <= 0:
                continue  # that portal's threads are all taken; the other portals' go on
            for delivery in webhooks.due(now, portal, in_flight, free):
                self.sending[delivery.id] = (delivery.job, portal)
                self.pool(portal).start(self.attempt, delivery, self.done)

    def pool(self, portal: str | None) -> CallPool:
        if portal not in self.pools:
            self.pools[portal] = CallPool(PER_PORTAL, f"webhooks-{portal or 'default'}")
        return self.pools[portal]

    def done(self, outcome) -> None:
        """On the thread, after `attempt`: the delivery may be picked again."""
        delivery, _, error = outcome
        if error is not None:
            self.log.error("webhook %s of job %d could not be recorded: %s", delivery.webhook_id, delivery.job, error)
        self.finished.put(delivery.id)

    def attempt(self, delivery: webhooks.Delivery) -> None:
        """On a thread: one attempt, then its outcome stored and logged."""
        config = self.config
        now = clock.utcnow()
        secret = config.webhook_secret(delivery.portal)
        if secret is None:
            outcome = webhook_post.Outcome(None, "no [webhooks] secret signs this portal's webhooks")
        else:
            outcome = webhook_post.post(delivery, secret, config.webhook_hosts, config.webhook_timeout, now)
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
