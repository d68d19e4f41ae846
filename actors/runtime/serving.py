"""The life of a node: start its actor system, serve its Falcon app under Waitress, stop cleanly.

`run_node` is shared by run_server.py and run_client.py:
- start: stop an actor system a crashed run left, start a fresh one (whose admin stops it if
  this process dies: actors/runtime/lifeline.py), configure the node's top actor, start the
  watchdog (which re-creates the top actor, or the whole actor system, if a process of it dies:
  actors/runtime/watchdog.py), serve;
- stop (SIGTERM, or Ctrl-C): `stopping` is set so new work is refused with 503, then the node waits
  until `settled()` says its work is done (bounded by `settle_seconds`, or not at all), stops
  Waitress and shuts the actor system down, leaving no process behind. A second signal stops at
  once, and so does SIGHUP (the terminal the node ran in was closed).
"""
from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

from actors.runtime.preflight import Refused, cannot_listen
from actors.runtime.watchdog import NodeActors, StartFailed, Watchdog
from conf import logs
from conf.settings import Connections
from web.gateway import ActorGateway

log = logging.getLogger("orchestrator")
_MAIN_PID = os.getpid()
#: A stop signal came while the node started. Kept apart from the KeyboardInterrupt it raises: Python
#: drops an exception raised while it runs a weakref callback or a `__del__` ("Exception ignored in"),
#: and the node would then start serving as if no one had asked it to stop (seen under `make run`).
_stop_asked = threading.Event()


def _interrupt(signum, frame):
    if os.getpid() != _MAIN_PID:
        # NOTE: Thespian's admin is forked from this process and inherits this handler; there the
        # signal keeps its default meaning.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _stop_asked.set()
    raise KeyboardInterrupt


def _unraisable(info) -> None:
    """A KeyboardInterrupt Python dropped is no error to print (its stop is kept, see _stop_asked)."""
    if info.exc_type is not None and issubclass(info.exc_type, KeyboardInterrupt):
        return
    sys.__unraisablehook__(info)


#: The signals that stop a node; SIGHUP (a closed terminal) always stops it at once.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def install_signal_handlers() -> None:
    """Until the node serves, SIGTERM behaves as Ctrl-C: unwind through every `finally`."""
    _stop_asked.clear()
    sys.unraisablehook = _unraisable
    for signum in STOP_SIGNALS:
        signal.signal(signum, _interrupt)


def setup_logging() -> None:
    """INFO as text until the configuration is read (it may then choose another level or format)."""
    logs.configure()


def _json_waitress_errors(max_body: int) -> None:
    """Waitress answers some requests itself (a body over the limit, malformed HTTP) before the app
    runs; make those answers JSON `{title, description}` like every other error."""
    import json

    from waitress import utilities

    def to_response(self, ident=None):
        description = str(self.body)
        if self.code == 413:
            description = f"the request body is larger than {max_body} bytes (max_upload_mb), the most accepted."
        body = json.dumps({"title": self.reason, "description": description}).encode()
        return f"{self.code} {self.reason}", [("Content-Type", "application/json")], body

    utilities.Error.to_response = to_response


class InFlight:
    """WSGI middleware counting the requests being answered."""

    def __init__(self, app):
        self.app = app
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            self.count += 1
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self._done()
            raise
        return _Closing(body, self._done)

    def _done(self) -> None:
        with self.lock:
            self.count -= 1


class _Closing:
    """A response body that reports when the server has finished sending it."""

    def __init__(self, body, done):
        self.body, self.done = body, done

    def __iter__(self):
        return iter(self.body)

    def close(self):
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.done()


class Stopper:
    """The signal handler of a serving node: first signal drains, a second one stops at once."""

    def __init__(self, stopping: threading.Event, settled: Callable[[], bool], settle_seconds: float | None,
                 immediate: tuple[int, ...]):
        self.stopping = stopping
        self.settled = settled
        self.settle_seconds = settle_seconds
        self.immediate = immediate
        #: The main thread must leave serving now; and it has (set by run_node, or `done`).
        self.due, self.served = threading.Event(), threading.Event()
        threading.Thread(target=self._insist, name="stop-insister", daemon=True).start()

    def __call__(self, signum, frame):
        if os.getpid() != _MAIN_PID:
            return _interrupt(signum, frame)
        if self.stopping.is_set() or signum in self.immediate:
            self.stopping.set()
            self.due.set()
            raise KeyboardInterrupt
        log.info("stopping: refusing new work, finishing what is under way")
        self.stopping.set()
        threading.Thread(target=self._finish, name="stopper", daemon=True).start()

    def _finish(self) -> None:
        deadline = None if self.settle_seconds is None else time.monotonic() + self.settle_seconds
        while not self.settled() and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)
        self.due.set()
        _thread.interrupt_main()

    def _insist(self) -> None:
        # NOTE: the KeyboardInterrupt that ends serving may be dropped (see _stop_asked): once a stop
        # is due, ask again each second until the main thread has left serving.
        self.due.wait()
        while not self.served.wait(1.0):
            _thread.interrupt_main()

    def done(self) -> None:
        """The main thread has left serving (the insisting thread ends)."""
        self.served.set()
        self.due.set()


def run_node(*, state_dir: str, admin_port: int, actor_class: str, configure_message,
             make_app: Callable[[ActorGateway, threading.Event], object], host: str, port: int, threads: int,
             max_body: int, name: str, connections: Connections, reserved_for: Callable[[], set[str]], settled: Callable[[ActorGateway, InFlight], bool],
             settle_seconds: float | None, section: str, immediate: tuple[int, ...] = (),
             prepare: Callable[[], None] = lambda: None) -> int:
    """Start the node's actor system, then `prepare()` (database, leftovers), its top actor and its
    web app, and serve until stopped; every process started is stopped before returning.

    A port taken since the node checked it (preflight.free_to_listen) is refused as that check
    would (preflight.Refused, naming `section`'s `port` key)."""
    actors = NodeActors(state_dir, admin_port, actor_class, configure_message)
    watchdog = None
    try:
        actors.start_system()
        # NOTE: after the start, so the processes the actor system forks do not carry what it loads.
        prepare()
        try:
            actors.start_top()
        except StartFailed as exc:
            raise Refused(f"{exc}.") from None
        # NOTE: the web stack is imported only now: every actor process is forked from this one
        # (through the admin), and each would otherwise carry falcon and waitress in its memory.
        from web import connections as http_connections

        gateway = ActorGateway(actors.asys, actors.address)
        stopping = threading.Event()
        app = InFlight(make_app(gateway, stopping))
        _json_waitress_errors(max_body)
        try:
            server = http_connections.create(
                app, host=host, port=port, threads=threads, max_body=max_body, name=name,
                connection_limit=connections.connection_limit, client_timeout=connections.client_timeout,
                per_client=connections.max_connections_per_client, reserved_for=reserved_for)
        except OSError as exc:  # NOTE: taken since the check above, while the actor system started
            raise cannot_listen(host, port, section, exc) from None
        stopper = Stopper(stopping, lambda: settled(gateway, app), settle_seconds, (*immediate, signal.SIGHUP))
        watchdog = Watchdog(actors, gateway, idle=lambda: app.count == 0)
        for signum in STOP_SIGNALS:
            signal.signal(signum, stopper)
        log.info("%s listening on http://%s:%d", name, host, port)
        try:
            if _stop_asked.is_set():  # while it started, and its KeyboardInterrupt was dropped
                raise KeyboardInterrupt
            server.run()
        except KeyboardInterrupt:
            log.info("%s stopping", name)
        finally:
            stopper.done()
            server.close()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        # NOTE: a further signal must not cut the shutdown short and leave actors behind.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if watchdog is not None:
            watchdog.stop()
        actors.stop()
