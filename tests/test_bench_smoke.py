"""The benchmarks still run (quick mode: tiny sizes, no figures judged); `make bench` measures."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness import ROOT


@pytest.mark.processes
def test_the_benchmark_suite_runs_end_to_end_in_quick_mode():
    result = subprocess.run([sys.executable, "-m", "bench.all", "--quick"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and not line.startswith("| figure |")]
    assert len(rows) == 56, result.stdout
