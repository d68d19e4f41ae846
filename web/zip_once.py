"""ZipOnce: each task's zip is made once, in a thread of its own, however many ask for it meanwhile.

Used by both processes of an executor node: the ExecutorActor starts a task's zip the moment its
run.sh ended (`start`), so a result is ready before the server asks and however slow one folder is
to zip, it holds up no other; the web process's `Retrieve` serves the zip, and makes it itself only
when nobody did (a node restarted while zipping, a zip that failed, or one the actor had not yet
begun). The two processes never zip one folder side by side: whoever makes a zip holds an flock
on `<zip>.lock` meanwhile, and the other, once it gets the lock, finds the zip made.

A folder can take longer to zip than the server waits for an answer, so a retrieve waits for the
zip under way at most `wait` seconds, then answers 202 and is asked again; were each ask to zip the
folder anew, the asks would pile up until they held every worker thread of the node. A zip that
failed is made afresh at the next ask.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from typing import Callable

from web.result_zip import zip_folder

log = logging.getLogger("orchestrator.zip")

#: How long a retrieve waits for its zip. Short: the zip was begun when the script ended, so only a
#: slow one is still under way, and the server's thread that asks is better freed to fetch others.
WAIT_SECONDS = 2.0


class ZipFailed(Exception):
    """Making the zip raised (logged with its traceback); the message names the exception."""


class _Making:
    def __init__(self):
        self.done = threading.Event()
        self.error: str | None = None


def lock_file(destination: str) -> str:
    """The file whose flock the maker of `destination` holds."""
    return f"{destination}.lock"


class ZipOnce:
    def __init__(self, make: Callable[[str, str], None] = zip_folder, wait: float = WAIT_SECONDS):
        self.make = make
        self.wait = wait
        self.lock = threading.Lock()
        #: The zips being made by this process, by destination.
        self.making: dict[str, _Making] = {}

    def start(self, folder: str, destination: str) -> _Making:
        """Make the zip of `folder` at `destination` in a thread, unless this process is making it."""
        with self.lock:
            making = self.making.get(destination)
            if making is None:
                making = self.making[destination] = _Making()
                threading.Thread(target=self._make, args=(making, folder, destination),
                                 name=f"zip {os.path.basename(destination)}", daemon=True).start()
        return making

    def ready(self, folder: str, destination: str) -> bool:
        """True once `destination` holds the zip of `folder`; False while it is still being made
        after `wait` seconds. Raises ZipFailed if making it failed."""
        if os.path.exists(destination):
            return True
        making = self.start(folder, destination)
        if not making.done.wait(self.wait):
            return False
        if making.error is not None:
            raise ZipFailed(making.error)
        return True

    def _make(self, making: _Making, folder: str, destination: str) -> None:
        try:
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            with open(lock_file(destination), "ab") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # NOTE: waits while the node's other process makes it
                if not os.path.exists(destination):
                    self.make(folder, destination)
        except Exception as exc:  # noqa: BLE001 — whatever it is, the retrieve answers it and the next one retries
            log.exception("zipping %s into %s failed", folder, destination)
            making.error = type(exc).__name__
        finally:
            with self.lock:
                del self.making[destination]
            making.done.set()
