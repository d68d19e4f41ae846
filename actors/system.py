"""Starting and stopping the Thespian actor system of one node (server or executor).

Owns the rules the stack imposes: the system is always created
explicitly as `multiprocTCPBase` on loopback; the admin port in use is remembered in the node's data
folder, so a start first shuts down an admin a crashed run left behind instead of joining it; and
stopping shuts the whole system down, admin and every actor process.
"""
from __future__ import annotations

import logging
import os
import socket

from thespian.actors import ActorSystem

log = logging.getLogger(__name__)
PORT_FILE = "actor-admin.port"

# NOTE: Thespian advertises the host's primary address unless told otherwise; keep it on loopback.
os.environ.setdefault("THESPIAN_BASE_IPADDR", "127.0.0.1")

LOG_DEFS = {
    "version": 1,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": "INFO"}},
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {"urllib3": {"level": "WARNING"}},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _system(port: int) -> ActorSystem:
    # NOTE: transientUnique keeps Thespian from handing back a process-wide singleton.
    return ActorSystem("multiprocTCPBase", capabilities={"Admin Port": port}, logDefs=LOG_DEFS,
                       transientUnique=True)


def clear_stale(state_dir: str) -> None:
    """Shut down an actor system that a crashed run of this node left running."""
    path = os.path.join(state_dir, PORT_FILE)
    try:
        with open(path) as handle:
            port = int(handle.read().strip())
    except (OSError, ValueError):
        return
    if _listening(port):
        log.warning("shutting down the actor system a previous run left on admin port %d", port)
        _system(port).shutdown()
    os.remove(path)


def start(state_dir: str, admin_port: int = 0) -> ActorSystem:
    """Clear a stale system, then start a fresh one on `admin_port` (0: any free port)."""
    os.makedirs(state_dir, exist_ok=True)
    clear_stale(state_dir)
    port = admin_port or free_port()
    if _listening(port):
        raise RuntimeError(f"actor_admin_port {port} is already in use by another process.")
    with open(os.path.join(state_dir, PORT_FILE), "w") as handle:
        handle.write(str(port))
    return _system(port)


def stop(asys: ActorSystem, state_dir: str) -> None:
    """Shut the system down and forget its port."""
    try:
        asys.shutdown()
    finally:
        try:
            os.remove(os.path.join(state_dir, PORT_FILE))
        except OSError:
            pass
