"""A GA4GH TES task on the Slurm executor (issue 16): py-tes 1.1.4 against a real server and a
Slurm executor on the real local Slurm cluster (tests/slurm_cluster.py)."""
from __future__ import annotations

import tes

from tests.harness import add_section, listing, wait_until
from tests.slurm_helpers import slurm_executor, task_of

#: The first job after a fresh cluster start waits ~3 s in Slurm's queue; then ~1 s.
OUTCOME_WAIT = 60.0


def test_a_task_with_a_content_input_and_two_executors_completes_on_slurm_with_both_logs(slurm, module_cluster):
    server = add_section(module_cluster.server({"example": {}}, start=False), "tes", {"images": "alpine=example"})
    server.start()
    executor = slurm_executor(module_cluster, "example", server)
    wait_until(lambda: listing(server).get(executor.url, {}).get("state") == "alive",
               20, 0.1, "the Slurm executor to register")
    client = tes.HTTPClient(server.url, timeout=10)

    task_id = client.create_task(tes.Task(
        name="tes-slurm", tags={"user_id": "3"}, inputs=[tes.Input(path="/data/in.txt", content="from slurm\n")],
        executors=[tes.Executor(image="alpine", command=["cat"], stdin="/data/in.txt"),
                   tes.Executor(image="alpine", command=["sh", "-c", 'echo "second $SLURM_JOB_ID"'])]))

    assert client.wait(task_id, timeout=OUTCOME_WAIT).state == "COMPLETE"
    full = client.get_task(task_id, "FULL")
    logs = full.logs[0].logs
    assert [log.exit_code for log in logs] == [0, 0]
    assert logs[0].stdout == "from slurm\n"
    assert logs[1].stdout == f"second {task_of(executor, int(task_id))['slurm_id']}\n"  # it ran as that Slurm job
