"""A job's script is contained: it sees only its folder and the system's, has no network, a reduced
environment, and leaves no process behind, on real server and executor processes.

The same scripts run with `sandbox = none` show what they reach without the sandbox, so each check
can fail.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.harness import needs, ROOT, cancel, commands_running, job, results, submit, wait_for_outcome, wait_until

pytestmark = needs("bwrap", "the job sandbox")


def result(server, job_id: int, name: str = "out.txt") -> str:
    assert wait_for_outcome(server, job_id, 60) == 200, job(server, job_id)
    return results(server, job_id).read(name).decode()


def nodes(cluster, sandbox: str, **executor):
    runner = cluster.executor("example", sandbox=sandbox, **executor)
    server = cluster.server({"example": {"clients": runner.url, "runs_per_user": 4}})
    return server, runner


def probe_script(paths: list[str]) -> str:
    checks = "\n".join(f'if cat "{p}" > /dev/null 2>&1 || ls "{p}" > /dev/null 2>&1; then echo "seen {p}"; '
                       f'else echo "hidden {p}"; fi >> out.txt' for p in paths)
    return f"touch out.txt\n{checks}"


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_script_reads_nothing_of_the_node_but_its_folder_and_the_system(cluster, sandbox):
    server, runner = nodes(cluster, sandbox)
    submit(server, "echo secret-of-another-job > mine.txt; sleep 30", user_id=2)
    tasks = runner.folder / "data" / "tasks"
    other_folder = wait_until(lambda: next((path for path in tasks.iterdir() if (path / "mine.txt").exists()), None),
                              20, 0.05, "the other job to run")
    private = [str(runner.folder / "data" / "executor.sqlite"), str(other_folder / "mine.txt"), str(tasks),
               str(server.folder / "data" / "orchestrator.sqlite"), str(server.folder / "server.ini"),
               str(ROOT / "conf" / "client.ini"), "/root", "/etc/shadow", "/home"]
    public = ["/usr/bin/env", "/etc/passwd", "/bin/sh"]

    seen = result(server, submit(server, probe_script(private + public)))

    for path in public:
        assert f"seen {path}" in seen
    for path in private:
        assert (f"hidden {path}" in seen) == (sandbox == "bwrap"), (path, seen)


def test_a_script_writes_only_in_its_folder_and_its_private_tmp(cluster):
    server, runner = nodes(cluster, "bwrap")
    first = submit(server, "echo one > /tmp/left-here; touch out.txt")
    result(server, first)

    script = """for target in /usr/x /etc/x /x; do
  if touch "$target" 2> /dev/null; then echo "wrote $target"; else echo "refused $target"; fi
done > out.txt
touch "$HOME/../next-to-my-folder" 2> /dev/null || true
if [ -e /tmp/left-here ]; then echo "tmp shared" >> out.txt; else echo "tmp private" >> out.txt; fi
ls /proc | grep -c '^[0-9]' >> out.txt
grep CapEff /proc/self/status >> out.txt"""
    lines = result(server, submit(server, script)).splitlines()

    assert lines[:3] == ["refused /usr/x", "refused /etc/x", "refused /x"]
    assert not (runner.folder / "data" / "tasks" / "next-to-my-folder").exists()
    assert lines[3] == "tmp private"
    assert int(lines[4]) < 10  # its own processes only
    assert lines[5].split()[1] == "0000000000000000"  # no capabilities, although the node runs as root


@pytest.mark.parametrize("network", [False, True])
def test_a_script_has_no_network_unless_the_node_allows_it(cluster, network):
    server, runner = nodes(cluster, "bwrap", network=str(network).lower())
    script = (f"if (echo > /dev/tcp/127.0.0.1/{server.port}) 2> /dev/null; then echo reached; "
              f"else echo unreachable; fi > out.txt")

    assert result(server, submit(server, script)).strip() == ("reached" if network else "unreachable")


def test_a_script_gets_a_reduced_environment_and_what_pass_env_names(cluster):
    runner = cluster.executor("example", pass_env="PASSED_ON",
                              env={"PASSED_ON": "yes", "NODE_SECRET": "do-not-leak"})
    server = cluster.server({"example": {"clients": runner.url}})

    names = {line.partition("=")[0]: line.partition("=")[2]
             for line in result(server, submit(server, "env > out.txt")).splitlines()}

    assert names["PASSED_ON"] == "yes" and "NODE_SECRET" not in names
    assert names["PATH"] == "/usr/local/bin:/usr/bin:/bin" and names["TMPDIR"] == "/tmp"
    assert names["HOME"] == names["PWD"] and names["LANG"] == "C.UTF-8"
    assert set(names) <= {"PATH", "HOME", "TMPDIR", "LANG", "PWD", "SHLVL", "_", "PASSED_ON",
                          "ORCHESTRATOR_TEST_NODE"}


LEAVES_PROCESSES = """setsid sleep 600 &
nohup sleep 601 > /dev/null 2>&1 &
( (sleep 602 &) & )
disown -a
echo started > out.txt"""


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_whatever_a_script_started_dies_when_it_ends(cluster, sandbox):
    server, runner = nodes(cluster, sandbox)

    result(server, submit(server, LEAVES_PROCESSES))

    for seconds in (b"600", b"601", b"602"):
        assert commands_running(runner.marker, b"sleep", seconds) == 0


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_whatever_a_cancelled_script_started_dies_with_it(cluster, sandbox):
    server, runner = nodes(cluster, sandbox)
    job_id = submit(server, LEAVES_PROCESSES + "\nsleep 603")
    wait_until(lambda: commands_running(runner.marker, b"sleep", b"603") == 1, 20, 0.05, "the script to run")

    assert cancel(server, job_id).status_code == 200

    wait_until(lambda: not any(commands_running(runner.marker, b"sleep", s) for s in (b"600", b"601", b"602", b"603")),
               10, 0.05, "every process the script started to die")


def test_a_read_only_path_and_its_python_are_readable_but_not_writable(cluster, tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "hello.sh").write_text("echo hello from tools\n")
    server, runner = nodes(cluster, "bwrap", read_only_paths=tools)
    script = f"bash {tools}/hello.sh > out.txt\nif touch {tools}/x 2> /dev/null; then echo wrote; else echo read-only; fi >> out.txt"

    assert result(server, submit(server, script)).split("\n")[:2] == ["hello from tools", "read-only"]


def test_the_node_refuses_to_start_when_the_sandbox_it_is_told_to_use_is_missing(cluster, tmp_path):
    runner = cluster.executor("example", sandbox="bwrap", start=False)
    tools = tmp_path / "bin"  # prlimit, but no bwrap
    tools.mkdir()
    (tools / "prlimit").symlink_to(shutil.which("prlimit"))

    done = subprocess.run([sys.executable, *runner.args], cwd=ROOT, env={**os.environ, "PATH": str(tools)},
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 2, done.stderr
    assert "sandbox = bwrap, but bubblewrap is not installed" in done.stderr
