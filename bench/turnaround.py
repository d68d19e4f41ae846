"""Figure 1: turnaround of one trivial job, upload answered -> HEAD 200 (target median <= 30 ms, p95 <= 80)."""
from __future__ import annotations

import time

import requests

from bench.common import TRIVIAL, Row, cluster, main, percentile, spread, upload, wait_done


def measure(server, runs: int, user_id: int = 1) -> list[float]:
    session = requests.Session()
    samples = []
    for _ in range(runs):
        job_id = upload(server, {"run.sh": TRIVIAL}, user_id, session)
        answered = time.monotonic()
        samples.append((wait_done(server, [job_id], session=session) - answered) * 1000)
    return samples


def turnarounds(runs: int, **executor_settings) -> list[float]:
    with cluster() as nodes:
        executor = nodes.executor("example", **executor_settings)
        server = nodes.server({"example": {"clients": executor.url}})
        measure(server, 3)  # warm up connections and caches
        return measure(server, runs)


def run(quick: bool) -> list[Row]:
    samples = turnarounds(5 if quick else 100)
    median, p95 = sorted(samples)[len(samples) // 2], percentile(samples, 0.95)
    return [Row("1. turnaround, trivial job", spread(samples, " ms") + f", p95 {p95:.0f} ms",
                "median <= 30 ms, p95 <= 80 ms", "685 ms", None if quick else median <= 30 and p95 <= 80)]


if __name__ == "__main__":
    main(run)
