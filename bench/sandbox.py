"""Figure 7: what each job's sandbox costs (no target; docs/performance.md).

7a. Launching a trivial `run.sh` as the executor does, without a node: `bash run.sh` alone, wrapped
    for `sandbox = none` (a PID namespace and prlimit), wrapped in bubblewrap, and bubblewrap plus
    the job's cgroup (created, joined, removed).
7b. A trivial job's turnaround (upload answered -> HEAD 200) with sandbox = bwrap and none.
7c. The 4 users x 50 jobs drain (figure 2b) with sandbox = bwrap and none.
"""
from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from dataclasses import replace

from actors.job_cgroups import JobCgroups
from actors.sandbox import Wrapping, environment
from bench.common import TRIVIAL, Row, main, spread
from bench.drain import drain
from bench.turnaround import turnarounds
from conf.settings import ClientConfig


def launches(runs: int) -> dict[str, list[float]]:
    """Milliseconds to run a trivial run.sh to its end, by how it is wrapped."""
    config = ClientConfig(sandbox="bwrap")
    bwrap, none = Wrapping.probe(config), Wrapping.probe(replace(config, sandbox="none"))
    cgroups = JobCgroups.detect("bench-sandbox")
    samples: dict[str, list[float]] = {"bash alone": [], "none": [], "bwrap": []}
    if cgroups:
        samples["bwrap + cgroup"] = []
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as folder:
        config = replace(config, data_dir=folder + "/data")
        with open(f"{folder}/run.sh", "wb") as handle:
            handle.write(TRIVIAL)
        env = environment(config, folder)
        for number in range(runs):
            for name in samples:
                started = time.perf_counter()
                cgroup = cgroups.create(f"bench-{number}", None, 4096) if name == "bwrap + cgroup" else None
                command = {"bash alone": ["bash", "run.sh"], "none": none.command(config, folder),
                           "bwrap": bwrap.command(config, folder)}.get(name) or \
                    bwrap.command(config, folder, cgroup_procs=cgroup.procs, limit_memory=False, limit_processes=False)
                subprocess.run(command, cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
                if cgroup:
                    cgroup.remove()
                samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def run(quick: bool) -> list[Row]:
    launch = launches(5 if quick else 100)
    base = statistics.median(launch["bash alone"])
    rows = [Row(f"7a. launch, {name}", spread(values, " ms", 1) +
                ("" if name == "bash alone" else f", +{statistics.median(values) - base:.1f} ms"), "-", "-", None)
            for name, values in launch.items()]
    for sandbox in ("bwrap", "none"):
        samples = turnarounds(5 if quick else 100, sandbox=sandbox)
        rows.append(Row(f"7b. turnaround, sandbox = {sandbox}", spread(samples, " ms"), "-", "-", None))
    scale, repeats = (10, 1) if quick else (1, 3)
    for sandbox in ("bwrap", "none"):
        times = [drain(4, 50 // scale, sandbox=sandbox) for _ in range(repeats)]
        rows.append(Row(f"7c. drain 4 users x {50 // scale}, sandbox = {sandbox}", spread(times, " s", 2), "-", "-", None))
    return rows


if __name__ == "__main__":
    main(run)
