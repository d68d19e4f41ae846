"""Starting and stopping the Thespian actor system of one node (server or executor).

Owns the rules the stack imposes: the system is always created explicitly as `multiprocTCPBase`
advertised on loopback; the admin port in use is remembered in the node's data folder, so a start
first shuts down an admin a crashed run left behind instead of joining it; and stopping shuts the
whole system down, admin and every actor process. A lock file keeps a starting node and the
guardian of its crashed predecessor from clearing and starting at the same time.
"""
from __future__ import annotations

import fcntl
import logging
import os
import random
import socket
import time
import uuid
from contextlib import contextmanager

from thespian.actors import ActorSystem, InvalidActorAddress
from thespian.system.transport.IPBase import IPActorAddress

log = logging.getLogger(__name__)
PORT_FILE = "actor-admin.port"
LOCK_FILE = "actor-admin.lock"
#: Automatic admin ports come from below the kernel's ephemeral range, so that no outgoing
#: connection can hold the port between choosing it and binding it.
AUTO_PORTS = (10000, 30000)
START_TRIES = 5
#: How long a stop waits for the admin to close its port after a shutdown.
STOP_WAIT_SECONDS = 3.0

# NOTE: Thespian advertises the host's primary address unless told otherwise; keep it on loopback.
os.environ.setdefault("THESPIAN_BASE_IPADDR", "127.0.0.1")


def _listen_on_loopback_only() -> None:
    """Make Thespian's sockets listen on loopback instead of every interface.

    Its admin and actors exchange pickles, so anyone who reaches their ports could run code as the
    node. Nodes talk to each other over HTTP only; the actor system never needs to be reachable
    from another host. Thespian binds "external" addresses to '' (all interfaces); bind them to
    the address they advertise, which is loopback here.
    """
    original = IPActorAddress.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.bindname[0] == "" and self.sockname[0].startswith("127."):
            self.bindname = self.sockname

    IPActorAddress.__init__ = __init__


_listen_on_loopback_only()

LOG_DEFS = {
    "version": 1,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": "INFO"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {"urllib3": {"level": "WARNING"}},
}


def free_port(low: int = AUTO_PORTS[0], high: int = AUTO_PORTS[1]) -> int:
    """A port nothing listens on, outside the ephemeral range."""
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port between {low} and {high}")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _system(port: int) -> ActorSystem:
    # NOTE: transientUnique keeps Thespian from handing back a process-wide singleton.
    return ActorSystem("multiprocTCPBase", capabilities={"Admin Port": port}, logDefs=LOG_DEFS,
                       transientUnique=True)


@contextmanager
def _locked(state_dir: str):
    os.makedirs(state_dir, exist_ok=True)
    with open(os.path.join(state_dir, LOCK_FILE), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _record(state_dir: str) -> tuple[int, str] | None:
    """(admin port, token of the run that started it), as recorded in `state_dir`."""
    try:
        with open(os.path.join(state_dir, PORT_FILE)) as handle:
            port, _, token = handle.read().strip().partition(" ")
            return int(port), token
    except (OSError, ValueError):
        return None


def _clear(state_dir: str, port: int) -> None:
    if _listening(port):
        log.warning("shutting down the actor system a previous run left on admin port %d", port)
        _system(port).shutdown()
    try:
        os.remove(os.path.join(state_dir, PORT_FILE))
    except FileNotFoundError:
        pass


def clear_stale(state_dir: str, only_token: str | None = None) -> None:
    """Shut down the actor system recorded in `state_dir`; with `only_token`, only if it is that run's."""
    with _locked(state_dir):
        record = _record(state_dir)
        if record is not None and only_token in (None, record[1]):
            _clear(state_dir, record[0])


def start(state_dir: str, admin_port: int = 0) -> tuple[ActorSystem, str]:
    """Clear a stale system, then start a fresh one on `admin_port` (0: a free port).

    Returns:
        (the system, a token naming this run's record, for its guardian).
    """
    with _locked(state_dir):
        stale = _record(state_dir)
        if stale is not None:
            _clear(state_dir, stale[0])
        for attempt in range(1 if admin_port else START_TRIES):
            port = admin_port or free_port()
            if _listening(port):
                raise RuntimeError(f"actor_admin_port {port} is already in use by another process.")
            try:
                asys = _system(port)
            except InvalidActorAddress:
                if admin_port or attempt == START_TRIES - 1:
                    raise
                continue  # the port was taken meanwhile: try another
            token = uuid.uuid4().hex
            with open(os.path.join(state_dir, PORT_FILE), "w") as handle:
                handle.write(f"{port} {token}")
            return asys, token
    raise RuntimeError("the actor system could not be started")


def stop(asys: ActorSystem, state_dir: str) -> None:
    """Shut the system down; forget its port only once the admin is really gone."""
    record = _record(state_dir)
    try:
        asys.shutdown()
    finally:
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while record and _listening(record[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        if record and _listening(record[0]):
            log.error("the actor system on admin port %d did not stop; the next start clears it", record[0])
        else:
            try:
                os.remove(os.path.join(state_dir, PORT_FILE))
            except OSError:
                pass
