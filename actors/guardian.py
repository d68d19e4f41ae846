"""Guardian: shuts a node's actor system down when the node's main process dies without doing so.

Thespian's admin daemonizes, so a main process killed with SIGKILL leaves the admin and every actor
running, still dispatching and fetching. The main process starts this small watcher as its child
(`python -m actors.guardian STATE_DIR TOKEN MAIN_PID`); when that process is gone and STATE_DIR
still records the actor system of its run (TOKEN), the guardian shuts it down and exits. After a
clean stop the record is gone (or names a newer run), and it just exits.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from actors import system

POLL_SECONDS = 0.2


def main(state_dir: str, token: str, main_pid: int) -> int:
    # NOTE: Ctrl-C reaches the whole process group; the main process handles it, not this one.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while os.getppid() == main_pid:
        time.sleep(POLL_SECONDS)
    system.clear_stale(state_dir, only_token=token)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
