"""Where one job's time goes: medians of each hop, from the jobs' own stamps on server and executor,
during a drain of 200 trivial jobs of one user (`python -m bench.breakdown [--quick]`)."""
from __future__ import annotations

import argparse
import statistics
from datetime import datetime

import requests

from bench.common import TRIVIAL, cluster, percentile, upload, wait_done


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.rstrip("Z")).timestamp()


def hops(count: int) -> dict[str, list[float]]:
    with cluster() as nodes:
        executor = nodes.executor("example", slots=8)
        server = nodes.server({"example": {"clients": executor.url, "runs_per_user": 5}})
        ids = [upload(server, {"run.sh": TRIVIAL}) for _ in range(count)]
        wait_done(server, ids)
        jobs = [requests.get(f"{server.url}/jobs/{i}", timeout=10).json() for i in ids]
        tasks = {t["job_id"]: t for t in (requests.get(f"{executor.url}/jobs/{n}", timeout=10).json()
                                          for n in range(1, count + 1))}
    finished = sorted(stamp(j["finished_at"]) for j in jobs)
    dispatched = sorted(stamp(j["dispatched_at"]) for j in jobs)
    table = {"Dispatching written -> task stored on the executor": [], "task stored -> run.sh started": [],
             "run.sh started -> Running recorded on the server": [], "the script itself": [],
             "script ended -> Completed": []}
    for job in jobs:
        task = tasks[job["id"]]
        marks = [stamp(job["dispatched_at"]), stamp(task["created_at"]), stamp(task["started_at"]),
                 stamp(job["started_at"]), stamp(task["finished_at"]), stamp(job["finished_at"])]
        durations = [marks[1] - marks[0], marks[2] - marks[1], marks[3] - marks[2], marks[4] - marks[2],
                     marks[5] - marks[4]]
        for name, value in zip(table, durations):
            table[name].append(value * 1000)
    table["Completed -> next job of the slot Dispatching"] = [
        (dispatched[k] - finished[k - 5]) * 1000 for k in range(5, len(dispatched))]
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    measured = hops(20 if parser.parse_args().quick else 200)
    print("| hop | median | p90 |\n|---|---|---|")
    for name, values in measured.items():
        print(f"| {name} | {statistics.median(values):.0f} ms | {percentile(values, 0.9):.0f} ms |")
