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
from tests.harness import events_heard, make_server
from tests.tes_schema import check_schema
from web.tes import script, views

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
    ({"inputs": [{"path": "/data/x", "content": "x", "type": "DIRECTORY"}]}, "DIRECTORY input cannot have content"),
    ({"inputs": [{"path": "/data/x"}]}, "must have a url or content"),
    ({"inputs": [{"path": "/data/x", "url": "http://[::1/x"}]}, "is not a URL"),
    ({"tags": {"user_id": "-1"}}, "tags.user_id must be a positive integer"),
    ({"resources": {"cpu_cores": 5}}, "cpu_cores 5 is more than service 'example' gives a task (max_cores = 4)"),
    ({"resources": {"cpu_cores": "2"}}, "cpu_cores must be a positive integer"),
    ({"resources": {"backend_parameters": {"queue": "long"}, "backend_parameters_strict": True}}, "'queue' is not supported"),
    ({"resources": {"backend_parameters": {"priority": "99"}}}, "priority must be an integer"),
    # The list's indexed columns (storage/models.py TesTag, TesTask) hold them: bounded, no NUL.
    ({"tags": {"run": "r" * 401}}, "tags: keys must be at most 128 characters and values at most 400"),
    ({"tags": {"k" * 129: ""}}, "tags: keys must be at most 128"),
    ({"tags": {"run": "a\x00b"}}, "without NUL"),
    ({"name": "n" * 1025}, "name must be at most 1024 characters"),
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
        assert json.loads(TesTask[number].document)["inputs"][1]["url"] == given["url"]
        assert [c.state for c in select(c for c in JobChange if c.job == number).order_by(JobChange.id)] == \
            ["Queued", "Failed"]
    assert [(name, fields["job"], fields["reason"]) for name, fields in heard] == [("failed", number, job.reason)]
    full = server.client.simulate_get(f"{TASKS}/{answer.json['id']}", params={"view": "FULL"})
    assert full.json["state"] == "SYSTEM_ERROR"
    assert full.json["logs"][0]["system_logs"][0].startswith(reason) and full.json["logs"][0]["logs"] == []
    assert full.json["inputs"][1]["url"] == given["url"]
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
