"""A node's refusals to start: each one sentence on stderr and exit code 2, never a traceback.

Run in each node's main process (run_server.py, run_client.py) before anything else: it imports
the standard library only, so that it can still say what is wrong when the node's dependencies are
not installed for the interpreter it was started with. It owns the checks that turn the usual
start-up failures (a port already taken, a data folder that cannot be written) into `Refused`.
"""
from __future__ import annotations

import errno
import os
import socket
import sys
import tempfile
from typing import Callable


class Refused(Exception):
    """The node cannot start; the message is one sentence for the operator."""


def refusing(program: str, main: Callable[[], int]) -> int:
    """Run `main`; a `Refused` or a missing package becomes one sentence on stderr and exit code 2,
    and Ctrl-C before the node serves (run_node handles it after) exit code 130, quietly."""
    try:
        return main()
    except KeyboardInterrupt:
        return 130
    except Refused as exc:
        print(f"{program}: {exc}", file=sys.stderr)
    except ModuleNotFoundError as exc:
        print(f"{program}: the Python package {exc.name!r} is not installed for {sys.executable}; "
              f"start the node with `make run` (which installs it into .venv), or with .venv/bin/python.",
              file=sys.stderr)
    return 2


def writable_folder(key: str, folder: str) -> None:
    """Create `folder` (named by the configuration key `key`) if needed and prove it can be written."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise Refused(f"{key} {folder} cannot be written: {_why(folder, exc)}; "
                      f"choose another folder or let this user write there.") from None


def _why(folder: str, exc: OSError) -> str:
    existing = os.path.abspath(folder)
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    return (exc.strerror or str(exc)).lower()


def database_opened(open_it: Callable[[], None], shown: str) -> None:
    """Run `open_it` (which binds the node's database, `shown` without its password); a database
    that cannot be opened (unreachable, not a database, locked) is refused."""
    import sqlite3

    from pony.orm.dbapiprovider import DBException

    try:
        open_it()
    except (DBException, sqlite3.Error) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise Refused(f"the database {shown} cannot be opened: {reason}.") from None


def free_to_listen(host: str, port: int, key: str) -> None:
    """Refuse the start if `host:port` cannot be listened on (as Waitress would bind it)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise Refused(f"cannot listen on {host}:{port}: {host} does not resolve ({exc.strerror}).") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            # NOTE: as Waitress does; so a port left in TIME_WAIT by the last run does not count as taken.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise cannot_listen(host, port, key, exc) from None


def cannot_listen(host: str, port: int, key: str, exc: OSError) -> Refused:
    """The refusal for a failed bind of `host:port` (also when Waitress's own bind fails)."""
    if exc.errno == errno.EADDRINUSE:
        return Refused(f"port {port} on {host} is already in use (another node, or another program, "
                       f"listens there); pick another with the `port` key of {key} or --port N.")
    if exc.errno == errno.EACCES:
        return Refused(f"port {port} on {host} needs privileges this user lacks; "
                       f"pick one above 1023 with the `port` key of {key} or --port N.")
    if exc.errno == errno.EADDRNOTAVAIL:
        return Refused(f"{host} is not an address of this machine; set the `host` key of {key} to one that is.")
    return Refused(f"cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}.")
