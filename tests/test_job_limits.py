"""Limits per job, enforced by the kernel on real server and executor processes: a job over a limit
ends Failed with a reason naming it, and the node runs the next job as before.

The verdict from what was measured is tested without processes in tests/test_limit_verdicts.py.
"""
from __future__ import annotations

import pytest

from tests.harness import job, needs, small_disk, submit, wait_for_outcome

pytestmark = needs("bwrap", "the job sandbox")


def nodes(cluster, **limits):
    runner = cluster.executor("example", **limits)
    server = cluster.server({"example": {"clients": runner.url, "runs_per_user": 4}})
    return server, runner


def failed_with(server, job_id: int, words: str) -> dict:
    assert wait_for_outcome(server, job_id, 60) == 204
    record = job(server, job_id)
    assert record["status"] == "Failed" and words in (record["reason"] or ""), record
    return record


def next_job_completes(server) -> None:
    assert wait_for_outcome(server, submit(server, "echo fine > out.txt"), 60) == 200


def test_a_job_over_its_memory_limit_fails_naming_it(cluster):
    server, _ = nodes(cluster, max_memory_mb=64)

    hog = submit(server, "set -o pipefail\nhead -c 400M /dev/zero | tail -n 1 > /dev/null")

    failed_with(server, hog, "memory limit exceeded (max_memory_mb = 64)")
    next_job_completes(server)


def test_a_fork_bomb_stops_at_the_process_limit(cluster):
    server, runner = nodes(cluster, max_processes=32)

    bomb = submit(server, "sh -c 'for i in $(seq 200); do sleep 30 & done; wait'")

    failed_with(server, bomb, "process limit reached (max_processes = 32)")
    next_job_completes(server)


def test_a_job_opening_too_many_files_fails_naming_the_limit(cluster):
    server, _ = nodes(cluster, max_open_files=32)

    greedy = submit(server, 'for i in $(seq 3 100); do eval "exec $i< /dev/null"; done')

    failed_with(server, greedy, "open-file limit reached (max_open_files = 32 per process)")


@pytest.mark.parametrize("script", [
    "head -c 20M /dev/zero > big",                                                 # one file past the limit
    "for i in $(seq 1 12); do head -c 1M /dev/zero > part$i; done",                # many, each under it
    "while true; do head -c 1M /dev/zero > part$RANDOM$RANDOM; sleep 0.05; done",  # never ends: the guard
], ids=["one large file", "many files", "writes for ever"])
def test_a_job_whose_output_passes_its_limit_fails_and_its_folder_is_emptied(cluster, script):
    server, runner = nodes(cluster, max_output_mb=5)

    job_id = submit(server, script)

    failed_with(server, job_id, "output limit exceeded (max_output_mb = 5)")
    tasks = runner.folder / "data" / "tasks"
    assert sum(f.stat().st_size for f in tasks.rglob("*") if f.is_file()) < 1024 * 1024
    next_job_completes(server)


def test_a_job_filling_the_nodes_disk_fails_and_the_next_job_finds_room(cluster, tmp_path):
    with small_disk(tmp_path / "small-disk", 40) as disk:
        runner = cluster.executor("example", max_output_mb=1000, data_dir=disk)
        server = cluster.server({"example": {"clients": runner.url}})

        filler = submit(server, "while true; do head -c 1M /dev/zero > part$RANDOM$RANDOM || sleep 0.1; done")

        failed_with(server, filler, "the node's disk for jobs filled up")
        next_job_completes(server)
        cluster.close()  # NOTE: before the disk goes, as the nodes write there
