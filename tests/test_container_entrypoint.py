"""The image's entrypoint (deploy/container/entrypoint.py): the node command it execs and the /health
target it leaves for the HEALTHCHECK, and what an executor says in a container where bubblewrap cannot
start. Fast: pure functions on the repository's own samples."""
from __future__ import annotations

import importlib.util
import os

import pytest

from conf.settings import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = importlib.util.spec_from_file_location("entrypoint", os.path.join(ROOT, "deploy", "container", "entrypoint.py"))
entrypoint = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(entrypoint)
IMAGE_SERVER_INI = os.path.join(ROOT, "deploy", "container", "server.ini")
IMAGE_CLIENT_INI = os.path.join(ROOT, "deploy", "container", "client.ini")
SECRET = "compose-secret-0123456789"


def test_each_role_runs_its_node_with_the_images_configuration_unless_one_is_named():
    assert entrypoint.node_command("server", [], python="py") == [
        "py", "-u", "/app/run_server.py", "--config", "/etc/orchestrator/server.ini"]
    assert entrypoint.node_command("executor", ["--service", "prodigy", "--port", "9001"], python="py") == [
        "py", "-u", "/app/run_client.py", "--config", "/etc/orchestrator/client.ini", "--service", "prodigy",
        "--port", "9001"]
    assert entrypoint.node_command("server", ["--config=/mnt/my.ini"], python="py") == [
        "py", "-u", "/app/run_server.py", "--config=/mnt/my.ini"]


def test_options_alone_are_the_servers(monkeypatch):
    execs = []
    monkeypatch.setattr(entrypoint.os, "execv", lambda path, argv: execs.append(argv))
    monkeypatch.setattr(entrypoint.os, "execvp", lambda path, argv: execs.append(["execvp", *argv]))
    monkeypatch.setattr(entrypoint.os, "chdir", lambda path: None)
    monkeypatch.setattr(entrypoint, "HEALTH_FILE", os.devnull)
    entrypoint.main(["--port", "5001"])
    entrypoint.main(["sh", "-c", "true"])
    assert execs[0][2:] == ["/app/run_server.py", "--config", "/etc/orchestrator/server.ini", "--port", "5001"]
    assert execs[1] == ["execvp", "sh", "-c", "true"]


def test_the_health_target_is_the_nodes_own_port_and_an_executor_gets_the_secret_from_the_environment():
    server = ["py", "-u", "/app/run_server.py", "--config", IMAGE_SERVER_INI]
    assert entrypoint.health_target("server", server, {"CLUSTER_SECRET": SECRET}) == (
        "http://127.0.0.1:5000/health", "")  # the server's /health is public: its secret is in no file
    # --log-level wins over a bad LOG_LEVEL, for the node and so for its health target
    assert entrypoint.health_target("server", [*server, "--log-level", "debug", "--port", "5001"],
                                    {"CLUSTER_SECRET": SECRET, "LOG_LEVEL": "loud"})[0] == "http://127.0.0.1:5001/health"
    # (not prodigy: its read_only_paths, /opt/prodigy, exists only in its image)
    executor = ["py", "-u", "/app/run_client.py", "--config", IMAGE_CLIENT_INI, "--service", "example", "--port", "9001"]
    assert entrypoint.health_target("executor", executor, {"CLUSTER_SECRET": SECRET}) == (
        "http://127.0.0.1:9001/health", SECRET)


def test_the_images_configurations_refuse_to_start_without_a_cluster_secret():
    # 0.0.0.0 in a container: the nodes themselves say what is missing, before serving anyone.
    for role, path in (("server", IMAGE_SERVER_INI), ("executor", IMAGE_CLIENT_INI)):
        with pytest.raises(ConfigError, match="cluster_secret"):
            entrypoint.health_target(role, ["py", "-u", "x", "--config", path], {})


def test_an_executor_that_cannot_start_bubblewrap_in_a_container_names_the_two_options_it_needs():
    from actors.node.sandbox import bwrap_hint

    assert "seccomp=unconfined" in bwrap_hint(True) and "systempaths=unconfined" in bwrap_hint(True)
    assert "user namespaces" in bwrap_hint(False)
