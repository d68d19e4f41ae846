"""ZipOnce: each task's zip is made once, in a thread of its own, however many retrieves ask meanwhile.

Used by the executor node's web process (web/executor_app.py `Retrieve`). A folder can take longer
to zip than the server waits for an answer (actors/executor_link.READ_TIMEOUT, 30 s), and the
server then asks again at its next sweep: were each ask to zip the folder anew, the asks would pile
up until they held every worker thread of the node, and its /health would stop answering. So a
retrieve waits for the one zip under way at most WAIT_SECONDS, then answers 202 and is asked again;
a zip that failed is made afresh at the next ask.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

from web.common import log
from web.result_zip import zip_folder

#: How long a retrieve waits for its zip: well below the server's read timeout.
WAIT_SECONDS = 20.0


class ZipFailed(Exception):
    """Making the zip raised (logged with its traceback); the message names the exception."""


class _Making:
    def __init__(self):
        self.done = threading.Event()
        self.error: str | None = None


class ZipOnce:
    def __init__(self, make: Callable[[str, str], None] = zip_folder, wait: float = WAIT_SECONDS):
        self.make = make
        self.wait = wait
        self.lock = threading.Lock()
        #: The zips being made, by destination.
        self.making: dict[str, _Making] = {}

    def ready(self, folder: str, destination: str) -> bool:
        """True once `destination` holds the zip of `folder`; False while it is still being made
        after `wait` seconds. Raises ZipFailed if making it failed."""
        with self.lock:
            if os.path.exists(destination):
                return True
            making = self.making.get(destination)
            if making is None:
                making = self.making[destination] = _Making()
                threading.Thread(target=self._make, args=(making, folder, destination),
                                 name=f"zip {os.path.basename(destination)}", daemon=True).start()
        if not making.done.wait(self.wait):
            return False
        if making.error is not None:
            raise ZipFailed(making.error)
        return True

    def _make(self, making: _Making, folder: str, destination: str) -> None:
        try:
            self.make(folder, destination)
        except Exception as exc:  # noqa: BLE001 — whatever it is, the retrieve answers it and the next one retries
            log.exception("zipping %s into %s failed", folder, destination)
            making.error = type(exc).__name__
        finally:
            with self.lock:
                del self.making[destination]
            making.done.set()
