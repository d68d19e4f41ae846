"""The systemd units of deploy/systemd: the keys the deployment relies on, and that what they start
(script, configuration sample, data folder) matches the repository and the configuration loader.

Fast: it parses the files and loads the shipped samples; it starts nothing."""
from __future__ import annotations

import os
import re
import shlex

import pytest

from conf.settings import load_client_config, load_server_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = os.path.join(ROOT, "deploy", "systemd")
SERVER = "orchestrator-server.service"
EXECUTOR = "orchestrator-executor@.service"
#: Where docs/deploy.md installs the code and the configuration.
PREFIX = "/opt/orchestrator"
ETC = "/etc/orchestrator"
#: The configuration file each unit names, and the sample of the repository it is a copy of.
SAMPLES = {f"{ETC}/server.ini": "conf/server.ini", f"{ETC}/client-%i.ini": "conf/client.ini"}
#: Settings that keep bubblewrap from making its namespaces or mounting the jobs' /proc (the
#: executor's unit explains each); the executor's unit must not have them.
BREAK_BWRAP = ("RestrictNamespaces", "PrivateUsers", "SystemCallFilter", "ProtectKernelTunables",
               "ProtectControlGroups", "ProtectProc")
UNITS_OF_TIME = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def parse_unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (keys may repeat, e.g. Environment)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    with open(os.path.join(UNITS, name), encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), {})
                continue
            assert current is not None, f"{name}: {line!r} before any section"
            key, sep, value = line.partition("=")
            assert sep, f"{name}: {line!r} is not key=value"
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"{section} {key}: {values}"
    return values[0]


def seconds(value: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * UNITS_OF_TIME[unit]
    return total


def environment(unit, instance: str) -> dict[str, str]:
    pairs = (value.replace("%i", instance).split("=", 1) for value in unit["Service"].get("Environment", []))
    return dict(pairs)


@pytest.fixture(scope="module", params=[SERVER, EXECUTOR])
def unit(request):
    return parse_unit(request.param)


def test_the_keys_the_issue_names(unit):
    service = unit["Service"]
    # NOTE: mixed, not the issue's control-group: SIGTERM to the main process only (which drains and
    # stops its actor processes itself), then SIGKILL to whatever is left of the cgroup. control-group
    # SIGTERMs the actor processes and the jobs too: under a real systemd a stop then lost the running
    # job instead of draining it (tests/containers/systemd_test.sh).
    assert one(unit, "KillMode") == "mixed"
    assert one(unit, "Restart") == "on-failure"
    assert one(unit, "User") == "orchestrator" or one(unit, "DynamicUser") == "yes"
    assert one(unit, "StateDirectory").startswith("orchestrator/")
    assert one(unit, "NoNewPrivileges") == "yes"
    assert one(unit, "ProtectSystem") == "strict"
    assert one(unit, "PrivateTmp") == "yes"
    assert "multi-user.target" in unit["Install"]["WantedBy"]
    # NOTE: the data folder (DATA_PATH, which overrides data_dir) is the state directory, writable.
    state = "/var/lib/" + one(unit, "StateDirectory")
    assert service["Environment"].count(f"DATA_PATH={state}") == 1
    assert state in " ".join(service["ReadWritePaths"]).split()


def test_exec_start_runs_the_repository_script_with_the_venv_and_a_sample(unit):
    words = shlex.split(one(unit, "ExecStart"))
    assert words[0] == f"{PREFIX}/.venv/bin/python"
    assert words[1].startswith(PREFIX + "/")
    assert os.path.isfile(os.path.join(ROOT, os.path.relpath(words[1], PREFIX)))
    config = words[words.index("--config") + 1]
    assert os.path.isfile(os.path.join(ROOT, SAMPLES[config]))
    assert one(unit, "WorkingDirectory") == PREFIX


def test_the_server_starts_on_the_sample_with_its_data_in_the_state_directory():
    unit = parse_unit(SERVER)
    assert shlex.split(one(unit, "ExecStart"))[1].endswith("/run_server.py")
    config = load_server_config(os.path.join(ROOT, "conf/server.ini"), environment(unit, ""))
    assert config.data_dir == "/var/lib/orchestrator/server"
    assert config.database_url == "/var/lib/orchestrator/server/orchestrator.sqlite"


def test_the_executor_instance_is_its_service_with_its_own_data_folder(tmp_path, monkeypatch):
    unit = parse_unit(EXECUTOR)
    # NOTE: relative paths are taken from WorkingDirectory (PREFIX): the PRODIGY venv is there.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".venv-prodigy").mkdir()
    words = shlex.split(one(unit, "ExecStart"))
    assert words[1].endswith("/run_client.py")
    assert words[words.index("--service") + 1] == "%i"
    assert "%i" in words[words.index("--config") + 1]
    for service in ("example", "prodigy"):
        config = load_client_config(os.path.join(ROOT, "conf/client.ini"), environment(unit, service),
                                    service=service)
        assert config.service == service
        assert config.data_path == f"/var/lib/orchestrator/executor-{service}"
    assert one(unit, "StateDirectory") == "orchestrator/executor-%i"


def test_stop_timeouts_cover_the_graceful_stop_and_the_drain():
    from actors.node.executor import DRAIN_FETCH_WAIT
    from run_server import STOP_GRACE_SECONDS

    # NOTE: the server exits within 10 s of SIGTERM (docs/reliability.md); its requests get 5 s.
    assert seconds(one(parse_unit(SERVER), "TimeoutStopSec")) >= max(20, 2 * STOP_GRACE_SECONDS)
    # NOTE: a drain waits for the running jobs, then up to 30 s for the server's fetch of each result.
    assert seconds(one(parse_unit(EXECUTOR), "TimeoutStopSec")) >= 10 * DRAIN_FETCH_WAIT
    assert one(parse_unit(EXECUTOR), "KillSignal") == "SIGTERM"  # SIGTERM drains; SIGINT would not


def test_the_executor_unit_leaves_bubblewrap_its_namespaces_and_the_jobs_their_cgroups():
    service = parse_unit(EXECUTOR)["Service"]
    assert not set(BREAK_BWRAP) & set(service), "these keep bwrap from making the jobs' sandboxes"
    assert service["Delegate"] == ["yes"]  # a cgroup per job (actors/node/job_cgroups.py)


def test_seconds():
    assert seconds("30") == 30 and seconds("1h") == 3600 and seconds("1min 30s") == 90
