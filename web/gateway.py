"""The web layer's door into the actor system.

A Thespian handle shared across Waitress threads hands replies to the wrong thread, so no handle is
shared: each thread keeps its own private context for tells (nothing answers a tell, so nothing can
pile up in it), and every ask opens a fresh one (a late reply would poison the next ask on a reused
context).
"""
from __future__ import annotations

import logging
import threading

from actors.messages import Ping, Pong

log = logging.getLogger(__name__)


class ActorGateway:
    """Tells and asks one fixed actor (the supervisor, which routes on)."""

    def __init__(self, asys, address):
        self.asys = asys
        self.address = address
        self.local = threading.local()

    def tell(self, message) -> bool:
        """Send without waiting; False if the actor system could not take it."""
        try:
            context = getattr(self.local, "context", None)
            if context is None:
                # NOTE: entered and never left: it lives as long as its (pooled) web thread.
                context = self.local.context = self.asys.private().__enter__()
            context.tell(self.address, message)
            return True
        except Exception:  # noqa: BLE001 — the database holds the truth; the sweeps recover
            self.local.context = None
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
