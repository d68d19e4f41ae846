"""Figure 2: drain of 200 trivial jobs of one user with runs_per_user = 5 (<= 4 s), 4 users x 50 (<= 3 s)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from bench.common import TRIVIAL, Row, cluster, log_settings, main, spread, upload, wait_done


def drain(users: int, per_user: int, **executor_settings) -> float:
    with cluster() as nodes:
        return drain_on(drain_nodes(nodes, **executor_settings), users, per_user)


def drain_nodes(nodes, **executor_settings):
    """The server of the drains: an executor with 8 slots, runs_per_user 5 (both at --log-level)."""
    executor = nodes.executor("example", slots=8, **log_settings(), **executor_settings)
    return nodes.server({"example": {"clients": executor.url, "runs_per_user": 5}}, **log_settings())


def drain_on(server, users: int, per_user: int) -> float:
    """Seconds from the first upload until `users` x `per_user` trivial jobs all completed."""
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda n: upload(server, {"run.sh": TRIVIAL}, 1 + n % users), range(users * per_user)))
    # NOTE: a HEAD every 20 ms, not 2: on two cores a faster poll takes CPU from the drain it times.
    return wait_done(server, ids, every=0.02) - started


def run(quick: bool) -> list[Row]:
    repeats, scale = (1, 10) if quick else (3, 1)
    if quick:  # NOTE: a smoke run: one pair of nodes for both figures (starting nodes is most of quick mode)
        with cluster() as nodes:
            server = drain_nodes(nodes)
            one, four = [drain_on(server, 1, 200 // scale)], [drain_on(server, 4, 50 // scale)]
    else:
        one = [drain(1, 200 // scale) for _ in range(repeats)]
        four = [drain(4, 50 // scale) for _ in range(repeats)]
    return [Row(f"2a. drain {200 // scale} jobs, 1 user, runs_per_user 5", spread(one, " s", 2), "<= 4 s", "38 s",
                None if quick else sorted(one)[len(one) // 2] <= 4),
            Row(f"2b. drain 4 users x {50 // scale} jobs", spread(four, " s", 2), "<= 3 s", "10.3 s",
                None if quick else sorted(four)[len(four) // 2] <= 3)]


if __name__ == "__main__":
    main(run)
