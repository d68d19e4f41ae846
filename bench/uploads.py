"""Figure 3: uploads of one small file per job, 8 concurrent senders (>= 400 jobs/s), one sender (>= 200)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.common import TRIVIAL, Row, cluster, main, spread, upload


def rate(server, senders: int, total: int) -> float:
    sessions = [requests.Session() for _ in range(senders)]
    started = time.monotonic()
    with ThreadPoolExecutor(senders) as pool:
        list(pool.map(lambda n: upload(server, {"run.sh": TRIVIAL}, 1 + n % 50, sessions[n % senders]), range(total)))
    return total / (time.monotonic() - started)


def run(quick: bool) -> list[Row]:
    total, repeats = (50, 1) if quick else (500, 3)
    with cluster() as nodes:
        executor = nodes.executor("example", slots=8)
        server = nodes.server({"example": {"clients": executor.url, "runs_per_user": 5}})
        many = [rate(server, 8, total) for _ in range(repeats)]
        one = [rate(server, 1, total) for _ in range(repeats)]
    return [Row("3a. uploads, 8 senders", spread(many, " jobs/s"), ">= 400 jobs/s", "114",
                None if quick else sorted(many)[len(many) // 2] >= 400),
            Row("3b. uploads, 1 sender", spread(one, " jobs/s"), ">= 200 jobs/s", "100",
                None if quick else sorted(one)[len(one) // 2] >= 200)]


if __name__ == "__main__":
    main(run)
