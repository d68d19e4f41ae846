"""The web layer's door into the actor system.

Every call opens its own private Thespian context: a handle shared across Waitress threads hands
replies to the wrong thread, and a late reply would poison the next ask on a reused one.
"""
from __future__ import annotations

import logging

from actors.messages import Ping, Pong

log = logging.getLogger(__name__)


class ActorGateway:
    """Tells and asks one fixed actor (the supervisor, which routes on)."""

    def __init__(self, asys, address):
        self.asys = asys
        self.address = address

    def tell(self, message) -> bool:
        """Send without waiting; False if the actor system could not take it."""
        try:
            with self.asys.private() as context:
                context.tell(self.address, message)
            return True
        except Exception:  # noqa: BLE001 — the database holds the truth; the sweeps recover
            log.exception("could not hand %s to the actors", type(message).__name__)
            return False

    def ask(self, message, timeout: float = 2.0):
        """The reply, or None when the actor system does not answer in time."""
        try:
            with self.asys.private() as context:
                return context.ask(self.address, message, timeout)
        except Exception:  # noqa: BLE001
            log.exception("actor system did not answer a %s", type(message).__name__)
            return None

    def alive(self, timeout: float = 2.0) -> bool:
        return isinstance(self.ask(Ping(), timeout), Pong)
