"""Figure 5: memory. All server processes together <= 300 MB RSS with 100,000 queued jobs; a 1 GB
upload never holds more than 64 MB of itself in any process (the original peaks at 481 MB for 100 MB)."""
from __future__ import annotations

import os
import tempfile
import threading
import time

import requests

from actors.server.executor_link import _MultipartBody
from bench.common import Row, cluster, main, pss_mb, rss_mb, wait_done
from storage import database
from tests.harness import processes_with_marker, script

ALL_QUEUED = 100_000


def queued_memory(count: int) -> tuple[float, float]:
    """(PSS, RSS) of every server process once `count` jobs wait in the queue (no executor takes them)."""
    with cluster() as nodes:
        server = nodes.server({"example": {"clients": "http://127.0.0.1:9", "runs_per_user": 5}}, start=False)
        _fill(server.folder / "data" / "orchestrator.sqlite", count)
        server.start()
        time.sleep(2)  # NOTE: let the queue load and settle; this is a reading, not a test
        pids = processes_with_marker(server.marker)
        return pss_mb(pids), rss_mb(pids)


def _fill(path, count: int) -> None:
    """Write `count` queued jobs straight into a fresh database (HTTP would take minutes)."""
    from pony.orm import db_session

    from storage.clock import utcnow
    from storage.models import Job, db
    database.bind(db, str(path), create_tables=True)
    now = utcnow()
    with db_session:
        for n in range(count):
            Job(user_id=1 + n % 1000, service="example", dir=f"/nonexistent/{n}", created_at=now, updated_at=now)


def upload_peak(size_mb: int) -> tuple[float, str]:
    """Largest RSS growth of any server or executor process while a `size_mb` upload goes through."""
    with cluster() as nodes, tempfile.TemporaryDirectory() as scratch:
        executor = nodes.executor("example", max_upload_mb=size_mb + 16)
        server = nodes.server({"example": {"clients": executor.url}}, max_upload_mb=size_mb + 16)
        big, run = os.path.join(scratch, "big.bin"), os.path.join(scratch, "run.sh")
        with open(big, "wb") as handle:
            handle.truncate(size_mb * 2**20)
        with open(run, "wb") as handle:
            handle.write(script("wc -c big.bin > size.txt\nrm big.bin"))
        pids = processes_with_marker(server.marker) + processes_with_marker(executor.marker)
        base = {pid: rss_mb([pid]) for pid in pids}
        peak = dict(base)
        done = threading.Event()

        def sample():
            while not done.is_set():
                for pid in pids:
                    peak[pid] = max(peak[pid], rss_mb([pid]))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            body = _MultipartBody({"user_id": "1", "service": "example"}, [("run.sh", run), ("big.bin", big)])
            response = requests.post(f"{server.url}/upload", data=body, timeout=600,
                                     headers={"Content-Type": body.content_type})
            response.raise_for_status()
            wait_done(server, [response.json()["id"]], timeout=600)
        finally:
            done.set()
            sampler.join()
        growth = {pid: peak[pid] - base[pid] for pid in pids}
        worst = max(growth, key=growth.get)
        return growth[worst], f"pid {worst}"


def run(quick: bool) -> list[Row]:
    count, size = (2_000, 64) if quick else (ALL_QUEUED, 1024)
    pss, rss = queued_memory(count)
    growth, where = upload_peak(size)
    return [Row(f"5a. memory of all server processes, {count} jobs queued",
                f"{pss:.0f} MB PSS ({rss:.0f} MB RSS summed, counting shared pages once per process)",
                "<= 300 MB", "27-36 MB (2,000)", None if quick else pss <= 300),
            Row(f"5b. largest RSS growth of one process during a {size} MB upload", f"{growth:.0f} MB ({where})",
                "<= 64 MB", "481 MB (100 MB)", None if quick else growth <= 64)]


if __name__ == "__main__":
    main(run)
