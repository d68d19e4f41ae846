"""Logging thresholds in an actor process.

Thespian rebuilds `logging` in every actor process, forwarding each record to its logging actor.
Loggers created before the fork (urllib3's, imported by the node before its actor system started)
still hang under the admin process's root, whose threshold is 0: every debug line of every HTTP
call then became a message to the logging actor, a tenth of a drain's CPU. This puts the
thresholds of LOG_DEFS on both hierarchies.
"""
from __future__ import annotations

import logging


def apply_thresholds() -> None:
    import urllib3.connectionpool

    inherited_root = urllib3.connectionpool.log
    while inherited_root.parent is not None:
        inherited_root = inherited_root.parent
    for root in (inherited_root, logging.root):
        root.setLevel(max(root.level, logging.INFO))
    for library in (urllib3.connectionpool.log.parent, logging.getLogger("urllib3")):
        library.setLevel(logging.WARNING)
