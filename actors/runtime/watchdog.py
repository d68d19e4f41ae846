"""A node's actor system as its main process holds it: started with its top actor, watched, rebuilt.

Runs in the node's main process (server or executor). `NodeActors` starts the actor system
(actors/runtime/system.py) and the node's top actor (the SupervisorActor, or the ExecutorActor), and
stops them. The `Watchdog` thread keeps them working, judging liveness by processes (pid and start
time), never by a slow answer: a busy actor must not be replaced while it still works, or two of
them would run.
- The top actor's process is gone: Thespian re-creates no actor by itself, and this one has no
  parent actor to do it; the watchdog creates a new one, which rebuilds its state from the database.
- The admin or the logger is gone (kill -9, the OOM killer): Thespian does not recover from either
  (the admin's actors die with it; without its logger the admin stops), so the watchdog rebuilds the
  whole actor system: it stops what is left of it, starts a fresh one and a new top actor. Meanwhile
  the gateway is closed: requests that need the actors are answered 503 with Retry-After, and posts
  wait to go to the new system. Every job then finishes, from the database, as after a restart.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from thespian.actors import ActorExitRequest

from actors.messages import Pong
from actors.runtime import lifeline, system
from actors.runtime.processes import start_time
from web.gateway import ActorGateway

log = logging.getLogger("orchestrator")
START_TIMEOUT = 30.0
WATCHDOG_SECONDS = 0.5
#: How long a rebuild waits for the web requests under way to be answered before it forks.
QUIESCE_SECONDS = 5.0


class StartFailed(Exception):
    """The top actor did not answer its configuration."""


class NodeActors:
    """The actor system of one node and its top actor."""

    def __init__(self, state_dir: str, admin_port: int, actor_class: str, configure_message):
        self.state_dir, self.admin_port = state_dir, admin_port
        self.actor_class, self.configure_message = actor_class, configure_message
        self.asys = None
        self.address = None
        #: The top actor's (pid, start time).
        self.top: tuple[int, int | None] = (0, None)

    def start_system(self) -> None:
        """Start a fresh actor system (stopping whatever is left of an earlier one of this node)."""
        self.asys = system.start(self.state_dir, self.admin_port)

    def start_top(self) -> None:
        """Create the top actor and configure it; raises StartFailed if it does not answer Pong."""
        with self.asys.private() as context:
            address = context.createActor(self.actor_class)
            reply = context.ask(address, self.configure_message, START_TIMEOUT)
            if not isinstance(reply, Pong):
                context.tell(address, ActorExitRequest())  # never leave a half-started one
                raise StartFailed(f"the {self.top_name} did not start (got {reply!r})")
        pid = dict(reply.processes).get(reply.who, 0)
        self.address, self.top = address, (pid, start_time(pid))

    @property
    def top_name(self) -> str:
        return self.actor_class.rpartition(".")[2]

    def lost(self) -> str | None:
        """Which process of the actor system is gone: "admin", "logger", "top", or None."""
        for role in ("admin", "logger"):
            record = lifeline.read_record(self.state_dir, role)
            # NOTE: no record yet: the process is starting (the logger records itself a moment late).
            if record is not None and start_time(record[0]) != record[1]:
                return role
        pid, started = self.top
        return None if started is not None and start_time(pid) == started else "top"

    def stop(self) -> None:
        if self.asys is not None:
            system.stop(self.asys, self.state_dir)


class Watchdog:
    """Checks the node's actor processes every WATCHDOG_SECONDS and repairs what is gone."""

    def __init__(self, actors: NodeActors, gateway: ActorGateway, idle: Callable[[], bool] = lambda: True):
        self.actors, self.gateway = actors, gateway
        #: No web request is being answered (the rebuild forks only then: see _rebuild).
        self.idle = idle
        self.done = threading.Event()  # set only when the node shuts its actor system down
        self.lock = threading.Lock()  # held while repairing, so a stop waits for a rebuild to end
        self.thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """No more repairs; returns once a repair under way has ended."""
        self.done.set()
        with self.lock:
            pass

    def _run(self) -> None:
        while not self.done.wait(WATCHDOG_SECONDS):
            lost = self.actors.lost()
            if lost is None:
                continue
            with self.lock:
                if self.done.is_set():
                    return
                try:
                    if lost == "top" and self._new_top():
                        continue
                    self._rebuild(lost)
                except Exception:  # noqa: BLE001 — try again on the next round
                    log.exception("repairing the actor system failed; trying again")

    def _new_top(self) -> bool:
        log.error("the %s process is gone; creating a new one", self.actors.top_name)
        try:
            self.actors.start_top()
        except Exception as exc:  # noqa: BLE001 — the admin itself may be failing: rebuild it all
            log.error("creating a new %s failed (%s)", self.actors.top_name, exc)
            return False
        self.gateway.reopen(self.actors.asys, self.actors.address)
        return True

    def _rebuild(self, lost: str) -> None:
        what = {"admin": "its admin process", "logger": "its logger process"}.get(lost, "its top actor")
        log.error("the actor system lost %s; starting a new one (requests needing it get 503 meanwhile)", what)
        self.gateway.close(f"the node's actor system is being restarted ({what} was lost)")
        # NOTE: the new system's processes are forked from this one, which now has web threads with
        # open database connections: a fork while one of them holds a lock (SQLite's, Pony's, a
        # stream's) would leave that lock held for ever in every actor. Closed, the gateway refuses
        # every request; fork once those under way have been answered.
        deadline = time.monotonic() + QUIESCE_SECONDS
        while not self.idle() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.actors.start_system()
        self.actors.start_top()
        self.gateway.reopen(self.actors.asys, self.actors.address)
        log.info("the actor system runs again (%s pid %d)", self.actors.top_name, self.actors.top[0])
