"""What every benchmark shares: a cluster of real nodes in a temp folder, timing, the result table.

Each figure script defines `run(quick: bool) -> list[Row]`; `python -m bench.NAME [--quick]` runs one,
`python -m bench.all [--quick]` all. Figures are medians over repeated runs with their spread.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from conf.logs import LEVELS
from tests.harness import Cluster, script

TRIVIAL = script("echo done > out.txt")


@dataclass
class Row:
    figure: str
    value: str
    target: str
    #: The original (Rust) system's figure, where it has one.
    original: str
    met: bool | None

    def line(self) -> str:
        verdict = {True: "met", False: "MISSED", None: "-"}[self.met]
        return f"| {self.figure} | {self.value} | {self.target} | {self.original} | {verdict} |"


def table(rows: list[Row]) -> str:
    head = "| figure | measured | target | original | verdict |\n|---|---|---|---|---|"
    return "\n".join([head, *(r.line() for r in rows)])


@contextlib.contextmanager
def cluster():
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as folder:
        nodes = Cluster(Path(folder))
        try:
            yield nodes
        finally:
            leaked = nodes.close()
            if leaked:
                raise RuntimeError(f"processes left behind by {leaked}")


def upload(server, files: dict[str, bytes], user_id: int = 1, session=requests) -> int:
    response = session.post(f"{server.url}/upload", data={"user_id": str(user_id), "service": "example"},
                            files=[("file", (n, b)) for n, b in files.items()], timeout=60)
    response.raise_for_status()
    return response.json()["id"]


def wait_done(server, job_ids, timeout: float = 600.0, session=requests, every: float = 0.002) -> float:
    """Poll HEAD until every job answered 200; returns when the last one did (monotonic time).

    Jobs are asked about one at a time, oldest first, and a round stops at the first one still
    running: asking about all of them every round would load the server being measured with
    hundreds of HEADs per job finished. `every` is the pause between HEADs of an unfinished job,
    so the figure is late by at most that much (plus one HEAD).
    """
    pending = list(job_ids)
    deadline = time.monotonic() + timeout
    while pending:
        code = session.head(f"{server.url}/download/{pending[0]}", timeout=10).status_code
        if code == 200:
            pending.pop(0)
            continue
        if code != 202:
            raise RuntimeError(f"job {pending[0]} ended with HTTP {code}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} jobs not done after {timeout} s")
        time.sleep(every)
    return time.monotonic()


def spread(values: list[float], unit: str = "", digits: int = 0) -> str:
    values = sorted(values)
    fmt = f"{{:.{digits}f}}"
    med = statistics.median(values)
    return f"{fmt.format(med)}{unit} (min {fmt.format(values[0])}, max {fmt.format(values[-1])}, n={len(values)})"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def rss_mb(pids) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{pid}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return total / 2**20


def pss_mb(pids) -> float:
    """Proportional set size: like RSS, but pages shared between forked processes count once in all."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{pid}/smaps_rollup") as handle:
                for line in handle:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
    return total / 2**20


#: The [server]/[client] log_level of the nodes that take it (the drains); None: their default.
LOG_LEVEL: str | None = None


def log_settings() -> dict[str, str]:
    """The ini keys that give a node the log level chosen with --log-level."""
    return {"log_level": LOG_LEVEL} if LOG_LEVEL else {}


def arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse --quick and --log-level (kept in LOG_LEVEL) besides `parser`'s own options."""
    global LOG_LEVEL
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    parser.add_argument("--log-level", choices=tuple(LEVELS),
                        help="the nodes' log_level (default: theirs, info), to measure logging's cost")
    args = parser.parse_args()
    LOG_LEVEL = args.log_level
    return args


def main(run) -> None:
    print(table(run(arguments(argparse.ArgumentParser()).quick)))
