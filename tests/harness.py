"""Harness for tests and benchmarks: real server and executor processes on free ports, in temp folders.

`Cluster` starts nodes with `python run_server.py` / `python run_client.py` exactly as an operator
would, each with a config file of its own. Every process a node starts (its actor system included)
carries a marker in its environment, so teardown can prove that nothing was left behind, and kill
whatever was.
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import falcon.testing
import pytest
import requests
from thespian.actors import Actor, ActorSystemMessage, WakeupMessage

from actors.runtime import system
from actors.runtime.processes import start_time
from conf import metrics
from conf.settings import ENVIRONMENT as settings_environment, ServerConfig, ServiceConfig
from web.server_app import create_app

ROOT = Path(__file__).resolve().parent.parent
MARKER = "ORCHESTRATOR_TEST_NODE"
START_TIMEOUT = 30.0


def needs(program: str, why: str):
    """Skip a test when `program` is missing; under CI (which installs it) fail instead."""
    return pytest.mark.skipif(shutil.which(program) is None and os.environ.get("CI") != "true",
                              reason=f"{program} is not installed ({why}); `make test` installs it")


@contextmanager
def small_disk(folder: Path, megabytes: int):
    """A tmpfs of `megabytes` mounted at `folder`, unmounted afterwards (lazily: a node may still
    hold files there). Mounting needs root: the test is skipped otherwise, and fails under CI."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        why = f"cannot mount a small tmpfs here (it needs root): {mounted.stderr.decode().strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill_disk(folder: Path, leave_free: int = 0) -> Path:
    """Take all but `leave_free` bytes of the disk holding `folder` with a ballast file (as another
    program of the node might); returns its path, to delete to make room again."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as handle:
        try:
            while True:
                stats = os.statvfs(folder)
                room = stats.f_bavail * stats.f_frsize - leave_free
                if room <= 0:
                    break
                handle.write(b"\1" * min(room, 64 * 1024))
                handle.flush()
        except OSError:
            pass  # full
    return ballast


def bind_server_database(path: str) -> str:
    """Bind the server's entities to the SQLite file `path`, unless this process bound them already
    (Pony binds a `db` once; then the first file stays). Returns the file in use."""
    from storage import database
    from storage.models import db
    database.bind(db, path, create_tables=True)
    return db.provider.pool.filename if hasattr(db.provider.pool, "filename") else path


def bind_node_database(path: str) -> str:
    """`bind_server_database` for an executor node's task table."""
    from storage import database
    from storage.node.models import db
    database.bind(db, path, create_tables=True)
    return db.provider.pool.filename if hasattr(db.provider.pool, "filename") else path


def new_job(user_id: int, service: str = "example", portal: str | None = None) -> int:
    """A Queued job in the bound server database (a folder that need not exist); its id."""
    from storage import jobs
    from storage.clock import utcnow
    return jobs.create_job(user_id, service, f"/jobs/{user_id}", utcnow(), portal)[0]


#: The ports tests give nodes: below the ephemeral range (which outgoing connections may take at any
#: time) and above the nodes' own actor-admin ports (actors.runtime.system.AUTO_PORTS).
TEST_PORTS = (30001, 32000)
_handed_out: set[int] = set()


def free_port() -> int:
    """A free port from this pytest worker's own slice of TEST_PORTS, never one this process handed out
    before: a port is only checked free here and bound later by a node, so two workers picking at
    random from one range, or one test picking two ports, collided now and then ("port ... is
    already in use" at a node's start)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    width = (TEST_PORTS[1] - TEST_PORTS[0] + 1) // workers
    low = TEST_PORTS[0] + (int(worker) % workers if worker.isdigit() else 0) * width
    if len(_handed_out) > width // 2:
        _handed_out.clear()  # the oldest nodes are long gone; the bind check below still holds
    while True:
        port = system.free_port(low, low + width - 1)
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.02, message: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live processes whose environment holds MARKER=marker."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat") as stat:
                        if stat.read().split(") ", 1)[1].startswith("Z"):
                            continue  # a zombie is already dead; PID 1 reaps it late
                    found.append(int(entry))
        except OSError:
            continue
    return found


def commands_running(marker: str, *command: bytes) -> int:
    """How many live processes of the node with `marker` run `command` (e.g. b"sleep", b"600")."""
    count = 0
    for pid in processes_with_marker(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                count += handle.read().split(b"\0")[:len(command)] == list(command)
        except OSError:
            pass
    return count


def still_running(pid: int, started: int | None) -> bool:
    """That very process is alive: not a zombie, and not another one that reused its pid."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            zombie = stat.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return False
    return not zombie and start_time(pid) == started


def write_ini(path: Path, sections: dict[str, dict[str, object]]) -> None:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value}" for key, value in values.items())
        lines.append("")
    path.write_text("\n".join(lines))


@dataclass
class Node:
    """One running server or executor process."""

    kind: str
    port: int
    folder: Path
    args: list[str]
    env: dict[str, str]
    marker: str = field(default_factory=lambda: uuid.uuid4().hex)
    process: subprocess.Popen | None = None
    #: Bearer token /health needs (an executor with a cluster secret).
    secret: str = ""
    #: The folder it is started in (relative paths in its configuration are taken from there).
    cwd: Path = ROOT
    #: The cluster that started it: its teardown also checks the node's restarts.
    cluster: "Cluster | None" = field(default=None, repr=False, compare=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.kind}.log"

    def start(self, wait: bool = True) -> "Node":
        # The loaders' own variables (CLUSTER_SECRET, LOG_FORMAT...) of the shell running the tests are not
        # the test's settings: a node gets only those the test gives it.
        inherited = {key: value for key, value in os.environ.items()
                     if key not in settings_environment and not key.startswith("SERVICE_")}
        env = {**inherited, **self.env, MARKER: self.marker, "PYTHONUNBUFFERED": "1"}
        # NOTE: never a pipe: the daemonized actor admin inherits the descriptors and would hold it open.
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, *self.args], cwd=self.cwd, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        if wait:
            wait_until(self.healthy, START_TIMEOUT, 0.05, f"{self.kind} on port {self.port} to be healthy\n{self.log()}")
        return self

    def healthy(self) -> bool:
        """/health answers 200 (False while it does not answer); fails the test if the node exited.
        A node started outside `start` (e.g. in a terminal) has no process to watch."""
        if self.process is not None and self.process.poll() is not None:
            pytest.fail(f"{self.kind} exited with {self.process.returncode}:\n{self.log()}")
        try:
            return self.health(timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def health(self, timeout: float = 5) -> requests.Response:
        """GET /health, with the node's cluster secret if it has one (an executor's needs it)."""
        return requests.get(f"{self.url}/health", headers=bearer(self.secret or None), timeout=timeout)

    def actor_pids(self) -> dict[str, int]:
        """A server's actors by role ("supervisor", "queue", "dispatcher:example", ...): their pids,
        as its /health shows them."""
        return self.health().json()["actor_processes"]

    def pids(self, main: bool = True) -> set[int]:
        """The node's live processes (actor system and job scripts included); without its main
        process if not `main`."""
        found = set(processes_with_marker(self.marker))
        return found if main else found - {self.process.pid}

    def wait_gone(self, timeout: float = 15.0, message: str | None = None) -> None:
        """Wait until every process of the node has exited; fail the test at the deadline."""
        wait_until(lambda: not processes_with_marker(self.marker), timeout, 0.05,
                   message or f"every process of the {self.kind} to exit")

    def task(self, number: int) -> dict | None:
        """An executor's task `number` (GET /jobs/{number}); None if it has none of that number."""
        response = requests.get(f"{self.url}/jobs/{number}", headers=bearer(self.secret or None), timeout=30)
        return response.json() if response.status_code == 200 else None

    def task_state(self, number: int) -> str | None:
        """The state of an executor's task `number` ("running", "finished", "killed", ...), or None."""
        return (self.task(number) or {}).get("state")

    def tasks(self) -> list[dict]:
        """Every task an executor holds, in order (it numbers them 1, 2, ...). Not counted from the
        jobs' attempts: a send cut off by the executor's death counts as an attempt without
        leaving a task there."""
        held = []
        while (task := self.task(len(held) + 1)) is not None:
            held.append(task)
        return held

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    @property
    def quick_stop(self) -> int:
        """The signal that stops the node at once: Ctrl-C (an executor drains on SIGTERM)."""
        return signal.SIGINT if self.kind == "executor" else signal.SIGTERM

    def stop(self, timeout: float = 15.0, sig: int | None = None) -> int:
        """Signal the node (default: its quick stop); wait for it and every process it started to go."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig or self.quick_stop)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_everything()
            pytest.fail(f"{self.kind} did not stop within {timeout} s of SIGTERM:\n{self.log()}")
        self.wait_gone(timeout)
        return code

    def restart(self, start: bool = True) -> "Node":
        """The same node (port, folder, configuration) started again, as a new process: this one is
        stopped first (its quick stop) if it still runs; one killed is not waited for (its actor
        system may still be going away). The new node has a marker of its own, and its cluster's
        teardown checks both."""
        if self.process is not None and self.process.poll() is None:
            self.stop()
        again = Node(self.kind, self.port, self.folder, self.args, self.env, secret=self.secret, cwd=self.cwd,
                     cluster=self.cluster)
        if self.cluster is not None:
            self.cluster.nodes.append(again)
        return again.start() if start else again

    def kill_main(self) -> None:
        """kill -9 of the main process alone (its actor system's admin then shuts the system down)."""
        self.process.kill()
        self.process.wait(10)

    def kill_group(self) -> None:
        """kill -9 of the main process's group (the actor system runs in a session of its own)."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def kill_everything(self) -> None:
        """SIGKILL every process of the node, as the loss of its machine would; again until none is
        left (one may have started a child between the listing and its kill)."""
        deadline = time.monotonic() + 5
        while (pids := processes_with_marker(self.marker)) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)


def _command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return f"{pid}: " + handle.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return f"{pid}: gone"


class Cluster:
    """Factory for nodes of one test; `close()` stops all and checks nothing is left."""

    def __init__(self, root: Path):
        self.root = root
        self.nodes: list[Node] = []

    def executor(self, service: str = "example", *, server_port: int | None = None, port: int | None = None,
                 slots: int = 4, start: bool = True, env: dict[str, str] | None = None, **extra) -> Node:
        port = port or free_port()
        folder = self.root / f"executor-{service}-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        values = {"service": service, "host": "127.0.0.1", "port": port, "data_dir": folder / "data",
                  "slots": slots, **extra}
        # NOTE: jobs get only the variables named here: the marker lets teardown find their processes too.
        values["pass_env"] = ", ".join([MARKER, *filter(None, str(extra.get("pass_env", "")).split(","))])
        if server_port:
            values["server_url"] = f"http://127.0.0.1:{server_port}"
        write_ini(folder / "client.ini", {"client": values})
        node = Node("executor", port, folder, ["run_client.py", "--config", str(folder / "client.ini")], env or {},
                    secret=str(extra.get("cluster_secret", "")), cluster=self)
        self.nodes.append(node)
        return node.start() if start else node

    def server(self, services: dict[str, dict[str, object]], *, port: int | None = None, start: bool = True,
               env: dict[str, str] | None = None, tokens: dict[str, str] | None = None, **extra) -> Node:
        port = port or free_port()
        folder = self.root / f"server-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        sections = {"server": {"host": "127.0.0.1", "port": port, "data_dir": folder / "data", **extra}}
        for name, values in services.items():
            sections[f"service.{name}"] = values
        if tokens:
            sections["tokens"] = tokens
        write_ini(folder / "server.ini", sections)
        node = Node("server", port, folder, ["run_server.py", "--config", str(folder / "server.ini")], env or {},
                    cluster=self)
        self.nodes.append(node)
        return node.start() if start else node

    def close(self) -> list[str]:
        """Stop every node; returns the names of nodes that left processes behind."""
        leaked = []
        for node in reversed(self.nodes):
            if node.process is None:
                continue
            if node.process.poll() is None:
                node.process.send_signal(node.quick_stop)
                try:
                    node.process.wait(15)
                except subprocess.TimeoutExpired:
                    pass
            deadline = time.monotonic() + 15
            while processes_with_marker(node.marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            if left := processes_with_marker(node.marker):
                leaked.append(f"{node.kind}:{node.port} ({'; '.join(_command_line(pid) for pid in left)})")
                node.kill_everything()
            # A node killed with -9 leaves its counters in shared memory until it starts again on its
            # data folder, which a test's temporary folder never does.
            shutil.rmtree(metrics.folder_of(str(node.folder / "data")), ignore_errors=True)
        return leaked


# --- HTTP helpers ------------------------------------------------------------------------------

def script(body: str) -> bytes:
    return f"#!/usr/bin/env bash\nset -e\n{body}\n".encode()


def slow_to_zip(mib: int) -> str:
    """A script whose folder is slow to zip and cheap on disk: a sparse file of `mib` MiB with one
    byte in each MiB, so no piece is a hole (holes are skipped) and every one is read and deflated
    (seconds of work for 768 MiB), for `mib` * 4 KiB of blocks and a zip about as small."""
    return f"""python3 -c "
with open('big.bin', 'wb') as f:
    f.truncate({mib} << 20)
    for i in range({mib}):
        f.seek(i << 20)
        f.write(b'x')
"
echo slow > out.txt"""


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header of a portal token (or the cluster secret); none for None."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def upload(server: Node, files: dict[str, bytes], user_id=1, service: str = "example",
           token: str | None = None) -> requests.Response:
    data = {}
    if user_id is not None:
        data["user_id"] = str(user_id)
    if service is not None:
        data["service"] = service
    return requests.post(f"{server.url}/upload", data=data, headers=bearer(token),
                         files=[("file", (name, content)) for name, content in files.items()], timeout=30)


def submit(server: Node, body: str, user_id=1, service: str = "example", extra: dict[str, bytes] | None = None,
           token: str | None = None) -> int:
    response = upload(server, {"run.sh": script(body), **(extra or {})}, user_id, service, token)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def wait_for_outcome(server: Node, job_id: int, timeout: float = 30.0, token: str | None = None) -> int:
    """Poll HEAD /download/{id} until it is no longer 202; returns the final status code."""
    def settled():
        code = requests.head(f"{server.url}/download/{job_id}", headers=bearer(token), timeout=5).status_code
        return code if code != 202 else None
    return wait_until(settled, timeout, 0.02, f"job {job_id} to end")


def job(server: Node, job_id: int, token: str | None = None) -> dict:
    response = requests.get(f"{server.url}/jobs/{job_id}", headers=bearer(token), timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def results(server: Node, job_id: int, token: str | None = None, timeout: float = 10.0) -> zipfile.ZipFile:
    """The job's result zip, as GET /download/{id} serves it."""
    download = requests.get(f"{server.url}/download/{job_id}", headers=bearer(token), timeout=timeout)
    return zipfile.ZipFile(io.BytesIO(download.content))


def cancel(server: Node, job_id, token: str | None = None) -> requests.Response:
    """POST /jobs/{id}/cancel."""
    return requests.post(f"{server.url}/jobs/{job_id}/cancel", headers=bearer(token), timeout=10)


def listing(server: Node, token: str | None = None) -> dict[str, dict]:
    """Every executor the server knows (GET /executors), by URL."""
    answer = requests.get(f"{server.url}/executors", headers=bearer(token), timeout=5)
    return {e["url"]: e for e in answer.json()["executors"]}


def leftovers(server: Node) -> list[str]:
    """What the server keeps of jobs on disk: the entries of its data folder's jobs, incoming and
    results folders (e.g. "jobs/1"); a rejected upload must leave none."""
    data = server.folder / "data"
    return [f"{sub}/{name}" for sub in ("jobs", "incoming", "results") if (data / sub).exists()
            for name in os.listdir(data / sub)]


# --- the HTTP apps in process (falcon.testing) ---------------------------------------------------

class StandInGateway:
    """Stands in for web.gateway.ActorGateway under falcon.testing: records what the app would send
    the actors, and answers their asks as live actors would (or as dead ones: `answering=False`)."""

    def __init__(self, answering: bool = True, processes: tuple[tuple[str, int], ...] = (("supervisor", 1),)):
        #: Every message the app told or posted, in order.
        self.sent: list = []
        #: (role, message) of each post.
        self.posted: list[tuple[str, object]] = []
        self.closed: str | None = None  # the actor system is up (ActorGateway.closed)
        self.answering = answering
        self.processes = processes

    def tell(self, message, address=None) -> bool:
        self.sent.append(message)
        return True

    def post(self, message, role: str) -> None:
        self.sent.append(message)
        self.posted.append((role, message))

    def ask(self, message, timeout: float = 2.0):
        from actors.messages import Pong
        return Pong("supervisor", self.processes) if self.answering else None

    def alive(self, timeout: float = 2.0) -> bool:
        return self.answering


BOUNDARY = "orchestrator-test-boundary"


def multipart(fields: dict[str, str] | list[tuple[str, str]],
              files: list[tuple[str | bytes, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of text `fields` (a list of pairs may name one twice) and file parts (file name, content), each file
    name written as given, between quotes (so that a test can send names a browser would escape);
    returns (body, headers) for falcon.testing's simulate_post."""
    def part(disposition: bytes, content: bytes) -> bytes:
        return b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" \
            + content + b"\r\n"
    body = b"".join(part(b'name="%s"' % key.encode(), value.encode())
                   for key, value in (fields.items() if isinstance(fields, dict) else fields))
    body += b"".join(part(b'name="file"; filename="%s"' % (name if isinstance(name, bytes) else name.encode()),
                          content) for name, content in files)
    return body + b"--" + BOUNDARY.encode() + b"--\r\n", {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


# --- actors in process (Thespian's simpleSystemBase) -------------------------------------------

@dataclass(frozen=True)
class WhatDidYouGet:
    """Test → Recorder: answer with every message it was sent, in order."""


class Recorder(Actor):
    """Stands in for the peers of the actor under test (the quota, the queue, a dispatcher): records
    every message it is sent (not Thespian's own) and answers `WhatDidYouGet` with them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.got: list = []

    def receiveMessage(self, msg, sender):
        if isinstance(msg, WhatDidYouGet):
            self.send(sender, tuple(self.got))
        elif not isinstance(msg, ActorSystemMessage):
            self.got.append(msg)


def recorded(asys, recorder, timeout: float = 5.0) -> list:
    """What `recorder` (a Recorder's address) was sent so far."""
    got = asys.ask(recorder, WhatDidYouGet(), timeout)
    assert got is not None, "the recorder did not answer"
    return list(got)


#: (actor address, delay, payload) of each timer with a delay armed by a `keeping_timers` actor.
KEPT_TIMERS: list = []


def keeping_timers(actor_class: type) -> type:
    """`actor_class`, whose timers with a delay wait in KEPT_TIMERS until the test fires them
    (`fire_timers`); a zero delay runs as usual (simpleSystemBase delivers it within the tell)."""
    class KeepingTimers(actor_class):
        def wakeupAfter(self, timePeriod, payload=None):
            if timePeriod:
                KEPT_TIMERS.append((self.myAddress, timePeriod, payload))
            else:
                super().wakeupAfter(timePeriod, payload)
    KeepingTimers.__name__ = KeepingTimers.__qualname__ = actor_class.__name__
    return KeepingTimers


def fire_timers(asys, which) -> None:
    """Deliver now every kept timer whose payload `which` accepts (a handler may arm the next one)."""
    due = [timer for timer in KEPT_TIMERS if which(timer[2])]
    assert due, "no such timer is armed"
    for timer in due:
        KEPT_TIMERS.remove(timer)
        asys.tell(timer[0], WakeupMessage(timer[1], timer[2]))


def shipped_configuration(cluster: Cluster, **server_extra) -> tuple[Node, Node]:
    """The server and `example` executor of `make run`, with the shipped conf/server.ini and
    conf/client.ini as they are but for free ports, data folders under the cluster's root and
    `server_extra` ([server] keys, e.g. a short executor_timeout): (server, executor), not started.
    Every `clients` URL of server.ini moves to a free port (the example executor's for :9000), so
    the executors it names and `make run` does not start (prodigy) are absent as there."""
    import configparser

    def shipped(name: str) -> dict[str, dict[str, str]]:
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(ROOT / "conf" / name)
        return {section: dict(parser[section]) for section in parser.sections()}

    server_port, executor_port = free_port(), free_port()
    folder = cluster.root / f"shipped-{server_port}"
    folder.mkdir(parents=True)
    server_ini, client_ini = shipped("server.ini"), shipped("client.ini")
    server_ini["server"].update(port=str(server_port), data_dir=str(folder / "server"), **server_extra)
    for section in server_ini.values():
        if section.get("clients"):
            ports = [executor_port if url.strip().endswith(":9000") else free_port()
                     for url in section["clients"].split(",")]
            section["clients"] = ",".join(f"http://127.0.0.1:{port}" for port in ports)
    client_ini["client"].update(port=str(executor_port), data_dir=str(folder / "executor"),
                                server_url=f"http://127.0.0.1:{server_port}",
                                pass_env=",".join(filter(None, [MARKER, client_ini["client"].get("pass_env")])))
    write_ini(folder / "server.ini", server_ini)
    write_ini(folder / "client.ini", client_ini)
    server = Node("server", server_port, folder, ["run_server.py", "--config", str(folder / "server.ini")], {},
                  cluster=cluster)
    executor = Node("executor", executor_port, folder,
                    ["run_client.py", "--service", "example", "--config", str(folder / "client.ini")], {},
                    cluster=cluster)
    cluster.nodes.extend([server, executor])
    return server, executor


def add_section(node: Node, name: str, values: dict[str, object]) -> Node:
    """Append the INI section [name] (e.g. [operators]) to the configuration of a node made with
    start=False; start it afterwards."""
    config = node.folder / ("server.ini" if node.kind == "server" else "client.ini")
    with open(config, "a") as handle:
        handle.write("\n".join([f"[{name}]", *(f"{key} = {value}" for key, value in values.items()), ""]))
    return node


def scrape(node: Node, token: str | None = None) -> dict[tuple[str, tuple], float]:
    """GET /metrics of `node`, parsed: {(sample name, sorted label pairs): value}."""
    answer = requests.get(f"{node.url}/metrics", headers=bearer(token), timeout=10)
    assert answer.status_code == 200, answer.text
    return parse_metrics(answer.text)


def parse_metrics(text: str) -> dict[tuple[str, tuple], float]:
    """Prometheus' text format as {(sample name, sorted label pairs): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


# --- start-up failures --------------------------------------------------------------------------

def refused_start(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run a node's command (`run_server.py ...`, or interpreter options first) expecting it to refuse
    to start: its result (stderr as text); the test fails if it left any process behind."""
    marker = uuid.uuid4().hex
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, MARKER: marker}, stdin=subprocess.DEVNULL)
    wait_until(lambda: not processes_with_marker(marker), 15, 0.05, "every process of the refused node to exit")
    return result


# --- a node's log ----------------------------------------------------------------------------------

def log_lines(node: Node) -> list[str]:
    """Every line the node wrote so far (its stderr and stdout, as `Node.start` keeps them)."""
    return node.log_path.read_text(errors="replace").splitlines()


def json_events(node: Node) -> list[dict]:
    """The node's log as JSON objects (a line that does not parse fails the test), oldest first by
    `ts`: lines from its actor processes reach stderr through Thespian's logger, a little late."""
    parsed = []
    for line in log_lines(node):
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a log line of the {node.kind} is not JSON: {line!r}")
    return sorted(parsed, key=lambda entry: entry["ts"])


@contextmanager
def events_heard():
    """The (event, fields) of every `conf.logs.event` of this process while in the block, as a list."""
    from conf import logs

    heard: list[tuple[str, dict]] = []

    def listener(name: str, fields: dict) -> None:
        heard.append((name, fields))

    logs.LISTENERS.append(listener)
    try:
        yield heard
    finally:
        logs.LISTENERS.remove(listener)


# --- the `orchestrator` command (orchestrator_client) -----------------------------------------------

def orchestrator(server: Node | str, *args: str, timeout: float = 60.0, token: str | None = None,
                 cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `python -m orchestrator_client ARGS` against `server` (a node, or a URL), its URL and token
    given as ORCHESTRATOR_URL / ORCHESTRATOR_TOKEN; stdout is a pipe (plain lines, no live display)."""
    return subprocess.run([sys.executable, "-m", "orchestrator_client", *args], cwd=cwd,
                          env=orchestrator_env(server, token), capture_output=True, text=True, timeout=timeout)


def waiting_for_flag(token: str, before: str = "", after: str = "") -> str:
    """A script body that runs `before`, waits for a file named `go` the test puts in its folder
    (`let_go`), then runs `after`; `token` finds its folder among others (as a comment in run.sh)."""
    return f"# {token}\n{before}\nwhile [ ! -e go ]; do sleep 0.02; done\n{after}"


def job_folder(root: Path, token: str) -> Path:
    """The job folder below `root` (an executor's tasks or Slurm work folder) whose run.sh has `token`."""
    def found():
        return next((path.parent for path in root.rglob("run.sh") if token in path.read_text(errors="replace")), None)
    return wait_until(found, 20, 0.02, f"the folder of the job {token}")


def let_go(root: Path, token: str) -> None:
    """Let a `waiting_for_flag` job go on."""
    (job_folder(root, token) / "go").write_text("")


# --- a webhook receiver ---------------------------------------------------------------------------

class WebhookReceiver:
    """A real HTTP server in a thread of the test, on a free loopback port, that receives webhooks
    and verifies each one's Standard Webhooks signature with `secret` (the `standardwebhooks`
    package). `answers[path]`: the statuses to answer in turn (then 200); `hold[path]`: an event each
    request to that path waits for (at most 30 s) before it is answered; `down`: answer 503 to all.
    `received`: (path, webhook-id, verified payload or None, status answered) of every request."""

    def __init__(self, secret: str):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from standardwebhooks import Webhook, WebhookVerificationError

        self.answers: dict[str, list[int]] = {}
        self.hold: dict[str, "threading.Event"] = {}
        self.down = False
        self.received: list[tuple[str, str, dict | None, int]] = []
        receiver, verifier = self, Webhook(secret)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path in receiver.hold:
                    receiver.hold[self.path].wait(30)
                try:
                    payload = verifier.verify(data, dict(self.headers))
                except WebhookVerificationError:
                    payload = None
                pending = receiver.answers.get(self.path) or []
                status = 503 if receiver.down else (pending.pop(0) if pending else 200)
                receiver.received.append((self.path, self.headers.get("webhook-id"), payload, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def accepted(self, path: str) -> list[dict]:
        """The verified payloads answered with 2xx at `path`, in arrival order."""
        return [payload for where, _, payload, status in self.received if where == path and 200 <= status < 300]

    def close(self) -> None:
        for event in self.hold.values():
            event.set()
        self.server.shutdown()
        self.server.server_close()


def webhook_secret() -> str:
    """A fresh Standard Webhooks secret (whsec_ and 32 random bytes in base64)."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def upload_with_callback(server: Node, body: str, callback_url: str, user_id: int = 1,
                         token: str | None = None) -> requests.Response:
    """POST /upload of a job of `example` whose script is `body`, with a callback_url."""
    return requests.post(f"{server.url}/upload", headers=bearer(token), timeout=30,
                         data={"user_id": str(user_id), "service": "example", "callback_url": callback_url},
                         files=[("file", ("run.sh", script(body)))])


# --- the server's HTTP app in process (falcon.testing) ----------------------------------------------

RUN = ("run.sh", script("echo hi > out.txt"))
GOOD = {"user_id": "1", "service": "example"}
#: Small limits, so that each can be reached: 3 files, 1 MiB, 2 queued jobs per user of `example`.
SERVICES = (ServiceConfig("example", clients=("http://127.0.0.1:9",), max_queued_per_user=2),
            ServiceConfig("prodigy"))


@dataclass
class Server:
    client: falcon.testing.TestClient
    gateway: StandInGateway
    config: ServerConfig
    stopping: threading.Event

    def upload(self, fields=GOOD, files=(RUN,), token: str | None = None) -> falcon.testing.Result:
        body, headers = multipart(fields, list(files))
        return self.client.simulate_post("/upload", body=body, headers={**headers, **bearer(token)})

    def leftovers(self) -> list[str]:
        """What the data folder holds: uploads (stored or half-received) and results."""
        return [f"{os.path.basename(folder)}/{name}"
                for folder in (self.config.jobs_path, self.config.incoming_path, self.config.results_path)
                if os.path.isdir(folder) for name in os.listdir(folder)]


def make_server(tmp_path, services: tuple[ServiceConfig, ...] = SERVICES, **settings) -> Server:
    config = ServerConfig(data_dir=str(tmp_path / "data"), max_upload_mb=1, max_files=3, services=services,
                          **settings)
    for folder in (config.jobs_path, config.results_path):  # as run_server.py makes them
        os.makedirs(folder, exist_ok=True)
    gateway, stopping = StandInGateway(), threading.Event()
    return Server(falcon.testing.TestClient(create_app(config, gateway, stopping)), gateway, config, stopping)


def orchestrator_env(server: Node | str, token: str | None = None) -> dict[str, str]:
    """The environment of an `orchestrator` command run against `server` (a node, or a URL)."""
    env = {**os.environ, "ORCHESTRATOR_URL": server if isinstance(server, str) else server.url,
           "PYTHONPATH": str(ROOT)}
    env.pop("ORCHESTRATOR_TOKEN", None)
    if token:
        env["ORCHESTRATOR_TOKEN"] = token
    return env


def orchestrator_started(server: Node | str, *args: str, token: str | None = None) -> subprocess.Popen:
    """`orchestrator ARGS` as `orchestrator` runs it, but in the background: stdout and stderr are
    pipes (bytes); the test calls communicate()."""
    return subprocess.Popen([sys.executable, "-m", "orchestrator_client", *args], cwd=ROOT,
                            env=orchestrator_env(server, token), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def upload_with(server: Node, body: str, fields: dict[str, str], user_id=1, service: str = "example",
                token: str | None = None) -> requests.Response:
    """POST /upload of the script `body` with more text fields (max_runtime, ...) beside user_id and service."""
    return requests.post(f"{server.url}/upload", data={"user_id": str(user_id), "service": service, **fields},
                         headers=bearer(token), files=[("file", ("run.sh", script(body)))], timeout=30)


# --- scheduling labels (priority, group) -----------------------------------------------------------

def labelled_job(user_id: int, priority: int = 0, group: str | None = None, portal: str | None = None,
                 service: str = "example") -> int:
    """`new_job` with a priority and a group, as an upload gives them."""
    from storage import jobs
    from storage.clock import utcnow
    return jobs.create_job(user_id, service, f"/jobs/{user_id}", utcnow(), portal,
                           labels=jobs.Labels(priority, group))[0]


def submit_labelled(server: Node, body: str, user_id: int, priority: int | None = None, group: str | None = None,
                    service: str = "example") -> int:
    """`submit` with the upload's `priority` and `group` fields (left out when None)."""
    labels = {"priority": None if priority is None else str(priority), "group": group}
    response = upload_with(server, body, {name: value for name, value in labels.items() if value is not None},
                           user_id, service)
    assert response.status_code == 200, response.text
    return response.json()["id"]


# --- a web server of the test's own (TES inputs and outputs) -------------------------------------

@dataclass
class FileHost:
    """A local HTTP server in a thread: GET answers `files` by path (404 for any other), PUT keeps
    the body by path in `received`."""

    url: str
    files: dict[str, bytes]
    received: dict[str, bytes]


@contextmanager
def file_host(files: dict[str, bytes]):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    host = FileHost("", dict(files), {})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = host.files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def do_PUT(self):
            host.received[self.path] = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # NOTE: a short poll: shutdown() waits for serve_forever's next look (0.5 s by default)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield host
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def redirect_host(location: str):
    """A local HTTP server on 127.0.0.1 that answers every GET and PUT with 302 to `location`;
    yields its URL."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def answer(self):
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_PUT = answer

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
