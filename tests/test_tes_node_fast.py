"""The TES plan and the node's side of a TES task, without a node process: the plan the server
writes (web/tes/script.py) and its checks (storage/node/tes_plan.py), the executor link's field and
the node's submit, the sandbox's binds, the stage's collection of outputs, input cap and own files
(actors/node/tes_stage.py), and how a task's command is made (actors/node/tes_wrap.py).
"""
from __future__ import annotations

import json
import os

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
                    "inputs": [{"url": "https://example.org/g.fa", "path": "/ref/genome.fa"}],
                    "outputs": TASK["outputs"], "max_input_bytes": 1000, "url_hosts": ["*.example.org", "127.0.0.1:8080"]}
    assert tes_plan.parse(json.dumps(plan)) == Plan(
        ("data", "logs", "out", "ref", "res", "scratch", "work"), (Input("https://example.org/g.fa", "/ref/genome.fa"),),
        (Output("/out/*.txt", "https://h/up/", "FILE", "/out/"), Output("/res/all", "s3://b/res", "DIRECTORY")), 1000,
        ("*.example.org", "127.0.0.1:8080"))


def test_the_job_folder_holds_the_content_inputs_run_sh_and_the_plan_and_run_sh_moves_only_content_inputs(tmp_path):
    script.write_job_files(str(tmp_path), TASK, 5, ())

    assert sorted(os.listdir(tmp_path)) == ["run.sh", "tes", "tes-input-0"]
    assert json.loads((tmp_path / "tes" / "plan.json").read_text())["max_input_bytes"] == 5
    assert "tes-input-1" not in (tmp_path / "run.sh").read_text()


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
                       "res/all/one": "1", "res/all/deep/two": "22"}.items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(text)
    (tmp_path / "secret").write_text("node's")
    (base / "out" / "leak.txt").symlink_to(tmp_path / "secret")
    (base / "res" / "all" / "leak").symlink_to(tmp_path / "secret")
    (base / "out" / "alias.txt").symlink_to(base / "out" / "a.txt")
    return str(base)


def urls(found) -> dict[str, str]:
    return {item.path: item.url for item in found}


def test_a_wildcard_output_is_each_regular_file_it_matches_at_its_url_less_the_prefix_and_links_out_are_skipped(root):
    found, notes = tes_stage.collect(root, Output("/out/*.txt", "https://h/up/", "FILE", "/out/"))

    assert urls(found) == {"/out/a.txt": "https://h/up/a.txt", "/out/alias.txt": "https://h/up/alias.txt",
                           "/out/b.txt": "https://h/up/b.txt"}
    assert found[0].real == os.path.join(root, "out", "a.txt") == found[1].real  # the link's file, by its own name
    assert notes == ["output /out/leak.txt skipped: it leads outside the task's folders"]
    assert urls(tes_stage.collect(root, Output("/out/?.txt", "https://h/up", "FILE"))[0]) == {
        "/out/a.txt": "https://h/up/a.txt", "/out/b.txt": "https://h/up/b.txt"}  # prefix: the fixed folder


def test_a_directory_output_is_flattened_one_url_per_file_and_a_missing_file_is_none(root):
    found, notes = tes_stage.collect(root, Output("/res/all", "s3://b/res", "DIRECTORY"))

    assert urls(found) == {"/res/all/one": "s3://b/res/one", "/res/all/deep/two": "s3://b/res/deep/two"}
    assert notes == ["output /res/all/leak skipped: it leads outside the task's folders"]
    assert tes_stage.collect(root, Output("/out/none.txt", "https://h/x", "FILE")) == ([], [])
    assert tes_stage.collect(root, Output("/out/leak.txt", "https://h/x", "FILE"))[0] == []


def test_outputs_are_listed_a_missing_one_fails_only_a_task_that_succeeded_and_other_schemes_are_noted(root):
    folder = os.path.dirname(root)
    plan = Plan(("out",), (), (Output("/out/b.txt", "file:///b.txt"), Output("/out/gone.txt", "s3://b/g")), 0)

    entries, reason = tes_stage.collect_and_upload(plan, folder, succeeded=True)

    assert entries == [{"path": "/out/b.txt", "file": "root/out/b.txt", "size_bytes": 2, "url": None,
                        "note": "not uploaded: scheme file is not supported"}]
    assert reason == "TES output /out/gone.txt: not found"
    assert tes_stage.collect_and_upload(plan, folder, succeeded=False)[1] is None


def test_the_stage_writes_its_files_into_a_real_tes_folder_whatever_the_job_left_there(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "tes").symlink_to(outside)

    tes_stage.write_private(str(folder), "reason.txt", "why")

    assert os.listdir(outside) == [] and (folder / "tes" / "reason.txt").read_text() == "why"
    assert tes_wrap.reason({"dir": str(folder), "tes_plan": "{}"}) == "why"
    assert tes_wrap.reason({"dir": str(folder), "tes_plan": None}) is None
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
