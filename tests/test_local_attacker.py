"""Another local user attacks a node's ports: nothing they send is unpickled, nothing runs.

Thespian's actors exchange pickles over TCP on 127.0.0.1. Every port a node listens on (its HTTP
API, the actor system's admin, logger and each actor) gets, from user `nobody`, a frame that runs
a command when unpickled; the node drops and logs each, and jobs still run. The frame check itself
(forged, replayed, stale, garbled) is tested without processes in tests/test_frame_auth.py.
"""
from __future__ import annotations

import os
import pickle
import subprocess

import pytest

from tests.harness import submit, wait_for_outcome, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")


class RunsCommand:
    """Unpickling this runs a shell command (what an attacker would send)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def listening_ports(pids: list[int]) -> set[int]:
    """The TCP ports on which these processes listen."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for line in handle.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def send_as_nobody(port: int, frame: bytes) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", "bash", "-c", f"cat > /dev/tcp/127.0.0.1/{port}"],
                   input=frame, timeout=10, check=False, capture_output=True)


def thespian_frame(payload: bytes) -> bytes:
    """A frame as Thespian's TCP transport reads it: the length, '>', the pickle."""
    return b"%d>" % len(payload) + payload


def drops(*nodes) -> int:
    return sum(node.log().count("dropped an actor-system frame") for node in nodes)


def test_a_pickle_sent_by_another_local_user_to_any_port_of_a_node_runs_nothing(cluster, tmp_path):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})
    proof = tmp_path / "attack-succeeded"
    nodes = (server, executor)
    # The main process: HTTP, and its own end of the actor system (it reads that only when it asks).
    main_ports = set().union(*(listening_ports([node.process.pid]) for node in nodes))
    # The actor system: admin, logger, actors (forked from the main process, they hold its sockets too).
    actor_ports = set().union(*(listening_ports(sorted(node.pids(main=False))) for node in nodes)) - main_ports
    assert len(actor_ports) >= 11, actor_ports  # 2 admins, 2 loggers, the executor and 7 server actors

    frame = thespian_frame(pickle.dumps(RunsCommand(f"id > {proof}")))
    for port in main_ports | actor_ports:
        send_as_nobody(port, frame)
        send_as_nobody(port, thespian_frame(os.urandom(64)))  # garbled

    # Every port of the actor system dropped both frames and said so; none ran the command.
    wait_until(lambda: proof.exists() or drops(*nodes) >= 2 * len(actor_ports), 20, 0.1,
               f"{2 * len(actor_ports)} dropped frames to be logged (logged: {drops(*nodes)})")
    assert not proof.exists(), f"the pickle ran: {proof.read_text()}"
    job_id = submit(server, "echo still fine > out.txt")
    assert wait_for_outcome(server, job_id) == 200
    assert not proof.exists()
