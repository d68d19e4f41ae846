"""Starting and stopping the Thespian actor system of one node (server or executor).

Runs in the node's main process. Owns the rules the stack imposes: the system is always created
explicitly as `multiprocTCPBase`, listening and advertised on loopback only; every frame it
exchanges is signed with a key made for this run (actors/runtime/frame_auth.py); its admin stops the
system when the main process dies (actors/runtime/lifeline.py). A start first stops an admin that a
crashed run left behind (its pid is recorded in the node's data folder) and waits until its port
is free, instead of joining it; stopping shuts the whole system down, admin and every actor
process. A lock file keeps two starts of the same node from clearing and starting at once.
"""
from __future__ import annotations

import fcntl
import logging
import os
import random
import signal
import socket
import time
from contextlib import contextmanager

from thespian.actors import ActorSystem, InvalidActorAddress
from thespian.system import multiprocCommon
from thespian.system.transport.IPBase import IPActorAddress

from actors.runtime import frame_auth
from actors.runtime import lifeline
from actors.runtime.preflight import Refused
from actors.runtime.processes import start_time
from conf import logs

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


def _tie_to_the_node() -> None:
    """The admin watches the node's main process; the logger dies with the admin (lifeline.py)."""
    admin_run = multiprocCommon.MultiProcAdmin.run

    def run(self):
        lifeline.admin_started()
        return admin_run(self)

    multiprocCommon.MultiProcAdmin.run = run
    start_logger = multiprocCommon.startupASLogger

    def startup_logger(*args, **kwargs):
        lifeline.logger_started()
        return start_logger(*args, **kwargs)

    multiprocCommon.startupASLogger = startup_logger


_tie_to_the_node()

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


def connect(port: int) -> ActorSystem:
    """A handle on the actor system whose admin listens on `port` (started, or joined: the frames of
    this process must be signed with that system's key)."""
    # NOTE: transientUnique keeps Thespian from handing back a process-wide singleton. Its logger
    # process writes the actors' lines as the node's main process writes its own (conf/logs.py).
    return ActorSystem("multiprocTCPBase", capabilities={"Admin Port": port}, logDefs=logs.actor_system_config(),
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


def _recorded_port(state_dir: str) -> int | None:
    try:
        with open(os.path.join(state_dir, PORT_FILE)) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_closed(port: int, seconds: float) -> bool:
    """Wait until nothing listens on `port` (a stopping admin's children hold its socket a moment)."""
    deadline = time.monotonic() + seconds
    while _listening(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _stop_stale(state_dir: str) -> None:
    """Stop the actor system a crashed run of this node left running, and wait for its port."""
    admin = lifeline.recorded(state_dir, "admin")
    port = _recorded_port(state_dir)
    if admin is not None:
        log.warning("stopping the actor system a previous run left running (admin pid %d)", admin[0])
        # NOTE: its actors die with it (PR_SET_PDEATHSIG), and their scripts with them.
        try:
            os.kill(admin[0], signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while start_time(admin[0]) == admin[1] and time.monotonic() < deadline:
            time.sleep(0.02)
    if port is not None:
        _wait_closed(port, STOP_WAIT_SECONDS)
    lifeline.forget(state_dir)
    try:
        os.remove(os.path.join(state_dir, PORT_FILE))
    except FileNotFoundError:
        pass


def start(state_dir: str, admin_port: int = 0) -> ActorSystem:
    """Stop a stale system, then start a fresh one on `admin_port` (0: a free port)."""
    with _locked(state_dir):
        _stop_stale(state_dir)
        frame_auth.use_key(frame_auth.new_key())
        for attempt in range(1 if admin_port else START_TRIES):
            port = admin_port or free_port()
            if not _wait_closed(port, STOP_WAIT_SECONDS if admin_port else 0):
                if admin_port:
                    raise Refused(f"actor_admin_port {port} is already in use by another process; "
                                  f"pick another, or 0 for any free port.")
                continue
            lifeline.configure(state_dir, port)
            try:
                asys = connect(port)
            except InvalidActorAddress:
                if admin_port or attempt == START_TRIES - 1:
                    raise
                continue  # the port was taken meanwhile: try another
            with open(os.path.join(state_dir, PORT_FILE), "w") as handle:
                handle.write(str(port))
            return asys
    raise RuntimeError("the actor system could not be started")


def stop(asys: ActorSystem, state_dir: str) -> None:
    """Shut the system down; forget it only once its admin port is closed."""
    port = _recorded_port(state_dir)
    try:
        asys.shutdown()
    finally:
        if port is not None and not _wait_closed(port, STOP_WAIT_SECONDS):
            log.error("the actor system on admin port %d did not stop; the next start stops it", port)
        else:
            lifeline.forget(state_dir)
            try:
                os.remove(os.path.join(state_dir, PORT_FILE))
            except OSError:
                pass
