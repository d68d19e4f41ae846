"""Starting and stopping nodes: stale actor systems, side-by-side executors, configuration errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness import (MARKER, ROOT, START_TIMEOUT, Node, commands_running, free_port, job, needs, submit,
                            wait_for_outcome, wait_until, write_ini)


#: Whatever kills a node, every process of it (actor system and job scripts) is gone within this.
GONE_WITHIN = 10.0


def running_job(server: Node) -> int:
    job_id = submit(server, "sleep 600")
    wait_until(lambda: job(server, job_id)["status"] == "Running", 20, 0.05, "the job to run")
    return job_id


@pytest.mark.parametrize("how", ["process group", "main process alone"])
def test_no_process_of_a_killed_node_outlives_it_not_its_actor_system_nor_its_scripts(cluster, how):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})
    running_job(server)
    wait_until(lambda: commands_running(executor.marker, b"sleep", b"600") == 1, 10, 0.05, "the script to run")

    for node in (server, executor):
        node.kill_group() if how == "process group" else node.kill_main()

    for node in (server, executor):
        node.wait_gone(GONE_WITHIN)


def test_a_node_started_right_after_a_kill_9_takes_its_fixed_admin_port_again(cluster):
    executor = cluster.executor("example", actor_admin_port=free_port())
    server = cluster.server({"example": {"clients": executor.url}}, actor_admin_port=free_port())
    before = submit(server, "echo before > out.txt")
    assert wait_for_outcome(server, before) == 200

    for _ in range(3):
        server.kill_main()
        server = server.restart()
        executor.kill_main()
        executor = executor.restart()

    after = submit(server, "echo after > out.txt")
    assert wait_for_outcome(server, after) == 200
    assert job(server, before)["status"] == "Completed"


@needs("tmux", "a terminal to close")
def test_a_node_whose_terminal_is_closed_leaves_no_process_behind(cluster):
    executor = cluster.executor("example", start=False)
    server = cluster.server({"example": {"clients": executor.url}}, start=False)
    sessions = [in_terminal(node) for node in (executor, server)]
    running_job(server)

    for session in sessions:  # the terminal goes: its processes get SIGHUP
        subprocess.run(["tmux", "kill-session", "-t", session], check=True)

    for node in (server, executor):
        node.wait_gone(GONE_WITHIN)


def in_terminal(node: Node) -> str:
    """Start `node` in a tmux session of its own, as an operator would in a terminal; its name."""
    session = f"orchestrator-{node.marker[:12]}"
    command = " ".join([sys.executable, *node.args, ">>", str(node.log_path), "2>&1"])
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-e", f"{MARKER}={node.marker}", command],
                   cwd=ROOT, check=True)
    wait_until(node.healthy, START_TIMEOUT, 0.05, f"{node.kind} to start in its terminal\n{node.log()}")
    return session


def test_two_executors_share_one_config_file_with_only_their_ports_differing(cluster, tmp_path):
    shared = tmp_path / "client.ini"
    write_ini(shared, {"client": {"service": "example", "data_dir": tmp_path / "exec-{port}", "slots": 2}})
    nodes = []
    for _ in range(2):
        port = free_port()
        node = Node("executor", port, tmp_path, ["run_client.py", "--config", str(shared), "--port", str(port)], {})
        cluster.nodes.append(node)
        nodes.append(node.start())
    server = cluster.server({"example": {"clients": f"{nodes[0].url}, {nodes[1].url}", "runs_per_user": 4}})

    ids = [submit(server, "sleep 0.3") for _ in range(4)]

    assert all(wait_for_outcome(server, j) == 200 for j in ids)
    assert {job(server, j)["executor"] for j in ids} == {nodes[0].url, nodes[1].url}
    assert os.path.isdir(tmp_path / f"exec-{nodes[0].port}") and os.path.isdir(tmp_path / f"exec-{nodes[1].port}")


def test_the_originals_environment_variables_configure_a_service(cluster):
    executor = cluster.executor("example")
    server = cluster.server({}, env={"SERVICE_EXAMPLE_UPLOAD_URL": f"{executor.url}/submit",
                                     "SERVICE_EXAMPLE_RUNS_PER_USER": "3"})
    job_id = submit(server, "echo ok > out.txt")
    assert wait_for_outcome(server, job_id) == 200


@pytest.mark.processes
def test_a_bad_configuration_value_stops_start_up_with_one_sentence_naming_the_key(tmp_path):
    config = tmp_path / "server.ini"
    write_ini(config, {"server": {"port": "five thousand", "data_dir": tmp_path / "data"},
                       "service.example": {"clients": "http://127.0.0.1:9"}})

    result = subprocess.run([sys.executable, "run_server.py", "--config", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "[server] port must be a whole number" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.processes
def test_an_executor_with_a_bad_slot_count_refuses_to_start(tmp_path):
    config = tmp_path / "client.ini"
    write_ini(config, {"client": {"slots": 0, "data_dir": tmp_path / "data"}})

    result = subprocess.run([sys.executable, "run_client.py", "--service", "example", "--config", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "[client] slots must be between 1" in result.stderr
