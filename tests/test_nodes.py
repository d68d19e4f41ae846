"""Starting and stopping nodes: stale actor systems, side-by-side executors, configuration errors."""
from __future__ import annotations

import os
import subprocess
import sys

from actors.scripts import start_time
from tests.conftest import ROOT, Node, free_port, job, processes_with_marker, still_running, submit, wait_for_outcome, wait_until, write_ini


def test_a_restart_after_a_crash_clears_the_stale_actor_system_instead_of_joining_it(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})
    before = submit(server, "echo before > out.txt")
    assert wait_for_outcome(server, before) == 200

    # Given: the server's main process and its guardian die; its actor system lives on
    server.kill_group()
    stale = {pid: start_time(pid) for pid in processes_with_marker(server.marker)}
    assert stale, "the Thespian admin should outlive its creator"

    # When: the server is started again with the same configuration
    again = Node("server", server.port, server.folder, server.args, {})
    cluster.nodes.append(again)
    again.start()

    # Then: every process of the crashed run is gone, and jobs run
    wait_until(lambda: not any(still_running(pid, born) for pid, born in stale.items()), 10, 0.05,
               "the stale actor system to be shut down")
    after = submit(again, "echo after > out.txt")
    assert wait_for_outcome(again, after) == 200
    assert job(again, before)["status"] == "Completed"


def test_when_only_the_main_process_is_killed_its_guardian_shuts_the_actor_system_down(cluster):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}})

    server.kill_main()

    wait_until(lambda: not processes_with_marker(server.marker), 10, 0.05, "the actor system to be shut down")


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


def test_the_seeds_environment_variables_configure_a_service(cluster):
    executor = cluster.executor("example")
    server = cluster.server({}, env={"SERVICE_EXAMPLE_UPLOAD_URL": f"{executor.url}/submit",
                                     "SERVICE_EXAMPLE_RUNS_PER_USER": "3"})
    job_id = submit(server, "echo ok > out.txt")
    assert wait_for_outcome(server, job_id) == 200


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


def test_an_executor_with_a_bad_slot_count_refuses_to_start(tmp_path):
    config = tmp_path / "client.ini"
    write_ini(config, {"client": {"slots": 0, "data_dir": tmp_path / "data"}})

    result = subprocess.run([sys.executable, "run_client.py", "--service", "example", "--config", str(config)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "[client] slots must be between 1" in result.stderr
