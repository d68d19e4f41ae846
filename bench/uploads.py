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


def upload_server(nodes, draining: bool):
    """The server uploaded to. Not `draining`: the service's executor is down, so the jobs wait in
    the queue and the figure is the upload path's own. `draining`: an executor on the same two cores
    runs the jobs as they arrive, and the drain takes its share of the CPU."""
    clients = nodes.executor("example", slots=8).url if draining else "http://127.0.0.1:9"
    return nodes.server({"example": {"clients": clients, "runs_per_user": 5}})


def fresh_rate(senders: int, total: int, draining: bool) -> float:
    """`rate` on a fresh server (a fresh one per run, as the original's figure was taken)."""
    with cluster() as nodes:
        return rate(upload_server(nodes, draining), senders, total)


def run(quick: bool) -> list[Row]:
    total, repeats = (50, 1) if quick else (500, 3)
    rows = []
    for draining in (False, True):
        if quick:  # NOTE: a smoke run: one server for both figures (starting nodes is most of quick mode)
            with cluster() as nodes:
                server = upload_server(nodes, draining)
                many, one = [rate(server, 8, total)], [rate(server, 1, total)]
        else:
            many = [fresh_rate(8, total, draining) for _ in range(repeats)]
            one = [fresh_rate(1, total, draining) for _ in range(repeats)]
        if draining:  # what a portal sees while the backlog runs on the same machine: no target
            rows += [Row("3c. uploads, 8 senders, while the jobs run on the same 2 cores", spread(many, " jobs/s"),
                         "-", "-", None),
                     Row("3d. uploads, 1 sender, while the jobs run on the same 2 cores", spread(one, " jobs/s"),
                         "-", "-", None)]
        else:
            rows += [Row("3a. uploads, 8 senders", spread(many, " jobs/s"), ">= 400 jobs/s", "114",
                         None if quick else sorted(many)[len(many) // 2] >= 400),
                     Row("3b. uploads, 1 sender", spread(one, " jobs/s"), ">= 200 jobs/s", "100",
                         None if quick else sorted(one)[len(one) // 2] >= 200)]
    return rows


if __name__ == "__main__":
    main(run)
