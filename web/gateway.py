"""The web layer's door into the actor system.

A Thespian handle shared across Waitress threads hands replies to the wrong thread, so no handle is
shared: each thread keeps its own private context for tells (nothing answers a tell, so nothing can
pile up in it), and every ask opens a fresh one (a late reply would poison the next ask on a reused
context).

`post` names the role a message is for ("queue", "retriever"): it then goes straight to that actor,
whose address the supervisor gives out (`Directory`), instead of through the supervisor. An
address is used only while its process is alive; when it is not (the actor is being re-created),
the message goes through the supervisor as before and the directory is asked again. Posts are
sent by one mailer thread, and what piled up for one role while it sent goes as one `Batch`: a
Thespian message costs about a millisecond of CPU, so a burst of uploads costs a few, not one each.
"""
from __future__ import annotations

import logging
import queue
import threading
import time

from actors.messages import Batch, Directory, Forward, Ping, Pong, Routes

log = logging.getLogger(__name__)
#: The directory is asked again this often even when every address in it still runs (a backstop
#: against a re-used pid), and at most this often while an actor is being re-created.
ROUTES_MAX_AGE = 10.0
ROUTES_RETRY_SECONDS = 0.05
ROUTES_TIMEOUT = 0.5
#: Most messages the mailer puts in one Batch.
MAX_BATCH = 200


class ActorGateway:
    """Tells and asks one fixed actor (the supervisor, which routes on)."""

    def __init__(self, asys, address):
        self.asys = asys
        self.address = address
        self.local = threading.local()
        self.routes: dict[str, tuple[object, int]] = {}
        self.routes_asked = float("-inf")
        self.routes_lock = threading.Lock()
        #: (role, message) posted and not yet sent, in memory only: the database holds the truth.
        self.unsent: queue.SimpleQueue = queue.SimpleQueue()
        self.mailer: threading.Thread | None = None
        self.mailer_lock = threading.Lock()
        #: Bumped when the actor system is replaced: each thread's context belongs to one system.
        self.generation = 0
        #: Why the actors cannot be reached now (a rebuild is under way); None when they can.
        self.closed: str | None = None
        self.opened = threading.Event()
        self.opened.set()

    def close(self, why: str) -> None:
        """The actor system is gone: refuse what needs it (see `closed`) until `reopen`."""
        self.closed = why
        self.opened.clear()

    def reopen(self, asys, address) -> None:
        """Talk to `address` of `asys` from now on (a new top actor, or a whole new system)."""
        with self.routes_lock:
            if asys is not self.asys:
                self.asys = asys
                self.generation += 1
            self.address = address
            self.routes, self.routes_asked = {}, float("-inf")
        self.closed = None
        self.opened.set()

    def tell(self, message, address=None) -> bool:
        """Send without waiting (to the top actor, or `address`); False if the actor system could
        not take it."""
        try:
            context = getattr(self.local, "context", None)
            if context is None or self.local.generation != self.generation:
                self.local.generation = self.generation
                # NOTE: entered and never left: it lives as long as its (pooled) web thread.
                context = self.local.context = self.asys.private().__enter__()
            context.tell(address or self.address, message)
            return True
        except Exception:  # noqa: BLE001 — the database holds the truth; the sweeps recover
            self.local.context = None
            log.exception("could not hand %s to the actors", type(message).__name__)
            return False

    def post(self, message, role: str) -> None:
        """Send `message` to `role` soon, without waiting (the database already holds the truth)."""
        if self.mailer is None:
            with self.mailer_lock:
                if self.mailer is None:
                    self.mailer = threading.Thread(target=self._mail, name="actor-mailer", daemon=True)
                    self.mailer.start()
        self.unsent.put((role, message))

    def _mail(self) -> None:
        while True:
            waiting = [self.unsent.get()]
            self.opened.wait()  # NOTE: held while the actor system is rebuilt, then sent to the new one
            while len(waiting) < MAX_BATCH and not self.unsent.empty():
                waiting.append(self.unsent.get_nowait())
            by_role: dict[str, list] = {}
            for role, message in waiting:
                by_role.setdefault(role, []).append(message)
            for role, messages in by_role.items():
                message = messages[0] if len(messages) == 1 else Batch(tuple(messages))
                address = self.route(role)
                # NOTE: through the supervisor (the role's actor is being re-created), it says whom for.
                self.tell(message if address is not self.address else Forward(role, message), address)

    def route(self, role: str):
        """The address of `role` if its process runs, else the supervisor's (which routes on)."""
        entry = self.routes.get(role)
        if entry is None or not _running(entry[1]) or time.monotonic() - self.routes_asked > ROUTES_MAX_AGE:
            self.ask_routes()
            entry = self.routes.get(role)
        return entry[0] if entry is not None and _running(entry[1]) else self.address

    def ask_routes(self) -> None:
        if not self.routes_lock.acquire(blocking=False):
            return  # another thread is asking; this tell goes through the supervisor
        try:
            if time.monotonic() - self.routes_asked < ROUTES_RETRY_SECONDS:
                return
            self.routes_asked = time.monotonic()
            reply = self.ask(Directory(), ROUTES_TIMEOUT)
            if isinstance(reply, Routes):
                self.routes = {role: (address, pid) for role, address, pid in reply.entries}
        finally:
            self.routes_lock.release()

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


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a killed actor stays one until it is reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False
