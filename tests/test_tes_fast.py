"""The TES API in process (falcon.testing, a stand-in gateway, the temp SQLite tables): what a task
must be (400 naming what is wrong, nothing stored, nothing told), what each view holds (checked
against the spec's OpenAPI document and for keys outside it), the state mapping, list and cancel
answers. No process is started."""
from __future__ import annotations

import io
import os
import zipfile

import pytest
from pony.orm import db_session, select

from actors.messages import JobQueued
from conf.settings import TesConfig
from storage import jobs
from storage.clock import utcnow
from storage.models import Job, TesTask
from tests.harness import make_server
from tests.tes_schema import check_schema
from web.tes import script, views

TASKS = "/ga4gh/tes/v1/tasks"
GOOD = {"name": "t", "tags": {"user_id": "5"},
        "inputs": [{"path": "/data/in.txt", "content": "x\n"}],
        "outputs": [{"path": "/data/out.txt", "url": "https://example.org/o"}],
        "executors": [{"image": "alpine", "command": ["cat"], "stdin": "/data/in.txt", "stdout": "/data/out.txt"}]}


@pytest.fixture
def server(tmp_path, clean_database):
    return make_server(tmp_path, tes=TesConfig((("alpine", "example"),)))


@pytest.mark.parametrize("change, words", [
    ({"executors": []}, "executors must be a non-empty list"),
    ({"executors": [{"image": "alpine", "command": "ls"}]}, "executors[0].command must be a non-empty list"),
    ({"executors": [{"image": "ubuntu", "command": ["ls"]}]}, "image 'ubuntu' is not served here"),
    ({"executors": [{"image": "alpine", "command": ["ls"], "workdir": "data"}]}, "executors[0].workdir must be an absolute"),
    ({"executors": [{"image": "alpine", "command": ["ls"], "stdout": "/usr/x"}]}, "under /usr"),
    ({"executors": [{"image": "alpine", "command": ["ls"], "env": {"A-B": "1"}}]}, "not a shell variable name"),
    ({"inputs": [{"path": "/in.txt", "content": "x"}]}, "directly under /"),
    ({"inputs": [{"path": "/data/../x", "content": "x"}]}, "must not contain '..'"),
    ({"inputs": [{"path": "/data/x", "url": "https://example.org/x"}]}, "url inputs are not"),
    ({"tags": {"user_id": "-1"}}, "tags.user_id must be a positive integer"),
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
        assert sorted(os.listdir(job.dir)) == ["run.sh", "tes-input-0"]
        assert "extra" not in TesTask[number].document


def test_a_task_without_a_user_id_tag_counts_for_the_portal_as_user_0(server):
    task_id = server.client.simulate_post(TASKS, json={**GOOD, "tags": {}}).json["id"]
    with db_session:
        assert Job[int(task_id)].user_id == 0


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
    ({"page_size": "0"}, "page_size"), ({"page_size": "2048"}, "page_size"), ({"state": "DONE"}, "state must be"),
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
