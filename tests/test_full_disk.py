"""A full server disk: uploads are refused 507, and the jobs already accepted wait (their results
cannot be stored) and complete intact once space is freed. The server's data_dir, its database
included, is a small tmpfs (mounting one needs root: skipped otherwise, failed under CI)."""
from __future__ import annotations

import hashlib
import os

import requests

from tests.harness import fill_disk, job, results, script, submit, wait_for_outcome, wait_until

#: Each job's result: incompressible, larger than what is left free on the full disk.
RESULT = "head -c 2000000 /dev/urandom > out.bin\nsha256sum out.bin > out.sum"
LEFT_FREE = 512 * 1024


def test_on_a_full_disk_uploads_get_507_and_accepted_jobs_wait_then_complete_intact(cluster, eight_mb_disk):
    executor = cluster.executor("example", slots=2)
    server = cluster.server({"example": {"clients": executor.url}}, data_dir=eight_mb_disk)
    ballast = fill_disk(eight_mb_disk, LEFT_FREE)
    accepted = [submit(server, RESULT, user_id=n) for n in (1, 2)]
    refused = requests.post(f"{server.url}/upload", timeout=30, data={"user_id": "3", "service": "example"},
                            files=[("file", ("run.sh", script("true"))), ("file", ("big", os.urandom(3 << 20)))])
    assert refused.status_code == 507, refused.text
    # Both scripts end on the executor; their results do not fit on the server's disk.
    wait_until(lambda: all(executor.task_state(n) == "finished" for n in (1, 2)), 30, 0.1, "both scripts to end")
    wait_until(lambda: "could not fetch the results" in server.log(), 30, 0.1, "a fetch to fail")
    assert [job(server, j)["status"] for j in accepted] == ["Running", "Running"]

    os.remove(ballast)

    for job_id in accepted:
        assert wait_for_outcome(server, job_id, 30) == 200, job(server, job_id)
        archive = results(server, job_id)
        digest = hashlib.sha256(archive.read("out.bin")).hexdigest()
        assert archive.read("out.sum").decode().split()[0] == digest
    assert server.health().status_code == 200
