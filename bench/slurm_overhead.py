"""Overhead per job of the Slurm backend against a bare sbatch of the same run.sh (docs/slurm.md).

`python -m bench.slurm_overhead [--quick]` needs a running Slurm cluster (e.g. tests/slurm/
start-local-slurm.sh as root). One trivial job at a time, so the figures are latencies, not
throughput:
- bare: `sbatch --wrap='bash run.sh'`, then `squeue` every 20 ms until the job is COMPLETED;
- bare --wait: `sbatch --wait`, Slurm's own way to wait for a job;
- orchestrator: upload to the server → HEAD /download 200, through an executor with
  backend = slurm, at the default poll_interval (2 s) and at 0.5 s.
"""
from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from bench.common import TRIVIAL, Row, cluster, main, spread, upload, wait_done


def bare(folder: Path, wait_flag: bool) -> float:
    """Seconds from sbatch to Slurm saying COMPLETED, for the run.sh the orchestrator would run."""
    (folder / "run.sh").write_bytes(TRIVIAL)
    args = ["sbatch", "--parsable", f"--chdir={folder}", f"--output={folder}/stdout.log",
            f"--error={folder}/stderr.log", "--wrap=bash run.sh"]
    began = time.monotonic()
    if wait_flag:
        subprocess.run([*args[:1], "--wait", *args[1:]], check=True, capture_output=True, timeout=120)
        return time.monotonic() - began
    job_id = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60).stdout.strip().split(";")[0]
    while True:
        state = subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"], capture_output=True,
                               text=True, timeout=60).stdout.strip()
        if state == "COMPLETED":
            return time.monotonic() - began
        if state in ("FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            raise RuntimeError(f"bare job {job_id} ended {state}")
        time.sleep(0.02)


def through_orchestrator(runs: int, poll_interval: float) -> list[float]:
    with cluster() as nodes:
        server = nodes.server({"example": {}})
        executor = nodes.executor("example", server_port=server.port, backend="slurm", max_jobs=4,
                                  poll_interval=poll_interval)
        deadline = time.monotonic() + 30
        while not any(e["url"] == executor.url and e["state"] == "alive"
                      for e in requests.get(f"{server.url}/executors", timeout=5).json()["executors"]):
            if time.monotonic() > deadline:
                raise RuntimeError("the Slurm executor did not register")
            time.sleep(0.1)
        session = requests.Session()
        samples = []
        for n in range(runs + 1):
            job_id = upload(server, {"run.sh": TRIVIAL}, 1, session)
            answered = time.monotonic()
            took = wait_done(server, [job_id], timeout=120, session=session) - answered
            if n:  # the first one warms connections and Slurm's scheduler up
                samples.append(took)
        return samples


def run(quick: bool) -> list[Row]:
    runs = 3 if quick else 15
    with tempfile.TemporaryDirectory(prefix="slurm-bare-") as folder:
        bare(Path(folder), False)  # warm-up: the first job after a cluster start waits ~3 s
        polled = [bare(Path(folder), False) for _ in range(runs)]
        waited = [bare(Path(folder), True) for _ in range(runs)]
    default = through_orchestrator(runs, 2.0)
    fast = through_orchestrator(runs, 0.5)
    base = statistics.median(polled)
    rows = [Row("bare sbatch, squeue every 20 ms", spread(polled, " s", 2), "-", "-", None),
            Row("bare sbatch --wait", spread(waited, " s", 2), "-", "-", None)]
    for label, samples in (("poll_interval 2 s", default), ("poll_interval 0.5 s", fast)):
        overhead = statistics.median(samples) - base
        rows.append(Row(f"orchestrator (upload → results), {label}", spread(samples, " s", 2) +
                        f"; overhead {overhead:+.2f} s", "-", "-", None))
    return rows


if __name__ == "__main__":
    main(run)
