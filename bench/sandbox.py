"""Figure 8: what each job's sandbox costs (no target; docs/performance.md).

8a. Running a trivial `run.sh` to its end as the executor wraps it, without a node: `bash run.sh`
    alone, for `sandbox = none` (a PID namespace and prlimit), and in bubblewrap.
8b. Moving a process into a job's cgroup, alone (the kernel waits for an RCU grace period): what
    the executor's launchers pay ahead of each job (actors/node/launchers.py).
8c. A trivial job's turnaround (upload answered -> HEAD 200) with sandbox = bwrap and none.
8d. The 4 users x 50 jobs drain (figure 2b), on the same nodes as 8c, with sandbox = bwrap and none.
"""
from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from dataclasses import replace

from actors.node.job_cgroups import JobCgroups
from actors.node.sandbox import Wrapping, environment
from bench.common import TRIVIAL, Row, cluster, main, spread
from bench.drain import drain_nodes, drain_on
from bench.turnaround import measure
from conf.settings import ClientConfig


def launches(runs: int) -> dict[str, list[float]]:
    """Milliseconds to run a trivial run.sh to its end, by how it is wrapped."""
    samples: dict[str, list[float]] = {"bash alone": [], "none": [], "bwrap": []}
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as folder:
        config = ClientConfig(sandbox="bwrap", data_dir=folder + "/data")
        commands = {"bash alone": ["bash", "run.sh"],
                    "none": Wrapping.probe(replace(config, sandbox="none")).command(config, folder),
                    "bwrap": Wrapping.probe(config).command(config, folder)}
        with open(f"{folder}/run.sh", "wb") as handle:
            handle.write(TRIVIAL)
        env = environment(config, folder)
        for _ in range(runs):
            for name, command in commands.items():
                started = time.perf_counter()
                subprocess.run(command, cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL)
                samples[name].append((time.perf_counter() - started) * 1000)
    return samples


def cgroup_moves(runs: int) -> list[float]:
    """Milliseconds to move one process into a fresh job cgroup, each move alone."""
    cgroups = JobCgroups.detect("bench-sandbox")
    if cgroups is None:
        return []
    samples = []
    for number in range(runs):
        cgroup = cgroups.create(f"bench-{number}", None, 4096)
        sleeper = subprocess.Popen(["sleep", "30"])
        time.sleep(0.05)  # NOTE: apart from the last move, as a job's launcher is
        started = time.perf_counter()
        for procs in cgroup.procs:
            with open(procs, "w") as handle:
                handle.write(str(sleeper.pid))
        samples.append((time.perf_counter() - started) * 1000)
        sleeper.kill()
        sleeper.wait()
        cgroup.remove()
    return samples


def run(quick: bool) -> list[Row]:
    launch = launches(5 if quick else 100)
    base = statistics.median(launch["bash alone"])
    rows = [Row(f"8a. launch, {name}", spread(values, " ms", 1) +
                ("" if name == "bash alone" else f", +{statistics.median(values) - base:.1f} ms"), "-", "-", None)
            for name, values in launch.items()]
    moves = cgroup_moves(5 if quick else 40)
    rows.append(Row("8b. a move into a job cgroup (paid ahead)",
                    spread(moves, " ms", 1) if moves else "no cgroups for jobs here", "-", "-", None))
    per_user, repeats = (5, 1) if quick else (50, 3)
    for sandbox in ("bwrap", "none"):
        with cluster() as nodes:  # NOTE: one pair of nodes for both figures (starting nodes is most of quick mode)
            server = drain_nodes(nodes, sandbox=sandbox)
            measure(server, 3)  # warm up connections and caches
            samples = measure(server, 5 if quick else 100)
            times = [drain_on(server, 4, per_user) for _ in range(repeats)]
        rows.append(Row(f"8c. turnaround, sandbox = {sandbox}", spread(samples, " ms"), "-", "-", None))
        rows.append(Row(f"8d. drain 4 users x {per_user}, sandbox = {sandbox}", spread(times, " s", 2), "-", "-", None))
    return rows


if __name__ == "__main__":
    main(run)
