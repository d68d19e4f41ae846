"""The orchestrator's version: the one place it is written (setup.py reads it from here, and each
node names it in its start block, conf/summary.py)."""

VERSION = "0.1.0"
