"""What a node says when it starts: its start block (fast: pure functions of the configuration), and
each start-up failure as one sentence with exit code 2 (real processes), Ctrl-C under `make run`."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from contextlib import contextmanager
from dataclasses import replace

import pytest

from actors.runtime.preflight import Refused, free_to_listen, refusing, writable_folder
from conf.settings import ClientConfig, ServerConfig, ServiceConfig, TesConfig
from conf.summary import describe_executor, describe_server, without_password
from conf.version import VERSION
from tests.harness import (MARKER, ROOT, START_TIMEOUT, free_port, processes_with_marker, refused_start,
                           wait_until, write_ini)

SECRET = "s3cret-of-the-cluster-0123"


@contextmanager
def taken_port():
    """A loopback port another program listens on, for as long as the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


# --- the start block (fast) ---------------------------------------------------------------------

def test_the_servers_start_block_names_everything_an_operator_checks_and_no_secret():
    config = ServerConfig(
        host="0.0.0.0", port=5001, data_dir="/srv/orch", database="postgresql://orch:pa55word@db:5433/orch",
        allow_anonymous=False, cluster_secret=SECRET, tokens=(("haddock", "t" * 20), ("prodigy-portal", "u" * 20)),
        services=(ServiceConfig("example", clients=("http://10.0.0.2:9000",), runs_per_user=3, max_runs=8,
                                retention_hours=1.5, max_queued_per_user=50, policy="fair_share",
                                runs_per_group=20, max_runtime=3600, max_cores=8),
                  ServiceConfig("prodigy")),
        tes=TesConfig((("alpine", "example"), ("python:3.11", "prodigy")), public_url="https://orch.example.org",
                      url_hosts=("data.example.org", "*.zenodo.org")))

    text = describe_server(config, "9.9.9")

    assert text.splitlines()[0] == "orchestrator server 9.9.9"
    assert "address: http://0.0.0.0:5001" in text
    assert "database: postgresql://orch@db:5433/orch" in text and "pa55word" not in text
    assert "data folder: /srv/orch" in text
    assert ("service example: runs_per_user 3, max_runs 8, max_queued_per_user 50, retention 1.5 h, "
            "fair_share (half-life 24 h), runs_per_group 20, max_runtime 3600 s, max_cores 8; executors: http://10.0.0.2:9000") in text
    assert ("service prodigy: runs_per_user 5, max_runs the slots of its executors, max_queued_per_user unlimited, "
            "retention 48 h, round_robin; executors: none configured") in text
    assert ("TES: /ga4gh/tes/v1, alpine → example, python:3.11 → prodigy, other images refused; "
            "urls to data.example.org, *.zenodo.org; links under https://orch.example.org") in text
    assert "auth: portal tokens (haddock, prodigy-portal)" in text
    assert "cluster secret: set" in text
    assert "t" * 20 not in text and SECRET not in text


@pytest.mark.parametrize("host, allow, expected", [
    ("127.0.0.1", False, "auth: anonymous, loopback callers only"),
    ("::1", False, "address: http://[::1]:5000"),
    ("0.0.0.0", True, "auth: anonymous on 0.0.0.0 (allow_anonymous = true)"),
])
def test_a_server_without_tokens_says_who_may_call_it(host, allow, expected):
    config = ServerConfig(host=host, allow_anonymous=allow, services=(ServiceConfig("example"),))

    text = describe_server(config, VERSION)

    assert expected in text
    assert "cluster secret: not set" in text
    assert "database: var/server/orchestrator.sqlite" in text
    assert "TES: off (no [tes] images or default_service: every task is refused)" in text


def test_the_executors_start_block_names_its_service_backend_slots_sandbox_limits_and_server():
    config = ClientConfig(service="prodigy", port=9001, slots=3, server_url="http://127.0.0.1:5000",
                          data_dir="/srv/exec-{service}-{port}", max_memory_mb=2048, max_processes=64,
                          max_output_mb=100, max_open_files=256, cluster_secret=SECRET)

    text = describe_executor(config, "9.9.9", "in a bubblewrap sandbox, without network", "cgroup v2 under /x")

    assert text.splitlines()[0] == "orchestrator executor 9.9.9"
    for line in ("service: prodigy", "address: http://127.0.0.1:9001",
                 "database: /srv/exec-prodigy-9001/executor.sqlite", "data folder: /srv/exec-prodigy-9001",
                 "backend: local, 3 slots", "jobs run in a bubblewrap sandbox, without network",
                 "limits per job (cgroup v2 under /x): memory 2048 MB, 64 processes, output 100 MB, 256 open files",
                 "server: http://127.0.0.1:5000", "cluster secret: set"):
        assert line in text
    assert SECRET not in text


def test_a_slurm_executor_says_where_its_jobs_go():
    config = replace(ClientConfig(), backend="slurm", partition="short", slurm_workdir="/shared/{service}",
                     slots=64)

    text = describe_executor(config, VERSION, "without a sandbox", "rlimits and Slurm's own")

    assert "backend: slurm (partition short, workdir /shared/example), 64 slots" in text
    assert "server: none" in text


@pytest.mark.parametrize("url, shown", [
    ("postgresql://orch:secret@db/orch", "postgresql://orch@db/orch"),
    ("postgres://orch:p%40ss@[::1]:5432/orch", "postgres://orch@[::1]:5432/orch"),
    ("postgresql://db/orch", "postgresql://db/orch"),
    ("var/server/orchestrator.sqlite", "var/server/orchestrator.sqlite"),
])
def test_a_database_url_is_shown_without_its_password(url, shown):
    assert without_password(url) == shown


@pytest.mark.processes
def test_the_version_is_the_one_setup_py_packages():
    packaged = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
    assert packaged.stdout.strip().splitlines()[-1] == VERSION


# --- the checks (fast) --------------------------------------------------------------------------

def test_a_data_dir_under_a_file_is_refused_naming_the_key_the_folder_and_why(tmp_path):
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "data"

    with pytest.raises(Refused) as refused:
        writable_folder("[server] data_dir", str(folder))

    assert str(refused.value).startswith(f"[server] data_dir {folder} cannot be written: "
                                         f"{tmp_path / 'a-file'} is a file, not a folder;")


@pytest.mark.processes  # mount and umount
def test_a_data_dir_on_a_read_only_file_system_is_refused_saying_so(tmp_path):
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(tmp_path)], capture_output=True)
    if mounted.returncode != 0:  # NOTE: mounting needs root; chmod would not stop root
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(Refused, match="^" + re.escape(f"[client] data_dir {tmp_path}/data cannot be written: "
                                                          f"read-only file system;")):
            writable_folder("[client] data_dir", str(tmp_path / "data"))
    finally:
        subprocess.run(["umount", "-l", str(tmp_path)], capture_output=True)


def test_a_writable_data_dir_is_created(tmp_path):
    writable_folder("[client] data_dir", str(tmp_path / "new" / "data"))
    assert os.listdir(tmp_path / "new" / "data") == []


def test_a_port_in_use_is_refused_naming_the_port_and_how_to_pick_another():
    with taken_port() as port:
        with pytest.raises(Refused) as refused:
            free_to_listen("127.0.0.1", port, "[client]")

    assert str(refused.value) == (f"port {port} on 127.0.0.1 is already in use (another node, or another program, "
                                  f"listens there); pick another with the `port` key of [client] or --port N.")
    free_to_listen("127.0.0.1", port, "[client]")  # free again


def test_an_address_not_of_this_machine_is_refused():
    with pytest.raises(Refused, match=r"192\.0\.2\.1 is not an address of this machine; set the `host` key"):
        free_to_listen("192.0.2.1", free_port(), "[server]")


def test_a_missing_package_is_one_sentence_saying_how_to_start_the_node(capsys):
    def main():
        raise ModuleNotFoundError("No module named 'thespian'", name="thespian")

    assert refusing("run_server.py", main) == 2
    said = capsys.readouterr().err
    assert said == (f"run_server.py: the Python package 'thespian' is not installed for {sys.executable}; start the "
                    f"node with `make run` (which installs it into .venv), or with .venv/bin/python.\n")


# --- start-up failures of real processes --------------------------------------------------------

def one_sentence(result: subprocess.CompletedProcess, program: str) -> str:
    """The node's refusal: exit code 2 and a single line on stderr from `program` (logs aside)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    said = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: ")]
    assert len(said) == 1, result.stderr
    return said[0]


def server_ini(tmp_path, port: int, **server) -> str:
    write_ini(tmp_path / "server.ini", {"server": {"port": port, "data_dir": tmp_path / "data", **server},
                                        "service.example": {"clients": "http://127.0.0.1:9"}})
    return str(tmp_path / "server.ini")


def client_ini(tmp_path, port: int, **client) -> str:
    write_ini(tmp_path / "client.ini", {"client": {"service": "example", "port": port,
                                                   "data_dir": tmp_path / "data", **client}})
    return str(tmp_path / "client.ini")


EACH_NODE = pytest.mark.parametrize("program, ini, section", [("run_server.py", server_ini, "[server]"),
                                                              ("run_client.py", client_ini, "[client]")])


@pytest.mark.processes
@EACH_NODE
def test_a_node_on_a_port_in_use_says_so_and_how_to_pick_another(tmp_path, program, ini, section):
    with taken_port() as port:
        result = refused_start(program, "--config", ini(tmp_path, port))

    assert one_sentence(result, program) == (
        f"{program}: port {port} on 127.0.0.1 is already in use (another node, or another program, listens there); "
        f"pick another with the `port` key of {section} or --port N.")


@pytest.mark.processes
@EACH_NODE
def test_a_node_whose_data_dir_cannot_be_written_says_which_folder_and_why(tmp_path, program, ini, section):
    # NOTE: under a file, not a chmod'ed folder: root (the tests' user here) writes through any mode.
    (tmp_path / "a-file").write_text("")
    folder = tmp_path / "a-file" / "data"

    result = refused_start(program, "--config", ini(tmp_path, free_port(), data_dir=folder))

    assert one_sentence(result, program).startswith(
        f"{program}: {section} data_dir {folder} cannot be written: {tmp_path / 'a-file'} is a file, not a folder;")


@pytest.mark.processes
@EACH_NODE
def test_a_node_started_without_its_packages_says_to_use_make_run_or_the_venv(tmp_path, program, ini, section):
    # NOTE: `-S`: the same interpreter without its site-packages, as the system's python3 is without
    # the venv's (whatever that one has installed).
    result = refused_start("-S", program, "--config", ini(tmp_path, free_port()))

    said = one_sentence(result, program)
    assert "is not installed for" in said and "`make run`" in said and ".venv/bin/python" in said


# --- Ctrl-C under `make run` --------------------------------------------------------------------

def make_run(tmp_path, marker: str) -> tuple[subprocess.Popen, int, int]:
    """`make run` as an operator starts it in a terminal (a process group of its own, which Ctrl-C
    signals as a whole), on free ports in `tmp_path`: the make process and the two ports."""
    server_port, client_port = free_port(), free_port()
    server = tmp_path / "server.ini"
    write_ini(server, {"server": {"port": server_port, "data_dir": tmp_path / "server"},
                       "service.example": {"clients": f"http://127.0.0.1:{client_port}"}})
    client = client_ini(tmp_path, client_port, data_dir=tmp_path / "executor",
                        server_url=f"http://127.0.0.1:{server_port}")
    output = open(tmp_path / "make.log", "wb")
    # NOTE: STAMP= : the venv is this interpreter's, not one make would create in the checkout.
    make = subprocess.Popen(["make", "-s", "run", f"PY={sys.executable}", "STAMP=", f"SERVER_ARGS=--config {server}",
                             f"CLIENT_ARGS=--service example --config {client}"],
                            cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, MARKER: marker}, start_new_session=True)
    output.close()
    return make, server_port, client_port


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.processes
@pytest.mark.parametrize("when", ["while it starts", "while it serves"])
def test_ctrl_c_under_make_run_stops_both_nodes_without_a_traceback(tmp_path, when):
    marker = uuid.uuid4().hex
    make, server_port, client_port = make_run(tmp_path, marker)
    log = tmp_path / "make.log"
    try:
        if when == "while it starts":  # the first node has started logging; neither serves yet
            wait_until(lambda: log.read_text(errors="replace").strip(), START_TIMEOUT, 0.01, "the first log line")
        else:
            wait_until(lambda: answers(server_port) and answers(client_port), START_TIMEOUT, 0.05,
                       f"both nodes to serve\n{log.read_text(errors='replace')}")

        os.killpg(make.pid, signal.SIGINT)

        make.wait(30)
        wait_until(lambda: not processes_with_marker(marker), 15, 0.05, "every process of both nodes to exit")
    finally:
        for pid in processes_with_marker(marker):
            os.kill(pid, signal.SIGKILL)
    said = log.read_text(errors="replace")
    assert "Traceback" not in said and "KeyboardInterrupt" not in said, said
    if when == "while it serves":
        assert "orchestrator server " in said and "orchestrator executor " in said


@pytest.mark.processes
def test_a_node_whose_fixed_actor_admin_port_is_taken_says_so(tmp_path):
    with taken_port() as admin_port:
        result = refused_start("run_server.py", "--config", server_ini(tmp_path, free_port(), actor_admin_port=admin_port))

    assert one_sentence(result, "run_server.py") == (
        f"run_server.py: actor_admin_port {admin_port} is already in use by another process; "
        f"pick another, or 0 for any free port.")


@pytest.mark.processes
@EACH_NODE
def test_a_node_whose_database_is_not_one_says_so(tmp_path, program, ini, section):
    file = "orchestrator.sqlite" if section == "[server]" else "executor.sqlite"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / file).write_bytes(b"not a database, " * 512)

    result = refused_start(program, "--config", ini(tmp_path, free_port()))

    assert one_sentence(result, program) == (
        f"{program}: the database {tmp_path / 'data' / file} cannot be opened: file is not a database.")
