"""Whether Slurm can take jobs, checked in the background so that no caller ever waits for it.

One `SlurmHealth` per process that needs the answer (the executor's web layer for /health and
/submit, its actor for heartbeats): a daemon thread runs `slurm_cli.check()` (sbatch on PATH,
`scontrol ping`) every CHECK_SECONDS, and readers only look at the last result.
"""
from __future__ import annotations

import logging
import threading

from actors import slurm_cli

CHECK_SECONDS = 3.0

log = logging.getLogger("orchestrator.slurm")


class SlurmHealth:
    def __init__(self, every: float = CHECK_SECONDS):
        self.every = every
        #: Why Slurm cannot take jobs now; None when it can. Checked once before the node serves.
        self.problem: str | None = slurm_cli.check()
        if self.problem:
            log.error("Slurm cannot take jobs: %s", self.problem)
        threading.Thread(target=self._run, name="slurm-health", daemon=True).start()

    def __call__(self) -> str | None:
        return self.problem

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.every):
            try:
                problem = slurm_cli.check()
            except Exception as exc:  # noqa: BLE001 — the thread must outlive any surprise
                problem = f"checking Slurm failed: {exc}"
            if problem != self.problem:
                if problem:
                    log.error("Slurm cannot take jobs: %s", problem)
                else:
                    log.warning("Slurm takes jobs again")
            self.problem = problem
