"""An executor whose own disk fills up (its task table cannot be written): the end of a task is
saved before the task is forgotten, written again once there is room, and reported; no phantom
task holds a slot, and the node runs the next job. Real nodes, the executor's data folder on a
small tmpfs.

The node's data folder is mounted as a tmpfs of 8 MB, which needs root: skipped otherwise, and
failed under CI (which runs as root).
"""
from __future__ import annotations

from tests.harness import cancel, fill_disk, job, submit, wait_for_outcome, wait_until

MB = 1024 * 1024


def test_a_job_that_fills_the_executors_disk_ends_once_there_is_room_and_the_node_runs_the_next(cluster, eight_mb_disk):
    runner = cluster.executor("example", slots=2, data_dir=eight_mb_disk)
    server = cluster.server({"example": {"clients": runner.url}})
    ballast = eight_mb_disk / "ballast"  # what the operator deletes to make room
    ballast.write_bytes(b"\1" * 3 * MB)

    try:
        filler = submit(server, "head -c 20M /dev/zero > big")
        # NOTE: the node's own write of the task's end is what fails (SQLite: "database or disk is full").
        wait_until(lambda: "disk is full" in runner.log_path.read_text(errors="replace"), 20,
                   message=f"the executor's write to fail\n{runner.log()}")
        assert job(server, filler)["status"] == "Running"

        ballast.unlink()

        assert wait_for_outcome(server, filler, 20) == 204
        record = job(server, filler)
        assert (record["status"], record["exit_code"]) == ("Failed", 1)
        # NOTE: head's "No space left on device" could not be written to stderr.log either.
        assert "the node's disk for jobs was full when the job ended" in record["reason"], record
        state = runner.health().json()
        assert (state["running"], state["free"]) == (0, 2), state
        assert wait_for_outcome(server, submit(server, "echo fine > out.txt"), 20) == 200
    finally:
        cluster.close()  # NOTE: before the tmpfs goes, as the nodes still write there


def test_a_task_stopped_while_the_disk_is_full_leaves_no_phantom_slot(cluster, eight_mb_disk):
    runner = cluster.executor("example", slots=2, data_dir=eight_mb_disk)
    server = cluster.server({"example": {"clients": runner.url}})

    try:
        sleeper = submit(server, "sleep 600")
        wait_until(lambda: runner.health().json()["running"] == 1, 20, message="the job to run")
        fill_disk(eight_mb_disk)
        # NOTE: the task is stopped, but its end cannot be written: its row still says running.
        assert cancel(server, sleeper).status_code == 200
        wait_until(lambda: "disk is full" in runner.log_path.read_text(errors="replace"), 20,
                   message=f"the executor's write to fail\n{runner.log()}")

        (eight_mb_disk / "ballast").unlink()

        wait_until(lambda: runner.health().json()["running"] == 0, 20, message=f"the slot to be free\n{runner.log()}")
        assert runner.health().json()["free"] == 2
        first, second = submit(server, "echo one > out.txt"), submit(server, "echo two > out.txt")
        assert wait_for_outcome(server, first, 20) == 200 and wait_for_outcome(server, second, 20) == 200
        assert job(server, sleeper)["status"] == "Cancelled"
    finally:
        cluster.close()
