"""A node whose actor system loses its admin or its logger (kill -9, the OOM killer) heals itself.

Real server and executor processes; the admin's and logger's pids are the ones they record in the
node's data folder (actors/runtime/lifeline.py). While the node rebuilds its actor system, uploads are
answered 503 with Retry-After (or 200, before the loss is noticed or after the rebuild); every job
accepted with 200 then ends Completed with its own output, and nothing of the old system is left.
"""
from __future__ import annotations

import os
import signal
import threading

import pytest
import requests

from actors.runtime import lifeline
from tests.harness import Node, job, log_lines, script, upload, wait_for_outcome, wait_until

#: The node answers /health with 200 again within this after the loss (the watchdog looks every
#: 0.5 s; a rebuild takes well under a second on a quiet machine).
HEALED_WITHIN = 20.0


@pytest.fixture(scope="module")
def nodes(module_cluster):
    executor = module_cluster.executor("example", slots=4)
    server = module_cluster.server({"example": {"clients": executor.url, "runs_per_user": 4}})
    return {"server": server, "executor": executor}


class Uploader(threading.Thread):
    """Uploads jobs one after another until stopped; keeps every answer."""

    def __init__(self, server: Node):
        super().__init__(daemon=True)
        self.server = server
        self.answers: list[tuple[int, str | None, dict]] = []
        self.halt = threading.Event()

    def run(self):
        n = 0
        while not self.halt.is_set():
            n += 1
            response = upload(self.server, {"run.sh": script(f"echo job-{n} > out.txt"), "n.txt": str(n).encode()})
            self.answers.append((response.status_code, response.headers.get("Retry-After"), response.json()))


@pytest.mark.parametrize("role", ["logger", "admin"])
@pytest.mark.parametrize("kind", ["server", "executor"])
def test_a_node_rebuilds_its_actor_system_when_its_admin_or_logger_is_killed(nodes, kind, role):
    server, victim = nodes["server"], nodes[kind]
    record = lifeline.recorded(str(victim.folder / "data"), role)
    assert record is not None, f"the {kind}'s {role} recorded no pid"
    old = victim.pids(main=False)
    uploader = Uploader(server)
    uploader.start()
    wait_until(lambda: len(uploader.answers) >= 3, 20, 0.01, "a few uploads before the kill")

    os.kill(record[0], signal.SIGKILL)  # as the OOM killer might

    def healed():
        health = victim.health()
        new = lifeline.recorded(str(victim.folder / "data"), role)
        return health.status_code == 200 and new is not None and new != record
    wait_until(healed, HEALED_WITHIN, 0.05, f"the {kind} to answer /health 200 with a new {role}\n{victim.log()}")
    wait_until(lambda: _after_heal(uploader), 20, 0.01, "an upload answered after the rebuild")
    uploader.halt.set()
    uploader.join(30)

    codes = {code for code, _, _ in uploader.answers}
    assert codes <= {200, 503}, uploader.answers
    refused = [(retry, body) for code, retry, body in uploader.answers if code == 503]
    assert all(retry and body["title"] == "Restarting" for retry, body in refused), refused
    # the server refuses uploads while it rebuilds (a rebuild takes long enough for several); an
    # executor's rebuild is invisible to them
    assert refused if kind == "server" else not refused
    accepted = [body["id"] for code, _, body in uploader.answers if code == 200]
    for job_id in accepted:
        assert wait_for_outcome(server, job_id, 60) == 200, job(server, job_id)
    # every job ran its own script, once per attempt that counts
    for job_id in accepted[-3:]:
        assert requests.get(f"{server.url}/download/{job_id}", timeout=10).status_code == 200
    # nothing of the old actor system is left: its actors died with their admin
    wait_until(lambda: not (old & victim.pids(main=False)), 10, 0.05, "the old actor processes to be gone")
    assert any("the actor system lost" in line for line in log_lines(victim))  # NOTE: log() is only its tail


def _after_heal(uploader: Uploader) -> bool:
    """The last answer is a 200: uploads are taken again."""
    return bool(uploader.answers) and uploader.answers[-1][0] == 200
