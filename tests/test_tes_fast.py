"""The TES API in process (falcon.testing, a stand-in gateway, the temp SQLite tables): what a task
must be (400 naming what is wrong, nothing stored, nothing told), what each view holds (checked
against the spec's OpenAPI document and for keys outside it), the state mapping, list and cancel
answers. No process is started."""
from __future__ import annotations

import io
import json
import os
import zipfile

import pytest
from pony.orm import db_session, select

from actors.messages import JobQueued
from conf.settings import ServiceConfig, TesConfig
from storage import jobs
from storage.clock import utcnow
from storage.models import Job, JobChange, TesTask
from storage.node import tes_plan
from tests.harness import events_heard, make_server
from tests.tes_schema import check_schema
from web.tes import results, script, views

TASKS = "/ga4gh/tes/v1/tasks"
GOOD = {"name": "t", "tags": {"user_id": "5"},
        "inputs": [{"path": "/data/in.txt", "content": "x\n"}],
        "outputs": [{"path": "/data/out.txt", "url": "https://example.org/o"}],
        "executors": [{"image": "alpine", "command": ["cat"], "stdin": "/data/in.txt", "stdout": "/data/out.txt"}]}


@pytest.fixture
def server(tmp_path, clean_database):
    return make_server(tmp_path, (ServiceConfig("example", max_queued_per_user=2, max_cores=4),),
                       tes=TesConfig((("alpine", "example"),)))


@pytest.mark.parametrize("change, words", [
    ({"executors": []}, "executors must be a non-empty list"),
    ({"executors": [{"image": "alpine", "command": "ls"}]}, "executors[0].command must be a non-empty list"),
    ({"executors": [{"image": "ubuntu", "command": ["ls"]}]}, "image 'ubuntu' is not served here"),
    ({"executors": [{"image": "alpine", "command": ["ls"], "workdir": "data"}]}, "executors[0].workdir must be an absolute"),
    ({"executors": [{"image": "alpine", "command": ["ls"], "stdout": "/usr/x"}]}, "under /usr"),
    ({"executors": [{"image": "alpine", "command": ["ls"], "env": {"A-B": "1"}}]}, "not a shell variable name"),
    ({"inputs": [{"path": "/in.txt", "content": "x"}]}, "directly under /"),
    ({"inputs": [{"path": "/data/../x", "content": "x"}]}, "must not contain '..'"),
    ({"inputs": [{"path": "/data/x"}]}, "must have a url or content"),
    ({"inputs": [{"path": "/data/x", "url": "http://[::1/x"}]}, "inputs[0].url must be an http(s)://host[:port]/path"),
    ({"outputs": [{"path": "/data/x", "url": "http:///x"}]}, "outputs[0].url must be an http(s)://host[:port]/path"),
    ({"tags": {"user_id": "-1"}}, "tags.user_id must be a positive integer"),
    ({"resources": {"cpu_cores": 5}}, "cpu_cores 5 is more than service 'example' gives a task (max_cores = 4)"),
    ({"resources": {"cpu_cores": "2"}}, "cpu_cores must be a positive integer"),
    ({"resources": {"backend_parameters": {"queue": "long"}, "backend_parameters_strict": True}}, "'queue' is not supported"),
    ({"resources": {"backend_parameters": {"priority": "99"}}}, "priority must be an integer"),
    # The list's indexed columns (storage/models.py TesTag, TesTask) hold them: bounded, no NUL.
    ({"tags": {"run": "r" * 401}}, "tags: keys must be at most 128 bytes in UTF-8 and values at most 400"),
    ({"tags": {"k" * 129: ""}}, "tags: keys must be at most 128"),
    ({"tags": {"run": "a\x00b"}}, "without NUL"),
    ({"name": "n" * 1025}, "name must be at most 1024 bytes in UTF-8"),
    # In bytes: a PostgreSQL index entry holds about 2,700 (1,024 CJK characters are 3,072 bytes).
    ({"name": "名" * 1024}, "name must be at most 1024 bytes in UTF-8, without NUL (it has 3072)"),
    ({"tags": {"run": "値" * 134}}, "values at most 400"),
    ({"tags": {"鍵" * 43: ""}}, "keys must be at most 128 bytes"),
    # A volume or workdir may be a folder directly under /; a file may not.
    ({"volumes": ["/data/v", "/work/x/../y"]}, "volumes[1] '/work/x/../y' must not contain '..'"),
    ({"executors": [{"image": "alpine", "command": ["ls"], "stdout": "/out.txt"}]}, "is directly under /"),
])
def test_a_bad_task_gets_400_naming_what_is_wrong_and_nothing_is_stored(server, change, words):
    answer = server.client.simulate_post(TASKS, json={**GOOD, **change})

    assert answer.status_code == 400 and words in answer.json["description"], answer.json
    assert server.leftovers() == [] and server.gateway.posted == []
    with db_session:
        assert select(j for j in Job).count() == 0 and select(t for t in TesTask).count() == 0


def test_a_task_becomes_a_queued_job_of_its_images_service_with_its_files(server):
    answer = server.client.simulate_post(TASKS, json={**GOOD, "id": "ignored", "state": "COMPLETE", "extra": 1})

    assert answer.status_code == 200 and list(answer.json) == ["id"]
    check_schema(answer, "/tasks", "POST")
    assert [type(m) for _, m in server.gateway.posted] == [JobQueued]
    number = int(answer.json["id"])
    with db_session:
        job = Job[number]
        assert (job.service, job.user_id, job.state) == ("example", 5, "Queued")
        assert sorted(os.listdir(job.dir)) == ["run.sh", "tes", "tes-input-0"]  # tes/: the node's plan
        assert "extra" not in TesTask[number].document


def test_a_task_without_a_user_id_tag_counts_for_the_portal_as_user_0(server):
    task_id = server.client.simulate_post(TASKS, json={**GOOD, "tags": {}}).json["id"]
    with db_session:
        assert Job[int(task_id)].user_id == 0


def test_backend_parameters_it_does_not_support_are_neither_stored_nor_returned_unless_strict(server):
    task = {**GOOD, "resources": {"backend_parameters": {"queue": "long", "Priority": "2"}}}
    task_id = server.client.simulate_post(TASKS, json=task).json["id"]

    basic = server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "BASIC"})
    assert basic.json["resources"]["backend_parameters"] == {"Priority": "2"}
    with db_session:
        assert Job[int(task_id)].priority == 2


def test_each_view_has_exactly_the_fields_the_spec_gives_it(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    minimal = server.client.simulate_get(f"{TASKS}/{task_id}")
    basic = server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "BASIC"})
    full = server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "FULL"})

    assert minimal.json == {"id": task_id, "state": "QUEUED"}
    assert "content" not in basic.json["inputs"][0] and full.json["inputs"][0]["content"] == "x\n"
    assert basic.json["inputs"][0]["type"] == "FILE" and "logs" not in full.json
    for answer, view in ((minimal, "MINIMAL"), (basic, "BASIC"), (full, "FULL")):
        check_schema(answer, "/tasks/{id}", view=view)
    assert server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "ALL"}).status_code == 400


def test_the_full_view_of_a_completed_task_reads_its_executors_logs_from_the_result_zip(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    number, result = int(task_id), server.config.result_file(int(task_id))
    now = utcnow()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(script.EXECUTORS_LOG, "0\t2026-11-30T10:00:00.000001Z\t2026-11-30T10:00:01.000001Z\t0\n")
        zipped.writestr("root/data/out.txt", "x\n")
        zipped.writestr("tes/0.stderr", "")
    with open(result, "wb") as handle:
        handle.write(archive.getvalue())
    jobs.claim_for_dispatch([number], now)
    attempt = jobs.begin_attempts([(number, "http://127.0.0.1:9")], now)[number]
    jobs.mark_running([(number, attempt)], now)
    jobs.finish(number, attempt, jobs.JobState.COMPLETED, now, exit_code=0, result_path=result)

    full = server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "FULL"})

    assert full.json["state"] == "COMPLETE"
    assert full.json["logs"][0]["logs"] == [{"start_time": "2026-11-30T10:00:00.000001Z", "exit_code": 0,
                                             "end_time": "2026-11-30T10:00:01.000001Z", "stdout": "x\n", "stderr": ""}]
    check_schema(full, "/tasks/{id}")


@pytest.mark.parametrize("job_state, outcome, exit_code, reason, expected", [
    ("Queued", None, None, None, "QUEUED"),
    ("Dispatching", None, None, None, "INITIALIZING"),
    ("Submitted", None, None, None, "INITIALIZING"),
    ("Running", None, None, None, "RUNNING"),
    ("Completed", "Completed", 0, None, "COMPLETE"),
    ("Failed", "Failed", 3, "run.sh exited with code 3", "EXECUTOR_ERROR"),
    ("Failed", "Failed", 137, "the job ran longer than max_runtime", "SYSTEM_ERROR"),
    ("Failed", "Failed", None, "executor lost 3 times", "SYSTEM_ERROR"),
    ("Cancelled", "Cancelled", None, "cancelled on request", "CANCELED"),
    ("Cleaned", "Failed", 2, "run.sh exited with code 2", "EXECUTOR_ERROR"),
])
def test_job_states_map_to_tes_states_as_the_issue_says(job_state, outcome, exit_code, reason, expected):
    assert views.tes_state(job_state, outcome, exit_code, reason) == expected


def test_unknown_and_malformed_task_ids_get_404_and_cancel_of_an_ended_task_answers_200(server):
    assert server.client.simulate_get(f"{TASKS}/99").status_code == 404
    assert server.client.simulate_get(f"{TASKS}/x:y").status_code == 404
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    first = server.client.simulate_post(f"{TASKS}/{task_id}:cancel")
    again = server.client.simulate_post(f"{TASKS}/{task_id}:cancel")

    assert first.status_code == again.status_code == 200 and again.json == {}
    check_schema(again, "/tasks/{id}:cancel", "POST")
    assert server.client.simulate_get(f"{TASKS}/{task_id}").json["state"] == "CANCELED"


@pytest.mark.parametrize("params, words", [
    ({"page_size": "0"}, "page_size"), ({"page_size": "2049"}, "page_size"), ({"state": "DONE"}, "state must be"),
    ({"page_token": "nope"}, "cursor"), ({"tag_value": "v"}, "tag_key"), ({"name_prefix": "a\x00"}, "NUL"),
    ({"tag_key": "k", "tag_value": "\x00"}, "NUL"),
])
def test_a_bad_list_query_gets_400(server, params, words):
    answer = server.client.simulate_get(TASKS, params=params)
    assert answer.status_code == 400 and words in answer.json["description"], answer.json


def test_the_list_answers_only_tes_tasks_and_its_last_page_has_no_token(server):
    jobs.create_job(1, "example", server.config.jobs_path, utcnow())  # a portal upload: not a task
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    answer = server.client.simulate_get(TASKS, params={"view": "BASIC"})

    assert [t["id"] for t in answer.json["tasks"]] == [task_id] and "next_page_token" not in answer.json
    check_schema(answer, "/tasks")


def test_service_info_matches_the_spec(server):
    answer = server.client.simulate_get("/ga4gh/tes/v1/service-info")
    check_schema(answer, "/service-info")
    assert "without a container engine" in answer.json["description"]


def test_page_size_may_be_2048(server):
    assert server.client.simulate_get(TASKS, params={"page_size": "2048"}).status_code == 200


def test_cpu_cores_within_the_services_max_cores_is_accepted_and_unchecked_without_one(tmp_path, server):
    task = {**GOOD, "resources": {"cpu_cores": 4, "ram_gb": 512.0, "disk_gb": 1e6}}
    assert server.client.simulate_post(TASKS, json=task).status_code == 200
    uncapped = make_server(tmp_path / "uncapped", tes=TesConfig((("alpine", "example"),)))
    assert uncapped.client.simulate_post(TASKS, json={**task, "resources": {"cpu_cores": 512}}).status_code == 200


UNSUPPORTED = [
    ({"url": "s3://bucket/x.txt"}, "scheme s3 is not supported (inputs may be content or http(s) URLs)"),
    ({"url": "file:///etc/hosts"}, "scheme file is not supported"),
    ({"url": "gs://bucket/x"}, "scheme gs is not supported"),
    ({"url": "/shared/x.txt"}, "scheme (none: a bare path) is not supported"),
    ({"url": "https://example.org/dir/", "type": "DIRECTORY"}, "DIRECTORY inputs are not supported"),
    ({"content": "x", "type": "DIRECTORY"}, "DIRECTORY inputs are not supported"),
    # Not http(s) as the node tests it (the raw prefix; urlsplit would drop the tab and read http).
    ({"url": "ht\ttp://10.0.0.1/x"}, "scheme 'ht\\ttp' is not supported"),
    ({"url": "http:/10.0.0.1/x"}, "scheme http is not supported (inputs may be content or http(s) URLs)"),
    ({"url": " http://10.0.0.1/x"}, "scheme  http is not supported"),
]


@pytest.mark.parametrize("given, words", UNSUPPORTED)
def test_a_task_with_an_input_it_cannot_have_is_created_failed_and_never_queued(server, given, words):
    task = {**GOOD, "inputs": [GOOD["inputs"][0], {"path": "/data/two", **given}]}
    with events_heard() as heard:
        answer = server.client.simulate_post(TASKS, json=task)

    assert answer.status_code == 200 and list(answer.json) == ["id"]
    check_schema(answer, "/tasks", "POST")
    assert server.gateway.posted == [] and server.leftovers() == []  # no actor told, no files
    reason = f"TES input /data/two: {words}"
    number = int(answer.json["id"])
    with db_session:
        job = Job[number]
        assert (job.state, job.outcome, job.service, job.user_id) == ("Failed", "Failed", "example", 5)
        assert job.reason.startswith(reason) and job.finished_at is not None
        assert json.loads(TesTask[number].document)["inputs"][1].get("url") == given.get("url")
        assert [c.state for c in select(c for c in JobChange if c.job == number).order_by(JobChange.id)] == \
            ["Queued", "Failed"]
    assert [(name, fields["job"], fields["reason"]) for name, fields in heard] == [("failed", number, job.reason)]
    full = server.client.simulate_get(f"{TASKS}/{answer.json['id']}", params={"view": "FULL"})
    assert full.json["state"] == "SYSTEM_ERROR"
    assert full.json["logs"][0]["system_logs"][0].startswith(reason) and full.json["logs"][0]["logs"] == []
    assert full.json["inputs"][1].get("url") == given.get("url")
    check_schema(full, "/tasks/{id}")


def test_tasks_that_cannot_run_take_no_queued_place(server):
    failing = {**GOOD, "inputs": [{"path": "/data/x", "url": "s3://b/x"}]}
    for _ in range(3):  # max_queued_per_user is 2
        assert server.client.simulate_post(TASKS, json=failing).status_code == 200
    assert [server.client.simulate_post(TASKS, json=GOOD).status_code for _ in range(3)] == [200, 200, 429]


def finished_with_results(server, task_id: str, state: jobs.JobState, files: dict[str, str], **details) -> None:
    """The task's job ran on an executor and ended in `state` with a result zip holding `files`."""
    number, result = int(task_id), server.config.result_file(int(task_id))
    with zipfile.ZipFile(result, "w") as zipped:
        for name, text in files.items():
            zipped.writestr(name, text)
    now = utcnow()
    jobs.claim_for_dispatch([number], now)
    attempt = jobs.begin_attempts([(number, "http://127.0.0.1:9")], now)[number]
    jobs.mark_running([(number, attempt)], now)
    jobs.finish(number, attempt, state, now, result_path=result, **details)


OUTPUTS_JSON = json.dumps([
    {"path": "/data/out.txt", "file": "root/data/out.txt", "size_bytes": 2, "url": "https://example.org/o"},
    {"path": "/data/res/a b.txt", "file": "root/data/res/a b.txt", "size_bytes": 12, "url": None,
     "note": "not uploaded: scheme s3 is not supported"}])


def test_the_logs_of_a_failed_task_come_from_its_results_with_the_executors_exit_code_and_stderr_tail(server):
    task = {**GOOD, "executors": GOOD["executors"] + [{"image": "alpine", "command": ["sh", "-c", "exit 3"]}]}
    task_id = server.client.simulate_post(TASKS, json=task).json["id"]
    finished_with_results(server, task_id, jobs.JobState.FAILED, {
        script.EXECUTORS_LOG: "0\t2026-11-30T10:00:00.000001Z\t2026-11-30T10:00:01.000001Z\t0\n"
                              "1\t2026-11-30T10:00:01.000001Z\t2026-11-30T10:00:02.000001Z\t3\n",
        "root/data/out.txt": "x\n", "tes/0.stderr": "", "tes/1.stdout": "", "tes/1.stderr": "no such thing\n",
        "tes/outputs.json": OUTPUTS_JSON}, exit_code=3, reason="run.sh exited with code 3")

    full = server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "FULL"})

    assert full.json["state"] == "EXECUTOR_ERROR"
    assert [(e["exit_code"], e["stderr"]) for e in full.json["logs"][0]["logs"]] == [(0, ""), (3, "no such thing\n")]
    assert full.json["logs"][0]["system_logs"] == [
        "run.sh exited with code 3", "executor http://127.0.0.1:9",
        "output /data/res/a b.txt: not uploaded: scheme s3 is not supported"]
    check_schema(full, "/tasks/{id}")
    # The portal API: a failed job's /download stays 204; its fetched folder is read from the zip.
    assert server.client.simulate_get(f"/download/{task_id}").status_code == 204
    assert server.client.simulate_get(f"/jobs/{task_id}/files/tes/1.stderr").text == "no such thing\n"
    assert server.client.simulate_get(f"/download_partial/{task_id}").headers["content-type"] == "application/zip"


@pytest.mark.parametrize("public_url, base", [(None, "http://falconframework.org"),
                                              ("https://tes.example.org/orch", "https://tes.example.org/orch")])
def test_the_outputs_in_the_logs_are_the_files_the_node_collected_with_our_download_urls(tmp_path, clean_database,
                                                                                          public_url, base):
    server = make_server(tmp_path, tes=TesConfig((("alpine", "example"),), public_url=public_url))
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {
        "root/data/out.txt": "x\n", "root/data/res/a b.txt": "hello world\n", "tes/outputs.json": OUTPUTS_JSON},
        exit_code=0)

    basic = server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "BASIC"})
    listed = server.client.simulate_get(TASKS, params={"view": "BASIC"})

    outputs = [{"url": f"{base}/jobs/{task_id}/files/root/data/out.txt", "path": "/data/out.txt", "size_bytes": "2"},
               {"url": f"{base}/jobs/{task_id}/files/root/data/res/a%20b.txt", "path": "/data/res/a b.txt",
                "size_bytes": "12"}]
    assert basic.json["logs"][0]["outputs"] == outputs and listed.json["tasks"][0]["logs"][0]["outputs"] == outputs
    assert "system_logs" not in basic.json["logs"][0]
    check_schema(basic, "/tasks/{id}")
    check_schema(listed, "/tasks")
    own = server.client.simulate_get(outputs[1]["url"].removeprefix(base))
    assert own.status_code == 200 and own.text == "hello world\n"


def test_a_malformed_outputs_list_leaves_the_executors_logs(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {
        script.EXECUTORS_LOG: "0\t2026-11-30T10:00:00.000001Z\t2026-11-30T10:00:01.000001Z\t0\n",
        "tes/outputs.json": '{"path": 1}'}, exit_code=0)

    log = server.client.simulate_get(f"{TASKS}/{task_id}").json
    full = server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "FULL"}).json["logs"][0]
    assert log["state"] == "COMPLETE" and full["outputs"] == [] and [e["exit_code"] for e in full["logs"]] == [0]


# --- what a task may hold: every string UTF-8, the stored lengths, the spec's types, paths one folder holds --

LONE = "\ud800"  # JSON may escape a lone surrogate; UTF-8 cannot encode it
EXECUTOR = GOOD["executors"][0]


@pytest.mark.parametrize("change, words", [
    ({"name": "n" * 1025}, "name must be at most 1024 bytes in UTF-8, without NUL (it has 1025)"),
    ({"name": LONE}, "name holds a lone surrogate"),
    ({"description": f"a{LONE}"}, "description holds a lone surrogate"),
    ({"inputs": [{"path": "/data/in.txt", "content": LONE}]}, "inputs[0].content holds a lone surrogate"),
    ({"executors": [{**EXECUTOR, "command": ["echo", LONE]}]}, "executors[0].command[1] holds a lone surrogate"),
    ({"executors": [{**EXECUTOR, "env": {"A": LONE}}]}, "executors[0].env.A holds a lone surrogate"),
    ({"tags": {LONE: "v"}}, "tags key '\\ud800' holds a lone surrogate"),
    ({"outputs": [{"path": "/data/out.txt", "url": f"https://h/{LONE}"}]}, "outputs[0].url holds a lone surrogate"),
    ({"resources": {"zones": [LONE]}}, "resources.zones[0] holds a lone surrogate"),
    ({"resources": {"zones": 5}}, "resources.zones must be a list of strings"),
    ({"resources": {"ram_gb": "4"}}, "resources.ram_gb must be a number"),
    ({"resources": {"disk_gb": -1}}, "resources.disk_gb must be a number"),
    ({"resources": {"preemptible": "yes"}}, "resources.preemptible must be true or false"),
    ({"resources": {"backend_parameters_strict": "true"}}, "resources.backend_parameters_strict must be true or false"),
    ({"resources": {"backend_parameters": {"priority": 2}}}, "resources.backend_parameters must be an object whose"),
    ({"resources": []}, "resources must be an object"),
    ({"inputs": [{"path": "/data/in.txt", "content": "x", "url": 5}]}, "inputs[0].url must be a string"),
    ({"inputs": [{"path": "/data/in.txt", "content": "x", "name": 1}]}, "inputs[0].name must be a string"),
    ({"inputs": [{"path": "/data/in.txt", "content": "x", "streamable": "no"}]}, "inputs[0].streamable must be true"),
    ({"outputs": [{"path": "/data/o", "url": "https://h/o", "description": []}]}, "outputs[0].description must be"),
    ({"outputs": [{"path": "/data/o", "url": "https://h/o", "path_prefix": 1}]}, "outputs[0].path_prefix must be"),
    ({"inputs": [{"path": "/data/a", "content": "x"}, {"path": "/data/a/b", "content": "y"}]},
     "inputs[1].path '/data/a/b' is inside inputs[0]'s path '/data/a', which is a file"),
    ({"inputs": [{"path": "/data/a", "content": "x"}, {"path": "/data//a", "url": "https://h/a"}]},
     "inputs[1].path '/data//a' is also inputs[0]'s path"),
    ({"outputs": [{"path": "/data/in.txt/x", "url": "https://h/o"}]},
     "outputs[0].path '/data/in.txt/x' is inside inputs[0]'s path '/data/in.txt', which is a file"),
    ({"inputs": [{"path": f"/data/{i}", "content": "x"} for i in range(3)]},
     "the task has 3 inputs; at most 2 are accepted (max_files = 3 files, run.sh one of them)"),
])
def test_a_task_holding_what_cannot_be_stored_or_given_back_gets_400_and_nothing_is_stored(server, change, words):
    answer = post_json(server, json.dumps({**GOOD, **change}))  # "\\ud800" escaped, as a client may send it

    assert answer.status_code == 400 and words in answer.json["description"], answer.json
    assert server.leftovers() == [] and server.gateway.posted == []
    with db_session:
        assert select(j for j in Job).count() == 0 and select(t for t in TesTask).count() == 0


def post_json(server, body: str):
    return server.client.simulate_post(TASKS, body=body, headers={"Content-Type": "application/json"})


def test_an_infinite_ram_gb_gets_400(server):
    answer = post_json(server, json.dumps({**GOOD, "resources": {"ram_gb": 1}}).replace('"ram_gb": 1', '"ram_gb": 1e400'))
    assert answer.status_code == 400 and "resources.ram_gb must be a number" in answer.json["description"]


def test_contents_above_max_upload_mb_get_413_saying_what_is_accepted(server):
    half = "x" * (1 << 19)
    task = {**GOOD, "inputs": [{"path": "/data/a", "content": half}, {"path": "/data/b", "content": half + "é"}]}
    answer = server.client.simulate_post(TASKS, json=task)

    assert answer.status_code == 413, answer.json
    assert answer.json["description"] == (f"the inputs' contents are {(1 << 20) + 2} bytes in all; at most {1 << 20} "
                                          f"bytes are accepted (max_upload_mb); give larger inputs as http(s) urls.")
    assert server.leftovers() == [] and server.gateway.posted == []
    assert server.client.simulate_post(TASKS, json={**task, "inputs": task["inputs"][:1]}).status_code == 200


def test_odd_but_valid_fields_are_kept_unknown_keys_dropped_and_py_tes_reads_every_view(server):
    from tes import models
    from tes.utils import unmarshal

    task = {**GOOD, "unknown": 1, "description": "é ✓",
            "inputs": [{**GOOD["inputs"][0], "name": "in", "description": "d", "streamable": False, "extra": 1}],
            "outputs": [{**GOOD["outputs"][0], "name": "out", "description": "d", "extra": 1},
                        {"path": "/data/*.log", "url": "https://h/logs/", "path_prefix": "/data/"}],
            "executors": [{**EXECUTOR, "extra": 1, "ignore_error": True}],
            "resources": {"cpu_cores": 1, "ram_gb": 0.5, "disk_gb": 2, "preemptible": True, "zones": ["eu-1"],
                          "backend_parameters": {"priority": "1"}, "backend_parameters_strict": False, "gpus": 4},
            "volumes": ["/scratch/v"]}
    task_id = server.client.simulate_post(TASKS, json=task).json["id"]

    full = server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": "FULL"})
    listed = server.client.simulate_get(TASKS, params={"view": "BASIC"})

    assert "gpus" not in full.json["resources"] and full.json["resources"]["zones"] == ["eu-1"]
    assert "extra" not in full.json["inputs"][0] and full.json["inputs"][0]["streamable"] is False
    assert "extra" not in full.json["executors"][0] and "unknown" not in full.json
    assert unmarshal(full.json, models.Task).resources.ram_gb == 0.5
    assert unmarshal(listed.json, models.ListTasksResponse).tasks[0].outputs[0].name == "out"
    check_schema(full, "/tasks/{id}")
    check_schema(listed, "/tasks")


# --- the job writes tes/: its logs are read within size caps and entry by entry --------------------------

TSV_LINE = "0\t2026-11-30T10:00:00.000001Z\t2026-11-30T10:00:01.000001Z\t{}\n"
GOOD_OUTPUT = {"path": "/data/out.txt", "file": "root/data/out.txt", "size_bytes": 2, "url": None}


def views_of(server, task_id: str) -> list:
    """FULL, BASIC and the list's BASIC view of the task, each answered 200 and of the spec's schema."""
    answers = [server.client.simulate_get(f"{TASKS}/{task_id}", params={"view": view}) for view in ("FULL", "BASIC")]
    listed = server.client.simulate_get(TASKS, params={"view": "BASIC"})
    assert [a.status_code for a in (*answers, listed)] == [200, 200, 200]
    for answer in answers:
        check_schema(answer, "/tasks/{id}")
    check_schema(listed, "/tasks")
    return [answers[0].json["logs"][0], answers[1].json["logs"][0], listed.json["tasks"][0]["logs"][0]]


def test_entries_of_outputs_json_not_of_its_shape_are_dropped_and_never_give_a_5xx(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    bad = [{**GOOD_OUTPUT, "size_bytes": 1e400}, {**GOOD_OUTPUT, "size_bytes": True}, {**GOOD_OUTPUT, "size_bytes": -1},
           [GOOD_OUTPUT], [[1, [2]]], {**GOOD_OUTPUT, "path": 7}, {**GOOD_OUTPUT, "file": "root/../../etc/passwd"},
           {**GOOD_OUTPUT, "file": "/etc/passwd"}, {**GOOD_OUTPUT, "path": f"/data/{LONE}"},
           {**GOOD_OUTPUT, "note": {"a": 1}}, "x", None, {}]
    text = json.dumps([*bad, GOOD_OUTPUT]).replace("1e+400", "1e400").replace("Infinity", "1e400")
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {"tes/outputs.json": text}, exit_code=0)

    for log in views_of(server, task_id):
        assert [(o["path"], o["size_bytes"]) for o in log["outputs"]] == [("/data/out.txt", "2")]


@pytest.mark.parametrize("text", ["[" * 100_000, '{"path": 1}', "not json", "\x00\xff"])
def test_an_outputs_json_that_is_not_a_list_leaves_no_outputs(server, text):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {"tes/outputs.json": text}, exit_code=0)
    assert [log["outputs"] for log in views_of(server, task_id)] == [[], [], []]


def test_lines_of_executors_tsv_not_of_its_shape_are_dropped(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    lines = [TSV_LINE.format(0), TSV_LINE.format("x"), TSV_LINE.format(99999999999), "1" + TSV_LINE.format(0)[1:],
             "0\tyesterday\ttoday\t0\n", "0\t1\n", "\n", TSV_LINE.format(0).replace("\t", "\t\t", 1)]
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {script.EXECUTORS_LOG: "".join(lines)},
                          exit_code=0)
    assert [len(log["logs"]) for log in views_of(server, task_id)] == [1, 1, 1]


def test_logs_above_their_size_caps_are_not_read(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    big = TSV_LINE.format(0) * ((results.MAX_LOG_BYTES // len(TSV_LINE.format(0))) + 1)
    outputs = json.dumps([GOOD_OUTPUT] * (results.MAX_LOG_BYTES // len(json.dumps(GOOD_OUTPUT)) + 1))
    finished_with_results(server, task_id, jobs.JobState.COMPLETED,
                          {script.EXECUTORS_LOG: big, "tes/outputs.json": outputs}, exit_code=0)
    assert [(log["logs"], log["outputs"]) for log in views_of(server, task_id)] == [([], [])] * 3


def test_the_tails_come_from_tails_json_else_from_a_small_stream_file_else_are_empty(server):
    task = {**GOOD, "executors": [{"image": "alpine", "command": ["true"]}] * 3}
    task_id = server.client.simulate_post(TASKS, json=task).json["id"]
    large = "y" * (results.MAX_STREAM_BYTES + 1)
    tails = [{"stdout": "z" * 5000, "stderr": "listed"}, {"stdout": 5, "stderr": LONE}, "not an entry"]
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {
        script.EXECUTORS_LOG: "".join(TSV_LINE.format(0).replace("0", str(i), 1) for i in range(3)),
        "tes/tails.json": json.dumps(tails), "tes/0.stderr": "not read",
        "tes/1.stdout": "small\n", "tes/1.stderr": large, "tes/2.stdout": large, "tes/2.stderr": "e"}, exit_code=0)

    full = views_of(server, task_id)[0]["logs"]
    assert [(e["stdout"], e["stderr"]) for e in full] == [("z" * tes_plan.TAIL_CHARS, "listed"), ("small\n", ""), ("", "e")]


def test_a_tails_json_above_its_cap_is_ignored_for_the_small_stream_files(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    tails = json.dumps([{"stdout": "t" * results.MAX_LOG_BYTES, "stderr": "t"}])
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {
        script.EXECUTORS_LOG: TSV_LINE.format(0), "tes/tails.json": tails, "tes/0.stderr": "own\n"}, exit_code=0)
    full = views_of(server, task_id)[0]["logs"]
    assert [(e["stdout"], e["stderr"]) for e in full] == [("", "own\n")]  # GOOD's stdout is /data/out.txt: absent


# --- what a node will take: volumes as workdirs, the plan's size -------------------------------------------

def test_a_volume_or_workdir_directly_under_root_is_accepted(server):
    task = {**GOOD, "volumes": ["/work", "/"], "executors": [{**EXECUTOR, "workdir": "/work"}]}
    answer = server.client.simulate_post(TASKS, json=task)

    assert answer.status_code == 200, answer.json
    with db_session:
        plan = json.loads(open(os.path.join(Job[int(answer.json["id"])].dir, "tes", "plan.json")).read())
    assert plan["roots"] == ["data", "work"]


def test_a_task_whose_plan_no_node_would_take_gets_400(server):
    def outputs(count: int) -> list[dict]:
        return [{"path": f"/data/{i:04d}/{'p' * 3990}", "url": f"https://example.org/{i}"} for i in range(count)]

    answer = server.client.simulate_post(TASKS, json={**GOOD, "outputs": outputs(300)})

    assert answer.status_code == 400, answer.json
    assert "a plan of 12" in answer.json["description"] and "at most 1048576 are accepted" in answer.json["description"]
    assert server.leftovers() == [] and server.gateway.posted == []
    assert server.client.simulate_post(TASKS, json={**GOOD, "outputs": outputs(200)}).status_code == 200


# --- the result zip is read once, and not at all when its directory is too large --------------------------

def test_the_views_read_a_tasks_result_zip_once_and_then_its_sidecar(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {
        script.EXECUTORS_LOG: TSV_LINE.format(0), "tes/0.stderr": "own\n", "tes/outputs.json": json.dumps([GOOD_OUTPUT])},
        exit_code=0)
    first = views_of(server, task_id)
    result = server.config.result_file(int(task_id))
    with open(result, "wb") as handle:  # were the zip read again, the logs would be gone
        handle.write(b"not a zip")

    assert views_of(server, task_id) == first
    assert [e["stderr"] for e in first[0]["logs"]] == ["own\n"] and "stderr" not in first[1]["logs"][0]
    assert [o["path"] for o in first[1]["outputs"]] == ["/data/out.txt"]
    assert sorted(os.listdir(server.config.results_path)) == [f"{task_id}.zip", f"{task_id}.zip.tes.json"]


def test_a_result_zip_with_too_many_files_is_not_parsed_and_the_full_view_says_so(server):
    task_id = server.client.simulate_post(TASKS, json=GOOD).json["id"]
    many = {f"root/data/{i:03d}{'n' * 4000}": "" for i in range(270)}  # a central directory of 1.1 MB
    finished_with_results(server, task_id, jobs.JobState.COMPLETED, {
        script.EXECUTORS_LOG: TSV_LINE.format(0), "tes/outputs.json": json.dumps([GOOD_OUTPUT]), **many}, exit_code=0)

    full, basic, listed = views_of(server, task_id)

    assert (full["logs"], full["outputs"], basic["logs"], listed["outputs"]) == ([], [], [], [])
    assert results.TOO_MANY_FILES in full["system_logs"] and "system_logs" not in basic


def test_the_directory_size_is_read_from_the_end_records_zip64_included(monkeypatch):
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)  # zipfile writes the ZIP64 records beyond it
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ("a", "b"):
            zipped.writestr(name, "x")
    data = bytearray(archive.getvalue())
    directory = 2 * (46 + 1)
    assert data[-22:-20] == b"PK" and results.directory_bytes(io.BytesIO(bytes(data))) == directory
    data[-10:-6] = b"\xff\xff\xff\xff"  # as a writer leaves the end record when the size needs ZIP64
    assert results.directory_bytes(io.BytesIO(bytes(data))) == directory
    assert results.directory_bytes(io.BytesIO(b"no end record")) is None


def test_a_sidecar_written_after_its_result_was_removed_is_removed_too(tmp_path):
    kept = tmp_path / "7.zip.tes.json"
    results._keep(results.Results(), str(kept), str(tmp_path / "7.zip"))  # the janitor removed 7.zip meanwhile
    assert os.listdir(tmp_path) == []
