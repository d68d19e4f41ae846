"""No process of a node's actor system outlives the node.

Runs in the processes of the actor system: the admin, the logger and every actor.
- Thespian forks each actor from its parent actor (or the admin), and the logger from the admin.
  If a parent dies, its children would run on with nobody to stop them; PR_SET_PDEATHSIG makes
  the kernel kill them instead (`die_with_parent`, called first thing in each actor and in the
  logger).
- The admin itself daemonizes (setsid and a double fork), so it has no parent to die with. It
  watches the node's main process instead (`watch_main`): when that process is gone (kill -9 of the
  whole process group, a closed terminal's SIGHUP, the OOM killer), the admin shuts the actor
  system down (actors stop their scripts and report), and exits at the latest after
  HARD_STOP_SECONDS, taking every actor with it. The admin also records its pid and start time in
  the node's data folder, so the next start can stop an admin that is still running; the logger
  records its own, so the main process's watchdog can tell when either is gone (web/watchdog.py).

`configure(state_dir)` is called by the main process before it starts the actor system; the
forked admin inherits what it recorded.
"""
from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import sys
import threading
import time

from actors.runtime.processes import start_time

_PR_SET_PDEATHSIG = 1
#: Where the admin and the logger record their (pid, start time), in the node's data folder.
PID_FILES = {"admin": "actor-admin.pid", "logger": "actor-logger.pid"}
#: How long the admin gives the actor system to stop by itself before it exits regardless.
HARD_STOP_SECONDS = 8.0

log = logging.getLogger("orchestrator.lifeline")

#: (main pid, its start time, the node's data folder, the admin port), recorded by the main process.
_node: tuple[int, int | None, str, int] | None = None


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent exits (Linux; no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the request took effect


def configure(state_dir: str, admin_port: int) -> None:
    """Main process, before starting the actor system: what its admin will watch and record."""
    global _node
    _node = (os.getpid(), start_time(os.getpid()), state_dir, admin_port)


def read_record(state_dir: str, role: str) -> tuple[int, int] | None:
    """(pid, start time) the admin or logger of this node recorded, whether or not it still runs."""
    try:
        with open(os.path.join(state_dir, PID_FILES[role])) as handle:
            pid, started = (int(part) for part in handle.read().split())
    except (OSError, ValueError):
        return None
    return pid, started


def recorded(state_dir: str, role: str) -> tuple[int, int] | None:
    """(pid, start time) of the admin or logger a run of this node recorded, if that process still runs."""
    record = read_record(state_dir, role)
    return record if record is not None and start_time(record[0]) == record[1] else None


def forget(state_dir: str) -> None:
    for name in PID_FILES.values():
        try:
            os.remove(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass


def _record(role: str) -> None:
    me = os.getpid()
    path = os.path.join(_node[2], PID_FILES[role])
    with open(f"{path}.tmp", "w") as handle:
        handle.write(f"{me} {start_time(me)}")
    os.replace(f"{path}.tmp", path)


def admin_started() -> None:
    """In the admin process: record it, and stop the actor system once the main process is gone."""
    if _node is None:
        return
    _record("admin")
    threading.Thread(target=_watch_main, args=_node[:2], name="lifeline", daemon=True).start()


def logger_started() -> None:
    """In the logger process: die with the admin, and record this process."""
    die_with_parent()
    if _node is not None:
        _record("logger")


def _watch_main(main_pid: int, main_started: int | None) -> None:
    _wait_for_exit(main_pid, main_started)
    log.error("the node's main process %d is gone; stopping its actor system", main_pid)
    threading.Timer(HARD_STOP_SECONDS, os._exit, args=(1,)).start()
    try:
        _shutdown_from_inside()
    finally:
        os._exit(0)


def _wait_for_exit(pid: int, started: int | None) -> None:
    """Block until process `pid` (the one that started at `started`) has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    if start_time(pid) != started:
        return  # gone already (or the pid belongs to someone else now)
    if pidfd is not None:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while not poller.poll():
            pass
        os.close(pidfd)
        return
    while start_time(pid) == started:  # no pidfd (old kernel): poll the process table
        time.sleep(0.2)


def _shutdown_from_inside() -> None:
    """Ask this admin, over its own port, to shut the actor system down as `ActorSystem.shutdown` does."""
    from actors.runtime import system

    system.connect(_node[3]).shutdown()
