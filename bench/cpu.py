"""Where a drain's CPU goes: CPU seconds per job of each process of the server and the executor,
during the 4 users x 50 jobs drain of figure 2b (`python -m bench.cpu [--quick] [--log-level LEVEL]`).

On two cores the drains are bounded by CPU, not by waiting: this says which process spends it.
Server actors are named from the server's `/health`; the executor's processes by their parent.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench import common
from bench.common import TRIVIAL, cluster, upload, wait_done
from tests.harness import processes_with_marker

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own CPU, CPU of its waited-for children: the scripts) of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def names(server, executor) -> dict[int, str]:
    roles = {pid: f"server {role}" for role, pid in requests.get(f"{server.url}/health", timeout=10)
             .json()["actor_processes"].items()}
    named = {}
    for node, pids in (("server", processes_with_marker(server.marker)),
                       ("executor", processes_with_marker(executor.marker))):
        for pid in pids:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"python" not in handle.read():
                    continue  # a job's launcher or script: counted as its ExecutorActor's children
            if pid == (server.process.pid if node == "server" else executor.process.pid):
                named[pid] = f"{node} web (main process)"
            else:
                named[pid] = roles.get(pid, f"{node} actor processes (admin, logger" +
                                       (", ExecutorActor and its reporter thread)" if node == "executor" else ")"))
    return named


def measure(users: int, per_user: int) -> tuple[dict[str, tuple[float, float]], float, float]:
    with cluster() as nodes:
        executor = nodes.executor("example", slots=8, **common.log_settings())
        server = nodes.server({"example": {"clients": executor.url, "runs_per_user": 5}}, **common.log_settings())
        processes = names(server, executor)
        before = {pid: cpu_seconds(pid) for pid in processes}
        client_before = os.times()
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda n: upload(server, {"run.sh": TRIVIAL}, 1 + n % users), range(users * per_user)))
        elapsed = wait_done(server, ids, every=0.02) - started
        client = os.times()
        spent: dict[str, tuple[float, float]] = {}
        for pid, name in processes.items():
            own, children = (a - b for a, b in zip(cpu_seconds(pid), before[pid]))
            total = spent.get(name, (0.0, 0.0))
            spent[name] = (total[0] + own, total[1] + children)
        client_cpu = client.user + client.system - client_before.user - client_before.system
        return spent, elapsed, client_cpu


if __name__ == "__main__":
    per_user = 5 if common.arguments(argparse.ArgumentParser()).quick else 50
    spent, elapsed, client = measure(4, per_user)
    jobs = 4 * per_user
    print(f"{jobs} jobs in {elapsed:.2f} s\n\n| process | CPU per job |\n|---|---|")
    for name, (own, children) in sorted(spent.items(), key=lambda item: -sum(item[1])):
        if own + children < 0.005:
            continue  # idle during the drain (janitor, supervisor)
        scripts = f" (+ {children / jobs * 1000:.1f} ms in its scripts)" if children > 0.005 else ""
        print(f"| {name} | {own / jobs * 1000:.1f} ms{scripts} |")
    total = sum(own + children for own, children in spent.values())
    print(f"| all server and executor processes | {total / jobs * 1000:.1f} ms |")
    print(f"| the load generator (uploads, polls) | {client / jobs * 1000:.1f} ms |")
