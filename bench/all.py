"""Every figure in one table: `python -m bench.all [--quick]` (what `make bench` runs)."""
from __future__ import annotations

from bench import (drain, execution, fairness, job_list, memory, million_jobs, queue_scale, sandbox, tes,
                   turnaround, uploads, waiting_job, zipping)
from bench.common import main

FIGURES = (turnaround, drain, uploads, queue_scale, memory, execution, zipping, sandbox, million_jobs, job_list,
           waiting_job, fairness, tes)


def run(quick: bool):
    return [row for figure in FIGURES for row in figure.run(quick)]


if __name__ == "__main__":
    main(run)
