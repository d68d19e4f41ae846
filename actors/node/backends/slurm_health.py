"""Whether Slurm can take jobs, checked in the background so that no caller ever waits for it.

One `SlurmHealth` per process that needs the answer (the executor's web layer for /health and
/submit, its actor for heartbeats and before it calls Slurm): a daemon thread runs
`slurm_cli.check()` (sbatch on PATH, `scontrol ping`) every CHECK_SECONDS, and readers look at the
last result. `fresh()` checks again first if that result is older than asked: `scontrol ping`
answers in milliseconds even when the controller is down, while squeue and sbatch then hang for
9-18 s, so the actor asks just before it calls them.
"""
from __future__ import annotations

import logging
import threading
import time

from actors.node.backends import slurm_cli

CHECK_SECONDS = 3.0

log = logging.getLogger("orchestrator.slurm")


class SlurmHealth:
    def __init__(self, every: float = CHECK_SECONDS):
        self.every = every
        #: Why Slurm cannot take jobs now; None when it can. Checked once before the node serves.
        self.problem: str | None = None
        self.checked = 0.0
        self.check()
        threading.Thread(target=self._run, name="slurm-health", daemon=True).start()

    def __call__(self) -> str | None:
        return self.problem

    def fresh(self, max_age: float) -> str | None:
        """The problem, checked again unless the last check is at most `max_age` seconds old."""
        if time.monotonic() - self.checked > max_age:
            self.check()
        return self.problem

    def check(self) -> None:
        try:
            problem = slurm_cli.check()
        except Exception as exc:  # noqa: BLE001 — the thread must outlive any surprise
            problem = f"checking Slurm failed: {exc}"
        if problem != self.problem:
            if problem:
                log.error("Slurm cannot take jobs: %s", problem)
            else:
                log.warning("Slurm takes jobs again")
        self.problem, self.checked = problem, time.monotonic()

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.every):
            self.check()
