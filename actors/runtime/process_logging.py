"""Logging thresholds in an actor process.

Thespian rebuilds `logging` in every actor process, forwarding each record to its logging actor.
Loggers created before the fork (urllib3's, imported by the node before its actor system started)
still hang under the admin process's root, whose threshold is 0: every debug line of every HTTP
call then became a message to the logging actor, a tenth of a drain's CPU. This puts the node's
level (Thespian gives this process's root the lowest level of the node's logging config,
conf/logs.py) and urllib3's on both hierarchies, and writes the orchestrator's own lines straight
to the node's stderr (conf.logs.own_lines_to_stderr).
"""
from __future__ import annotations

import logging
import sys

from thespian.system.logdirector import ThespianLogForwarder

from conf import logs


def apply_thresholds() -> None:
    if isinstance(logging.root, ThespianLogForwarder):  # a process of a node's actor system (not a test's)
        logs.own_lines_to_stderr()
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    connectionpool = sys.modules.get("urllib3.connectionpool")
    if connectionpool is None:
        return  # imported after the fork, if at all: its loggers hang under this process's root
    inherited_root = connectionpool.log
    while inherited_root.parent is not None:
        inherited_root = inherited_root.parent
    inherited_root.setLevel(max(inherited_root.level, logging.root.level))
    connectionpool.log.parent.setLevel(logging.WARNING)
