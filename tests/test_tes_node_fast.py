"""The TES plan and the node's side of a TES task, without a node process: the plan the server
writes (web/tes/script.py) and its checks (storage/node/tes_plan.py), the executor link's field and
the node's submit, the sandbox's binds, the stage's collection of outputs, input cap and own files
(actors/node/tes_stage.py), and how a task's command is made (actors/node/tes_wrap.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import timedelta

import pytest

from actors.node import tes_stage, tes_wrap
from actors.node.sandbox import Wrapping
from actors.server.executor_link import _tes_plan
from conf.settings import ClientConfig
from storage.node import tasks, tes_plan
from storage.node.tes_plan import Input, Output, Plan, PlanError
from tests.harness import file_host
from tests.test_executor_http import BUNDLE, make_node
from web.tes import script

TASK = {"inputs": [{"path": "/data/in.txt", "content": "x", "type": "FILE"},
                   {"path": "/ref/genome.fa", "url": "https://example.org/g.fa", "type": "FILE"}],
        "outputs": [{"path": "/out/*.txt", "path_prefix": "/out/", "url": "https://h/up/", "type": "FILE"},
                    {"path": "/res/all", "url": "s3://b/res", "type": "DIRECTORY"}],
        "executors": [{"image": "alpine", "command": ["true"], "workdir": "/work", "stdout": "/logs/o.txt"}],
        "volumes": ["/scratch/v"]}


def test_the_plan_names_every_root_the_fetched_inputs_and_every_output_and_the_node_takes_it():
    plan = script.plan(TASK, 1000, ("*.example.org", "127.0.0.1:8080"))

    assert plan == {"version": 1, "roots": ["data", "logs", "out", "ref", "res", "scratch", "work"],
                    "inputs": [{"file": "tes-input-0", "path": "/data/in.txt"},
                               {"url": "https://example.org/g.fa", "path": "/ref/genome.fa"}],
                    "outputs": TASK["outputs"], "max_input_bytes": 1000, "url_hosts": ["*.example.org", "127.0.0.1:8080"],
                    "executors": [{"stdout": "root/logs/o.txt", "stderr": "tes/0.stderr"}]}
    assert tes_plan.parse(json.dumps(plan)) == Plan(
        ("data", "logs", "out", "ref", "res", "scratch", "work"),
        (Input(None, "/data/in.txt", "tes-input-0"), Input("https://example.org/g.fa", "/ref/genome.fa")),
        (Output("/out/*.txt", "https://h/up/", "FILE", "/out/"), Output("/res/all", "s3://b/res", "DIRECTORY")), 1000,
        ("*.example.org", "127.0.0.1:8080"), (("root/logs/o.txt", "tes/0.stderr"),))


def test_the_job_folder_holds_the_content_inputs_run_sh_and_the_plan_and_the_stage_places_the_inputs(tmp_path):
    script.write_job_files(str(tmp_path), TASK, json.dumps(script.plan(TASK, 5, ())))

    assert sorted(os.listdir(tmp_path)) == ["run.sh", "tes", "tes-input-0"]
    assert json.loads((tmp_path / "tes" / "plan.json").read_text())["max_input_bytes"] == 5
    assert "tes-input" not in (tmp_path / "run.sh").read_text()


def test_run_sh_enters_the_workdir_before_the_tasks_env_so_a_variable_named_j_or_path_cannot_break_it(tmp_path):
    task = {"inputs": [], "outputs": [], "executors": [
        {"image": "alpine", "command": ["/bin/pwd"], "workdir": "/data/w", "env": {"J": "/nonexistent", "PATH": "/nowhere"}}]}
    (tmp_path / "run.sh").write_text(script.run_script(task))

    done = subprocess.run(["bash", "run.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=10)

    assert done.returncode == 0, (tmp_path / "tes" / "0.stderr").read_text()
    assert (tmp_path / "tes" / "0.stdout").read_text() == f"{tmp_path}/root/data/w\n"


@pytest.mark.parametrize("workdir, file", [("/work", "work"), ("/work/sub", "work")])
def test_an_executor_whose_workdir_cannot_be_made_or_entered_fails_without_running_and_ignore_error_goes_on(
        tmp_path, workdir, file):
    task = {"inputs": [], "outputs": [], "executors": [
        {"image": "alpine", "command": ["touch", "ran"], "workdir": workdir, "env": {"A": "1"}, "ignore_error": True},
        {"image": "alpine", "command": ["touch", "next"]}]}
    (tmp_path / "run.sh").write_text(script.run_script(task))
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / file).write_text("a file where a folder should be")

    done = subprocess.run(["bash", "run.sh"], cwd=tmp_path, capture_output=True, text=True, timeout=10)

    assert done.returncode == 0 and not (tmp_path / "ran").exists() and (tmp_path / "next").exists()
    codes = [line.split("\t")[3] for line in (tmp_path / "tes" / "executors.tsv").read_text().splitlines()]
    assert codes[0] != "0" and codes[1] == "0"


#: [tes] url_hosts admitting the tests' local HTTP servers (on 127.0.0.1, which only a listing admits).
LOCAL = ("127.0.0.1",)
GOOD = {"version": 1, "roots": ["data"], "inputs": [], "outputs": [], "max_input_bytes": 0}


@pytest.mark.parametrize("change, words", [
    ({"version": 2}, "version 1"),
    ({"roots": ["usr"]}, "roots"),
    ({"roots": ["a/b"]}, "roots"),
    ({"roots": [".."]}, "roots"),
    ({"max_input_bytes": -1}, "max_input_bytes"),
    ({"inputs": [{"url": "ftp://h/x", "path": "/data/x"}]}, "inputs[0].url"),
    ({"inputs": [{"url": "http://h/x", "path": "/other/x"}]}, "inputs[0].path"),
    ({"inputs": [{"url": "http://h/x", "path": "/data/../etc/x"}]}, "inputs[0].path"),
    ({"inputs": [{"url": "http://h/x", "path": "data/x"}]}, "inputs[0].path"),
    ({"inputs": [{"file": "../x", "path": "/data/x"}]}, "inputs[0].file"),
    ({"inputs": [{"file": "a/b", "path": "/data/x"}]}, "inputs[0].file"),
    ({"inputs": [{"file": "x", "url": "http://h/x", "path": "/data/x"}]}, "inputs[0].file"),
    ({"executors": [{"stdout": "/etc/passwd", "stderr": "tes/0.stderr"}]}, "executors[0].stdout"),
    ({"executors": [{"stdout": "tes/0.stdout", "stderr": "tes/../../x"}]}, "executors[0].stderr"),
    ({"outputs": [{"url": "http://h/x", "path": "/data/x", "type": "LINK"}]}, "outputs[0].type"),
    ({"outputs": [{"path": "/data/x"}]}, "outputs[0].url"),
    ({"outputs": "all"}, "outputs must be a list"),
    ({"url_hosts": "127.0.0.1"}, "url_hosts must be a list"),
    ({"url_hosts": ["a.org,b.org"]}, "url_hosts must be a list"),
    ({"url_hosts": ["http://a.org/"]}, "not a host pattern"),
])
def test_a_plan_the_node_cannot_act_on_is_refused_saying_what_is_wrong(change, words):
    with pytest.raises(PlanError, match=words.replace("[", r"\[").replace("]", r"\]")):
        tes_plan.parse(json.dumps({**GOOD, **change}))
    with pytest.raises(PlanError, match="not JSON"):
        tes_plan.parse("{")
    with pytest.raises(PlanError, match="larger than"):
        tes_plan.parse(" " * (tes_plan.MAX_PLAN_BYTES + 1))


def test_the_link_sends_a_plan_only_from_the_tes_subfolder(tmp_path):
    (tmp_path / "tes").mkdir()
    (tmp_path / "tes" / "plan.json").write_text("{plan}")
    assert _tes_plan(str(tmp_path)) == "{plan}"
    portal = tmp_path / "portal"
    portal.mkdir()
    (portal / "tes").write_text("a portal's file named tes")
    assert _tes_plan(str(portal)) is None


def test_the_node_keeps_a_submitted_plan_on_the_task_and_refuses_one_it_cannot_act_on(tmp_path, clean_node_database):
    node = make_node(tmp_path)
    refused = node.submit({**BUNDLE, "tes_plan": json.dumps({**GOOD, "roots": ["etc"]})})
    assert refused.status_code == 400 and "tes_plan" in refused.json["description"]
    assert node.leftovers() == [] and node.gateway.sent == []

    accepted = node.submit({**BUNDLE, "tes_plan": json.dumps(GOOD)})

    assert accepted.status_code == 200, accepted.text
    assert tasks.find(int(accepted.json["id"]))["tes_plan"] == json.dumps(GOOD)
    assert "tes_plan" not in node.client.simulate_get(f"/jobs/{accepted.json['id']}").json


def config_for(tmp_path, **settings) -> ClientConfig:
    return ClientConfig(data_dir=str(tmp_path / "node"), **settings)


def test_the_sandbox_binds_the_roots_after_the_system_and_before_read_only_paths_and_the_job_folder(tmp_path):
    readable = tmp_path / "tools"
    readable.mkdir()
    config = config_for(tmp_path, read_only_paths=(str(readable),))
    wrapping = Wrapping("bwrap", "/usr/bin/prlimit", "/usr/bin/bwrap")
    plain = wrapping.command(config, "/jobs/1")

    argv = wrapping.command(config, "/jobs/1", binds=(("/jobs/1/root/data", "/data"),))

    at = argv.index("/jobs/1/root/data")
    assert argv[at - 1:at + 2] == ["--bind", "/jobs/1/root/data", "/data"]
    assert argv.index("--tmpfs") < at < argv.index(str(readable)) < argv.index("/jobs/1")
    assert argv[:at - 1] + argv[at + 2:] == plain


def test_a_tes_task_runs_its_sandboxed_script_inside_the_stage_and_only_on_a_sandboxed_node(tmp_path):
    config = config_for(tmp_path)
    bwrap = Wrapping("bwrap", "/usr/bin/prlimit", "/usr/bin/bwrap")
    folder = tmp_path / "job"
    folder.mkdir()
    task = {"dir": str(folder), "tes_plan": json.dumps(GOOD)}

    argv = tes_wrap.command(config, bwrap, task)

    assert argv[argv.index("--") + 1:] == bwrap.command(config, str(folder), binds=((f"{folder}/root/data", "/data"),))
    assert (folder / "tes" / "plan.json").read_text() == json.dumps(GOOD)
    assert tes_wrap.command(config, bwrap, {"dir": str(folder), "tes_plan": None}) == bwrap.command(config, str(folder))
    assert tes_wrap.refusal(task, bwrap) is None
    assert "sandbox = bwrap" in tes_wrap.refusal(task, Wrapping("none", "/usr/bin/prlimit"))
    assert tes_wrap.refusal({"dir": str(folder), "tes_plan": None}, Wrapping("none", "/usr/bin/prlimit")) is None


@pytest.fixture
def root(tmp_path):
    base = tmp_path / "job" / "root"
    for name, text in {"out/a.txt": "a", "out/b.txt": "bb", "out/c.log": "c", "out/sub.txt/x": "x",
                       "res/all/one": "1", "res/all/deep/two": "22", "res/all/.hidden": "h"}.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)
    (tmp_path / "secret").write_text("node's")
    (base / "out" / "leak.txt").symlink_to(tmp_path / "secret")
    (base / "res" / "all" / "leak").symlink_to(tmp_path / "secret")
    (base / "out" / "alias.txt").symlink_to(base / "out" / "a.txt")
    return str(base)


def urls(found) -> dict[str, str]:
    return {item.path: item.url for item in found}


LINKS = " (a link is followed only to a regular file inside the task's folders)"


def test_a_wildcard_output_is_each_regular_file_it_matches_at_its_url_less_the_prefix_and_links_out_are_skipped(root):
    found, notes = tes_stage.collect(root, Output("/out/*.txt", "https://h/up/", "FILE", "/out/"))

    assert urls(found) == {"/out/a.txt": "https://h/up/a.txt", "/out/alias.txt": "https://h/up/alias.txt",
                           "/out/b.txt": "https://h/up/b.txt"}
    assert found[0].real == os.path.join(root, "out", "a.txt") == found[1].real  # the link's file, by its own name
    assert notes == [f"output /out/*.txt: links skipped: 1{LINKS}"]
    assert urls(tes_stage.collect(root, Output("/out/?.txt", "https://h/up", "FILE"))[0]) == {
        "/out/a.txt": "https://h/up/a.txt", "/out/b.txt": "https://h/up/b.txt"}  # prefix: the fixed folder


def test_a_directory_output_is_flattened_one_url_per_file_and_a_missing_file_is_none(root):
    found, notes = tes_stage.collect(root, Output("/res/all", "s3://b/res", "DIRECTORY"))

    assert urls(found) == {"/res/all/one": "s3://b/res/one", "/res/all/deep/two": "s3://b/res/deep/two",
                           "/res/all/.hidden": "s3://b/res/.hidden"}
    assert notes == [f"output /res/all: links skipped: 1{LINKS}"]
    assert tes_stage.collect(root, Output("/out/none.txt", "https://h/x", "FILE")) == ([], [])
    assert tes_stage.collect(root, Output("/out/leak.txt", "https://h/x", "FILE"))[0] == []


def test_links_out_or_to_folders_are_not_followed_nor_named_and_links_looping_back_do_not_multiply_matches(tmp_path, root):
    outside = tmp_path / "etc"
    (outside / "ssh").mkdir(parents=True)
    (outside / "shadow").write_text("the node's")
    (outside / "ssh" / "host_key").write_text("the node's")
    out = os.path.join(root, "out")
    os.symlink(outside, os.path.join(out, "l"))
    os.symlink(".", os.path.join(out, "loop"))
    os.symlink(out, os.path.join(out, "again"))
    os.symlink(os.path.join(root, "res"), os.path.join(out, "res"))  # a folder inside root: not followed either
    outputs = [Output("/out/l/*", "s3://b/"), Output("/out/l/shadow", "s3://b/s"), Output("/out/*/*", "s3://b/"),
               Output("/out/l", "s3://b/l", "DIRECTORY"), Output("/out/*/*/*/*/*/*/*/*/*/*/a.txt", "s3://b/")]

    collected = [tes_stage.collect(root, output) for output in outputs]

    assert [urls(found) for found, _ in collected] == [{}, {}, {"/out/sub.txt/x": "s3://b/sub.txt/x"}, {}, {}]
    assert all("ssh" not in note and "host_key" not in note and str(outside) not in note
               for _, notes in collected for note in notes), collected  # only the task's own paths are named
    assert collected[0][1] == [f"output /out/l/*: links skipped: 1{LINKS}"]
    assert collected[2][1] == [f"output /out/*/*: links skipped: 4{LINKS}"]  # l, loop, again, res
    found, notes = tes_stage.collect(root, Output("/out", "s3://b/out", "DIRECTORY"))
    assert sorted(urls(found)) == ["/out/a.txt", "/out/alias.txt", "/out/b.txt", "/out/c.log", "/out/sub.txt/x"]
    assert notes == [f"output /out: links skipped: 5{LINKS}"]  # leak.txt, l, loop, again, res


def test_an_output_matching_more_than_the_cap_fails_the_task_naming_the_cap_and_the_others_are_still_collected(
        root, monkeypatch):
    monkeypatch.setattr(tes_stage, "MAX_MATCHES", 4)
    plan = Plan(("out",), (), (Output("/out/*", "s3://b/"), Output("/out/b.txt", "s3://b/b")), 0)

    entries, reason = tes_stage.collect_and_upload(plan, os.path.dirname(root), root, succeeded=True)

    assert reason == "TES output /out/*: it matches more than 4 files and folders (the executor node's limit)"
    assert [entry["path"] for entry in entries] == ["/out/b.txt"]
    with pytest.raises(tes_stage.StageFailed, match="more than 4"):  # a DIRECTORY's walk counts too
        tes_stage.collect(os.path.dirname(root), Output("/root", "s3://b/", "DIRECTORY"))


def test_outputs_are_listed_a_missing_one_fails_only_a_task_that_succeeded_and_other_schemes_are_noted(root):
    folder = os.path.dirname(root)
    plan = Plan(("out",), (), (Output("/out/b.txt", "file:///b.txt"), Output("/out/gone.txt", "s3://b/g")), 0)

    entries, reason = tes_stage.collect_and_upload(plan, folder, root, succeeded=True)

    assert entries == [{"path": "/out/b.txt", "file": "root/out/b.txt", "size_bytes": 2, "url": None,
                        "note": "not uploaded: scheme file is not supported"}]
    assert reason == "TES output /out/gone.txt: not found"
    assert tes_stage.collect_and_upload(plan, folder, root, succeeded=False)[1] is None


def test_the_stage_writes_its_files_into_a_real_tes_folder_whatever_the_job_left_there(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "tes").symlink_to(outside)

    tes_stage.write_private(str(folder), "reason.txt", "why")

    assert os.listdir(outside) == [] and (folder / "tes" / "reason.txt").read_text() == "why"
    assert tes_wrap.reason({"dir": str(folder), "tes_plan": "{}"}, stage_exited=True) == "why"
    assert tes_wrap.reason({"dir": str(folder), "tes_plan": "{}"}, stage_exited=False) is None  # maybe the job's
    assert tes_wrap.reason({"dir": str(folder), "tes_plan": None}, stage_exited=True) is None
    (folder / "tes" / "reason.txt").unlink()
    (folder / "tes" / "reason.txt").symlink_to(outside / "planted")
    tes_stage.write_private(str(folder), "reason.txt", None)
    assert not os.path.lexists(folder / "tes" / "reason.txt") and os.listdir(outside) == []


def test_inputs_are_fetched_to_their_paths_and_together_at_most_max_input_bytes(tmp_path):
    with file_host({"/x": b"0123456789"}) as host:
        url = f"{host.url}/x"
        tes_stage.fetch_inputs(Plan(("d",), (Input(url, "/d/a"), Input(url, "/d/e/b")), (), 20, LOCAL), str(tmp_path))
        assert (tmp_path / "d" / "e" / "b").read_bytes() == b"0123456789"
        with pytest.raises(tes_stage.StageFailed, match="larger than 15 bytes in all"):
            tes_stage.fetch_inputs(Plan(("d",), (Input(url, "/d/a"), Input(url, "/d/b")), (), 15, LOCAL), str(tmp_path))


# --- the stage around a job that attacks it (the stage's main, in this process, around `sh -c`) ---------

def run_stage(folder, plan: dict, job: str, digest: str | None = None) -> tuple[int, str | None]:
    """The stage's exit code and the reason the node takes, for a job that runs `job` in `folder`."""
    text = json.dumps(plan)
    (folder / "tes").mkdir(exist_ok=True)
    (folder / "tes" / "plan.json").write_text(text)
    digest = digest or hashlib.sha256(text.encode()).hexdigest()
    code = tes_stage.main([str(folder), digest, "--", "sh", "-c", f"cd {folder} && {job}"])
    return code, tes_wrap.reason({"dir": str(folder), "tes_plan": text}, stage_exited=True)


@pytest.fixture
def job(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    return folder


def test_a_job_that_swaps_its_root_for_a_link_gets_nothing_outside_uploaded_and_a_system_failure(tmp_path, job):
    secret = tmp_path / "home"
    (secret / "keys").mkdir(parents=True)
    (secret / "keys" / "id_rsa").write_text("the node's key")
    with file_host({}) as host:
        plan = {**GOOD, "roots": ["keys"], "url_hosts": list(LOCAL),
                "outputs": [{"path": "/keys/id_rsa", "url": f"{host.url}/loot"}]}

        code, reason = run_stage(job, plan, f"mv root root.old && ln -s {secret} root")

        assert host.received == {}
    assert (code, reason) == (0, "the task replaced its root folder")
    assert not (job / "tes" / "outputs.json").exists()


def test_the_stage_refuses_a_root_it_did_not_make_and_a_plan_the_node_did_not_write_and_runs_nothing(tmp_path, job):
    (job / "root").mkdir()
    code, reason = run_stage(job, GOOD, "touch ran")
    assert code == tes_stage.NOT_RUN and "already holds 'root'" in reason and not (job / "ran").exists()

    (job / "root").rmdir()
    code, reason = run_stage(job, GOOD, "touch ran", digest=hashlib.sha256(b"another plan").hexdigest())
    assert code == tes_stage.NOT_RUN and "not the one the node wrote" in reason and not (job / "ran").exists()


def test_files_the_job_forges_for_the_stage_are_replaced_and_a_locked_tes_folder_does_not_break_it(job):
    forge = ("echo forged > tes/reason.txt; echo '[{\"path\": \"/etc/shadow\"}]' > tes/outputs.json; "
             "mkdir tes/tails.json; chmod 000 tes/tails.json tes")

    code, reason = run_stage(job, {**GOOD, "outputs": [{"path": "/data/none.txt", "url": "s3://b/x"}]}, forge)

    assert (code, reason) == (0, "TES output /data/none.txt: not found")
    assert json.loads((job / "tes" / "outputs.json").read_text()) == []
    assert json.loads((job / "tes" / "tails.json").read_text()) == []


def test_content_inputs_are_placed_by_the_stage_and_one_it_cannot_place_is_a_system_failure(job):
    (job / "tes-input-0").write_text("given")
    plan = {**GOOD, "inputs": [{"file": "tes-input-0", "path": "/data/sub/in.txt"}]}
    assert run_stage(job, plan, "cat root/data/sub/in.txt > seen") == (0, None)
    assert (job / "seen").read_text() == "given" and not (job / "tes-input-0").exists()

    other = job.parent / "other"
    other.mkdir()
    (other / "tes-input-0").write_text("a")
    (other / "tes-input-1").write_text("b")
    clash = {**GOOD, "inputs": [{"file": "tes-input-0", "path": "/data/x"}, {"file": "tes-input-1", "path": "/data/x/y"}]}
    code, reason = run_stage(other, clash, "touch ran")
    assert code == tes_stage.NOT_RUN and reason.startswith("TES input /data/x/y: it could not be placed") \
        and not (other / "ran").exists()


def test_the_stage_keeps_the_tail_of_each_executors_output_and_nothing_of_a_link_out_or_a_fifo(tmp_path, job):
    (tmp_path / "secret").write_text("the node's")
    plan = {**GOOD, "roots": ["logs"], "executors": [{"stdout": "tes/0.stdout", "stderr": "tes/0.stderr"},
                                                     {"stdout": "root/logs/o.txt", "stderr": "tes/1.stderr"}]}
    job_script = (f"mkdir -p tes; head -c 20000 /dev/zero | tr '\\0' a > tes/0.stdout; printf 'caf\\303' > tes/0.stderr; "
                  f"ln -s {tmp_path}/secret root/logs/o.txt; mkfifo tes/1.stderr")

    assert run_stage(job, plan, job_script) == (0, None)

    assert json.loads((job / "tes" / "tails.json").read_text()) == [
        {"stdout": "a" * tes_plan.TAIL_CHARS, "stderr": "caf\ufffd"}, {"stdout": "", "stderr": ""}]


def test_the_node_writes_the_plan_into_a_real_tes_folder_whatever_an_earlier_run_of_the_job_left_there(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("the node user's file")
    bwrap = Wrapping("bwrap", "/usr/bin/prlimit", "/usr/bin/bwrap")
    for name, leftover in (("linked-folder", outside), ("linked-file", outside / "victim")):
        folder = tmp_path / name
        (folder if leftover == outside else folder / "tes").mkdir(parents=True)
        (folder / ("tes" if leftover == outside else "tes/plan.json")).symlink_to(leftover)

        tes_wrap.command(config_for(tmp_path), bwrap, {"dir": str(folder), "tes_plan": json.dumps(GOOD)})

        assert (folder / "tes" / "plan.json").read_text() == json.dumps(GOOD)
        assert not (folder / "tes").is_symlink() and not (folder / "tes" / "plan.json").is_symlink()
    assert sorted(os.listdir(outside)) == ["victim"] and (outside / "victim").read_text() == "the node user's file"


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), PlanError("the plan's roots ...")])
def test_a_local_task_whose_files_cannot_be_written_ends_saying_so_and_its_launcher_is_not_leaked(
        tmp_path, monkeypatch, failure):
    from actors.node.backends.local import LocalBackend
    discarded = []

    class Launcher:
        cgroup = None

        def discard(self):
            discarded.append(True)

    def full_disk(*args, **kwargs):
        raise failure

    backend = LocalBackend(config_for(tmp_path, slots=1), Wrapping("bwrap", "/usr/bin/prlimit", "/usr/bin/bwrap"), None)
    monkeypatch.setattr(backend.launchers, "take", Launcher)
    monkeypatch.setattr(tes_wrap, "command", full_disk)

    [ended] = backend.start(7, {"dir": str(tmp_path), "tes_plan": json.dumps(GOOD)})

    assert discarded == [True] and str(failure) in ended.reason


def test_a_slurm_task_whose_plan_is_refused_at_its_start_ends_saying_so_and_is_not_tried_again(tmp_path, monkeypatch):
    from actors.node.backends import slurm

    class Health:
        def __init__(self):
            pass

        def fresh(self, max_age):
            return None

    def refused(*args, **kwargs):
        raise PlanError("the plan's roots ...")

    monkeypatch.setattr(slurm, "SlurmHealth", Health)
    monkeypatch.setattr(tes_wrap, "command", refused)
    backend = slurm.SlurmBackend(config_for(tmp_path), Wrapping("bwrap", "/usr/bin/prlimit", "/usr/bin/bwrap"))

    [ended] = backend.start(7, {"dir": str(tmp_path), "tes_plan": json.dumps(GOOD), "job_uid": "u", "attempt": 1})

    assert ended.reason == "the executor could not start run.sh: the plan's roots ..." and backend.active() == 0


def test_a_tes_task_is_zipped_when_it_ends_however_it_ended_and_a_portal_job_only_when_it_succeeded(
        tmp_path, clean_node_database):
    from types import SimpleNamespace

    from actors.node.backends.base import Ended
    from actors.node.executor import ExecutorActor
    from storage.clock import utcnow
    from storage.node.states import TaskState

    def task(name: str, plan: str | None) -> int:
        task_id = int(tasks.create(5, name, 1, None, str(tmp_path / name), utcnow(), tes_plan=plan)["id"])
        tasks.mark_running(task_id, 4242, None, utcnow())
        return task_id

    zipped = []
    actor = SimpleNamespace(unsaved={}, config=config_for(tmp_path), zips=SimpleNamespace(start=lambda f, _: zipped.append(f)),
                            reporter=SimpleNamespace(report=lambda *args: None), task_event=lambda *args, **kw: None)
    plan = json.dumps(GOOD)
    ends = [Ended(task("tes-failed", plan), TaskState.FINISHED, 1), Ended(task("tes-system", plan), TaskState.FINISHED,
                                                                             0, reason="TES output /data/x: not found"),
            Ended(task("tes-lost", plan), TaskState.LOST), Ended(task("portal-failed", None), TaskState.FINISHED, 1),
            Ended(task("portal-ok", None), TaskState.FINISHED, 0)]

    ExecutorActor.settle(actor, ends)

    expected = [str(tmp_path / name) for name in ("tes-failed", "tes-system", "portal-ok")]
    assert zipped == expected
    assert [folder for _, folder in tasks.fetched_folders()] == expected  # and what a restarted node zips
    assert tasks.awaiting_retrieval(utcnow() - timedelta(hours=1)) == 3
