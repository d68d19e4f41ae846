"""Running a Falcon app under Waitress until SIGTERM or Ctrl-C, with the actor system around it.

`run_node` is the whole life of a node, shared by run_server.py and run_client.py: bind the
database, start a fresh actor system, configure the node's top actor, serve, and on the way out
(signal, error or Ctrl-C) shut the actor system down so no process is left behind.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Callable

import waitress

from actors import system
from web.gateway import ActorGateway

log = logging.getLogger("orchestrator")
START_TIMEOUT = 30.0


_MAIN_PID = os.getpid()


def _interrupt(signum, frame):
    if os.getpid() != _MAIN_PID:
        # NOTE: actor processes are forked from this one and inherit this handler; there the
        # signal keeps its default meaning, and the node's shutdown path stops them.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise KeyboardInterrupt


def install_signal_handlers() -> None:
    """In the node's main process, SIGTERM behaves as Ctrl-C: unwind through every `finally`."""
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def run_node(*, state_dir: str, admin_port: int, actor_class: str, configure_message,
             make_app: Callable[[ActorGateway], object], host: str, port: int, threads: int,
             max_body: int, name: str) -> int:
    asys = None
    try:
        asys = system.start(state_dir, admin_port)
        address = asys.createActor(actor_class)
        reply = asys.ask(address, configure_message, START_TIMEOUT)
        if reply is None or type(reply).__name__ != "Pong":
            log.error("%s: the actors did not start (got %r)", name, reply)
            return 1
        app = make_app(ActorGateway(asys, address))
        server = waitress.create_server(app, host=host, port=port, threads=threads, ident=name,
                                        max_request_body_size=max_body, channel_timeout=60)
        log.info("%s listening on http://%s:%d", name, host, port)
        try:
            server.run()
        except KeyboardInterrupt:
            log.info("%s stopping", name)
        finally:
            server.close()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if asys is not None:
            system.stop(asys, state_dir)
