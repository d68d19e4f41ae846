"""Figure 7: zipping a task's results on the executor (web/result_zip.py), in seconds and in how much
the zipping process's peak RSS grows: 50,000 small files, a 4 GB sparse file (`truncate -s 4G`), and
1 GB that does not compress. Each zip runs in a fresh process, from a folder in a temp directory
written just before (so in the page cache, as a script's output is when it ends). The original column is
the zipfile-based zipping this replaced, measured by this script on the same machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from bench.common import Row, main, spread
from tests.harness import ROOT

#: Run in a fresh process: its peak RSS during the zip, less its RSS before, is what the zip took.
#: (VmHWM, reset through clear_refs; ru_maxrss would carry the parent's peak over fork and exec.)
MEASURE = """
import json, sys, time
from web.result_zip import zip_folder
def mb(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(key)) / 1024
with open("/proc/self/clear_refs", "w") as clear:
    clear.write("5")
before = mb("VmRSS:")
start = time.perf_counter()
zip_folder(sys.argv[1], sys.argv[2])
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "mb": mb("VmHWM:") - before}))
"""


def small_files(folder: str, count: int) -> None:
    for n in range(count):
        group = os.path.join(folder, f"g{n // 1000:03d}")
        os.makedirs(group, exist_ok=True)
        with open(os.path.join(group, f"{n}.txt"), "wb") as handle:
            handle.write(b"line %d of a small result file\n" % n * 3)


def sparse_file(folder: str, size: int) -> None:
    with open(os.path.join(folder, "sparse.bin"), "wb") as handle:
        handle.truncate(size)


def random_file(folder: str, size: int) -> None:
    with open(os.path.join(folder, "random.bin"), "wb") as handle:
        for _ in range(size >> 20):
            handle.write(os.urandom(1 << 20))


def measure(make, size: int, runs: int) -> tuple[list[float], list[float], int]:
    """(seconds, peak RSS growth in MB) of each run, and the zip's size in bytes."""
    with tempfile.TemporaryDirectory(prefix="orchestrator-bench-") as scratch:
        folder, destination = os.path.join(scratch, "task"), os.path.join(scratch, "zips", "1.zip")
        os.makedirs(folder)
        make(folder, size)
        seconds, growth = [], []
        for _ in range(runs):
            result = subprocess.run([sys.executable, "-c", MEASURE, folder, destination], cwd=ROOT, check=True,
                                    capture_output=True, text=True, timeout=600)
            figures = json.loads(result.stdout)
            seconds.append(figures["seconds"])
            growth.append(figures["mb"])
            zipped = os.path.getsize(destination)
            os.remove(destination)
        return seconds, growth, zipped


def row(figure: str, make, size: int, runs: int, target: tuple[float, float], original: str, quick: bool) -> Row:
    seconds, growth, zipped = measure(make, size, runs)
    value = f"{spread(seconds, ' s', 2)}; RSS +{max(growth):.0f} MB at most; zip {zipped / 2**20:.1f} MB"
    met = sorted(seconds)[len(seconds) // 2] <= target[0] and max(growth) <= target[1]
    return Row(figure, value, f"<= {target[0]:g} s, <= {target[1]:g} MB", original, None if quick else met)


def run(quick: bool) -> list[Row]:
    runs = 1 if quick else 3
    files, sparse, noise = (2_000, 64 << 20, 8 << 20) if quick else (50_000, 4 << 30, 1 << 30)
    return [row(f"7a. zip {files:,} small files", small_files, files, runs, (5, 64),
                "4.85 s, +26 MB (zipfile)", quick),
            row(f"7b. zip a {sparse >> 20:,} MB sparse file", sparse_file, sparse, runs, (1, 64),
                "10.06 s, zip 17.9 MB (zipfile)", quick),
            row(f"7c. zip {noise >> 20:,} MB that do not compress", random_file, noise, runs, (5, 64),
                "29.24 s (zipfile)", quick)]


if __name__ == "__main__":
    main(run)
