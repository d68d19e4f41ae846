"""The server's HTTP layer in process: `web.server_app.create_app` under falcon.testing, with a
stand-in actor gateway (what the app would tell the actors is recorded) and the temp SQLite tables.

Covers every refused upload (status, a description saying what was wrong and what is accepted,
nothing stored, nothing told), an accepted one, the executors' reports and heartbeats, every
answer of download / job view / cancel by the job's state, and who may call what: portal tokens,
the cluster secret, and a server with neither. No process is started.
"""
from __future__ import annotations

import errno
import os
import re
import uuid
import zipfile

import pytest
from unittest.mock import ANY
from pony.orm import db_session, select

from actors.messages import CancelJob, ExecutorEvent, ExecutorHeartbeat, JobQueued
from conf.settings import ServerConfig
from storage import jobs
from storage.clock import utcnow
from storage.models import Job
from storage.states import JobState
from tests.harness import BOUNDARY, GOOD, RUN, Server, bearer, events_heard, make_server, multipart
from web import uploads

EXECUTOR = "http://127.0.0.1:9001"
HADDOCK = "haddock-token-0123456789abcdef"
PRODIGY = "prodigy-token-0123456789abcdef"
SECRET = "cluster-secret-0123456789abcdef"
@pytest.fixture
def server(tmp_path, clean_database) -> Server:
    """Without portal tokens or a cluster secret: a loopback server, as `make run` starts it."""
    return make_server(tmp_path)


@pytest.fixture
def guarded(tmp_path, clean_database) -> Server:
    """Two portals, and the cluster secret its executors and operators hold."""
    return make_server(tmp_path, tokens=(("haddock", HADDOCK), ("prodigy", PRODIGY)), cluster_secret=SECRET)


@db_session
def rows() -> list[tuple[int, str]]:
    return list(select((j.id, j.state) for j in Job).order_by(1))


def job_in(state: JobState, config: ServerConfig, portal: str | None = None) -> tuple[int, int | str]:
    """A job of user 1 in `example`, brought to `state` the way the actors bring it there; returns
    (its number, the id the API names it by)."""
    now = utcnow()
    folder = os.path.join(config.jobs_path, uuid.uuid4().hex)
    os.makedirs(folder)
    number, view = jobs.create_job(1, "example", folder, now, portal)
    if state is not JobState.QUEUED:
        jobs.claim_for_dispatch([number], now)
    if state not in (JobState.QUEUED, JobState.DISPATCHING):
        attempt = jobs.begin_attempts([(number, EXECUTOR)], now)[number]
        jobs.mark_submitted([(number, attempt, "7")], now)
        if state is not JobState.SUBMITTED:
            jobs.mark_running([(number, attempt)], now)
    if state in (JobState.COMPLETED, JobState.CLEANED):
        with zipfile.ZipFile(config.result_file(number), "w") as archive:
            archive.writestr("out.txt", "hi\n")
        jobs.finish(number, attempt, JobState.COMPLETED, now, exit_code=0, result_path=config.result_file(number))
    elif state is JobState.FAILED:
        jobs.finish(number, attempt, JobState.FAILED, now, exit_code=3, reason="run.sh exited with 3",
                    stderr_tail="no input.pdb")
    elif state is JobState.CANCELLED:
        jobs.cancel(number, portal, now)
    if state is JobState.CLEANED:
        jobs.mark_cleaned(number, now)
    assert jobs.job_view(view["id"], portal)["status"] == state.value
    return number, view["id"]


def assert_refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json["description"], response.json
    assert response.json["title"]


# --- POST /upload ------------------------------------------------------------------------------

@pytest.mark.parametrize("fields, files, words", [
    ({"service": "example"}, [RUN], "user_id is missing; send it as a positive integer"),
    ({"user_id": "abc", "service": "example"}, [RUN], "user_id must be a positive integer below 2^63, got 'abc'"),
    ({"user_id": "-5", "service": "example"}, [RUN], "positive integer below 2^63, got '-5'"),
    ({"user_id": "0", "service": "example"}, [RUN], "positive integer below 2^63, got '0'"),
    ({"user_id": "1.5", "service": "example"}, [RUN], "positive integer below 2^63, got '1.5'"),
    ({"user_id": "\u0661", "service": "example"}, [RUN], "positive integer"),  # an Arabic-Indic digit one
    ({"user_id": str(2**63), "service": "example"}, [RUN], "positive integer below 2^63"),
    ({"user_id": "1"}, [RUN], "service is missing; send one of: example, prodigy"),
    ({"user_id": "1", "service": "nosuch"}, [RUN], "'nosuch' is not configured here; send one of: example, prodigy"),
    ({"user_id": "1", "service": "example", "colour": "blue"}, [RUN],
     "field 'colour' is not accepted; send callback_url, group, max_runtime, priority, service, user_id as text fields"),
    ([("user_id", "1"), ("user_id", "2"), ("service", "example")], [RUN], "field 'user_id' was sent twice"),
    (GOOD, [], "no files were sent; a job needs at least run.sh"),
    (GOOD, [("input.pdb", b"ATOM")], "the files (input.pdb) do not include run.sh"),
    (GOOD, [RUN, ("run.sh", b"false")], "two file parts are named 'run.sh'; every file name must be unique"),
    (GOOD, [RUN, ("sub/run.sh", b"false")], "two file parts are named 'run.sh'"),  # stored under base names
    (GOOD, [RUN, ("..", b"x")], "has no usable base name; send names such as run.sh"),
    (GOOD, [RUN, ("a/.", b"x")], "has no usable base name"),
    (GOOD, [RUN, ("a\x00b", b"x")], "NUL byte; send plain base names"),
    (GOOD, [RUN, ("a\x01b", b"x")], "contains control characters or quotes; send plain names"),
    (GOOD, [RUN, ("x" * 256, b"x")], "is longer than 255 bytes"),
    (GOOD, [RUN, ("\u00e9" * 128, b"x")], "is longer than 255 bytes"),  # 128 characters, 256 bytes
    (GOOD, [RUN, (b"caf\xe9.txt", b"x")], "not valid UTF-8"),
])
def test_a_bad_upload_is_400_saying_what_was_wrong_and_stores_and_tells_nothing(server, fields, files, words):
    response = server.upload(fields, files)

    assert_refused(response, 400, words)
    assert response.json["title"] == "Invalid upload"
    assert rows() == [] and server.leftovers() == [] and server.gateway.sent == []


@pytest.mark.parametrize("disposition, words", [
    (b'form-data; name="file"; filename="say\\"hi\\".txt"', "control characters or quotes"),
    (b"form-data; name=\"file\"; filename*=utf-8''x%0D%0AContent-Type:%20evil", "control characters"),
])
def test_part_headers_that_cannot_be_stored_safely_are_400_and_store_nothing(server, disposition, words):
    body, headers = multipart(GOOD, [RUN])
    closing = f"--{BOUNDARY}--\r\n".encode()
    body = body[:-len(closing)] + f"--{BOUNDARY}\r\nContent-Disposition: ".encode() + disposition \
        + b"\r\n\r\nx\r\n" + closing
    response = server.client.simulate_post("/upload", body=body, headers=headers)

    assert_refused(response, 400, words)
    assert rows() == [] and server.leftovers() == [] and server.gateway.sent == []


def test_too_many_files_is_413_saying_the_limit_and_stores_nothing(server):
    response = server.upload(GOOD, [RUN, *[(f"in{n}.txt", b"x") for n in range(3)]])  # 4 files, max_files = 3

    assert_refused(response, 413, "an upload may hold at most 3 files")
    assert rows() == [] and server.leftovers() == [] and server.gateway.sent == []


def test_an_upload_over_max_upload_mb_is_413_saying_both_sizes_before_its_body_is_read(server):
    response = server.upload(GOOD, [RUN, ("big.bin", b"\0" * (1 << 20))])

    assert_refused(response, 413, f"bytes; at most {1 << 20} bytes are accepted")
    assert rows() == [] and server.leftovers() == [] and server.gateway.sent == []


@pytest.mark.parametrize("headers, body, status, words", [
    ({"Content-Type": "application/json"}, b'{"user_id": 1, "service": "example"}', 415,
     "send the job as multipart/form-data"),
    ({}, b"user_id=1&service=example", 415, "multipart/form-data"),
    ({"Content-Type": "multipart/form-data; boundary=b"}, None, 411, "send a Content-Length header"),
    ({"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}, f"--{BOUNDARY}\r\nnonsense".encode(), 400,
     "incomplete body part headers"),
])
def test_a_body_that_is_not_a_whole_multipart_upload_is_refused_and_stores_nothing(server, headers, body, status,
                                                                                   words):
    response = server.client.simulate_post("/upload", body=body, headers=headers)

    assert_refused(response, status, words)
    assert rows() == [] and server.leftovers() == [] and server.gateway.sent == []


def test_a_user_over_max_queued_per_user_is_429_with_retry_after_and_other_users_are_not(server):
    first, second = server.upload().json, server.upload().json

    refused = server.upload()

    assert_refused(refused, 429, "user 1 already has 2 jobs waiting in example (max_queued_per_user)")
    assert int(refused.headers["Retry-After"]) > 0
    assert rows() == [(first["id"], "Queued"), (second["id"], "Queued")]
    assert len(server.leftovers()) == 2 and len(server.gateway.sent) == 2
    # Another user, and the same user in a service without the limit, are not held back.
    assert server.upload({"user_id": "2", "service": "example"}).status_code == 200
    assert server.upload({"user_id": "1", "service": "prodigy"}).status_code == 200


@pytest.mark.parametrize("why", ["stopping", "restarting"])
def test_while_the_server_stops_or_rebuilds_its_actors_an_upload_is_503_with_retry_after(server, why):
    if why == "stopping":
        server.stopping.set()
    else:
        server.gateway.closed = "the actor system is being rebuilt"

    response = server.upload()

    assert_refused(response, 503, "again")
    assert int(response.headers["Retry-After"]) > 0
    assert rows() == [] and server.leftovers() == [] and server.gateway.sent == []


def test_a_full_disk_is_507_and_leaves_no_half_written_upload(server, monkeypatch):
    class FullDisk:
        """A file the disk has no room for: created, and every write refused."""

        def __init__(self, path: str, mode: str = "r"):
            with open(path, mode):
                pass

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(uploads, "open", FullDisk, raising=False)  # what web.uploads opens, only

    response = server.upload()

    assert_refused(response, 507, "the server's disk is full; nothing was stored")
    assert rows() == [] and server.leftovers() == [] and server.gateway.sent == []


def test_get_on_upload_is_405_pointing_at_the_api_description(server):
    assert_refused(server.client.simulate_get("/upload"), 405, "see /api-docs/openapi.json")


def test_an_accepted_upload_is_a_queued_row_a_folder_of_its_files_and_a_jobqueued_to_the_queue(server):
    pdb = ("input.pdb", b"ATOM      1  N   ALA A   1\n")
    # A path in a file name is dropped: the file is stored under its base name, inside the job's folder.
    response = server.upload({"user_id": " 7 ", "service": " example"}, [("../../etc/run.sh", RUN[1]), pdb])

    assert response.status_code == 200, response.text
    view = response.json
    assert view["user_id"] == 7 and view["service"] == "example" and view["status"] == "Queued"
    assert view["attempts"] == 0 and view["outcome"] is None and view["created_at"].endswith("Z")
    assert rows() == [(view["id"], "Queued")]
    (folder,) = os.listdir(server.config.jobs_path)
    stored = os.path.join(server.config.jobs_path, folder)
    assert sorted(os.listdir(stored)) == ["input.pdb", "run.sh"]
    with open(os.path.join(stored, "run.sh"), "rb") as handle:
        assert handle.read() == RUN[1]
    assert os.listdir(server.config.incoming_path) == []
    assert server.gateway.posted == [("queue", JobQueued(view["id"], "example", 7, None, 0, None, ANY))]


# --- POST /internal/events: an executor's reports ----------------------------------------------

FINISHED = {"event": "finished", "job_id": 1, "attempt": 1, "task_id": "7", "exit_code": 0}
EVENT_WORDS = "send a JSON object with job_id and attempt as positive integers, event as started, finished"
BATCH_WORDS = "send one event, or an object whose only key is events: a list of 1 to 1000 events"


@pytest.mark.parametrize("body, words", [
    ([1, 2, 3], "send a JSON object"),
    ("finished", "send a JSON object"),
    ({}, "event 0: " + EVENT_WORDS),
    ({**FINISHED, "event": "exploded"}, EVENT_WORDS),
    ({**FINISHED, "event": None}, EVENT_WORDS),
    ({**FINISHED, "job_id": "1"}, EVENT_WORDS),
    ({**FINISHED, "job_id": True}, EVENT_WORDS),
    ({**FINISHED, "job_id": 0}, EVENT_WORDS),
    ({**FINISHED, "job_id": 2**63}, EVENT_WORDS),
    ({**FINISHED, "job_id": 1.5}, EVENT_WORDS),
    ({**FINISHED, "attempt": 0}, EVENT_WORDS),
    ({**FINISHED, "attempt": 2**31}, EVENT_WORDS),
    ({**FINISHED, "exit_code": 2**40}, "exit_code as an integer or null"),
    ({**FINISHED, "exit_code": "0"}, EVENT_WORDS),
    ({**FINISHED, "task_id": 7}, "task_id as a string"),
    ({**FINISHED, "task_id": ""}, EVENT_WORDS),
    ({**FINISHED, "task_id": "7" * 65}, EVENT_WORDS),
    ({**FINISHED, "stderr_tail": 5}, "stderr_tail as a string or null"),
    ({**FINISHED, "reason": ""}, "reason as 1 to 1000 characters or null"),
    ({**FINISHED, "reason": "x" * 1001}, "reason as 1 to 1000 characters or null"),
    ({"events": []}, BATCH_WORDS),
    ({"events": [FINISHED] * 1001}, BATCH_WORDS),
    ({"events": FINISHED}, BATCH_WORDS),
    ({"events": [FINISHED], "job_id": 1}, BATCH_WORDS),
    # One bad event refuses the whole batch: the good one before it is not told either.
    ({"events": [FINISHED, {**FINISHED, "attempt": -1}]}, "event 1: " + EVENT_WORDS),
])
def test_a_malformed_report_is_400_saying_what_a_report_holds_and_reaches_no_actor(server, body, words):
    response = server.client.simulate_post("/internal/events", json=body)

    assert_refused(response, 400, words)
    assert server.gateway.sent == []


def test_a_report_whose_body_is_not_json_is_400_and_reaches_no_actor(server):
    response = server.client.simulate_post("/internal/events", body=b"{not json",
                                           headers={"Content-Type": "application/json"})

    assert response.status_code == 400 and response.json["description"]
    assert server.gateway.sent == []


def test_a_batch_with_a_bad_event_does_not_mark_its_good_started_events_running(server):
    number, _ = job_in(JobState.SUBMITTED, server.config)
    started = {"event": "started", "job_id": number, "attempt": 1}

    response = server.client.simulate_post("/internal/events", json={"events": [started, {"event": "started"}]})

    assert response.status_code == 400
    assert rows() == [(number, "Submitted")]


def test_finished_lost_and_cancelled_reports_go_to_the_retriever_in_order_and_started_marks_the_job_running(server):
    number, _ = job_in(JobState.SUBMITTED, server.config)
    events = [{"event": "started", "job_id": number, "attempt": 1, "task_id": "7"},
              {"event": "finished", "job_id": number, "attempt": 1, "task_id": "7", "exit_code": 3,
               "stderr_tail": "e" * 5000, "reason": "over max_memory_mb"},
              {"event": "lost", "job_id": 41, "attempt": 2.0},  # JSON's 2.0 is the integer 2
              {"event": "cancelled", "job_id": 42, "attempt": 1, "exit_code": None}]

    response = server.client.simulate_post("/internal/events", json={"events": events})

    assert response.status_code == 202 and response.json == {"accepted": True}
    assert rows() == [(number, "Running")]
    assert server.gateway.posted == [
        ("retriever", ExecutorEvent(number, 1, "finished", "7", 3, "e" * 4000, "over max_memory_mb")),
        ("retriever", ExecutorEvent(41, 2, "lost")),
        ("retriever", ExecutorEvent(42, 1, "cancelled"))]


def test_a_started_report_of_another_attempt_changes_nothing(server):
    number, _ = job_in(JobState.SUBMITTED, server.config)

    response = server.client.simulate_post("/internal/events", json={"event": "started", "job_id": number,
                                                                     "attempt": 2})

    assert response.status_code == 202
    assert rows() == [(number, "Submitted")] and server.gateway.sent == []


# --- POST /internal/executors: heartbeats and registration -------------------------------------

BEAT = {"service": "example", "url": EXECUTOR, "slots": 4, "draining": False, "tasks": [["7", 1, 1]]}
BEAT_WORDS = "send service, url (http(s)://host:port), slots (1-4096), draining (true/false) and tasks"
TIER_WORDS = "tier, 1-100, default 1"


@pytest.mark.parametrize("body", [
    {**BEAT, "service": None},
    {key: value for key, value in BEAT.items() if key != "service"},
    {**BEAT, "url": "ftp://127.0.0.1:9001"},
    {**BEAT, "url": "http://"},
    {**BEAT, "url": "127.0.0.1:9001"},
    {**BEAT, "url": "http://a\x00b:9000"},
    {**BEAT, "url": "http://host:9000/\n"},
    {**BEAT, "url": "http://host/" + "x" * 1024},
    {**BEAT, "slots": 0},
    {**BEAT, "slots": 4097},
    {**BEAT, "slots": "4"},
    {**BEAT, "draining": "no"},
    {**BEAT, "draining": None},
    {**BEAT, "tasks": "7,1,1"},
    {**BEAT, "tasks": [["7", 1]]},
    {**BEAT, "tasks": [[7, 1, 1]]},
    {**BEAT, "tasks": [["7", 0, 1]]},
    {**BEAT, "tasks": [["7", 1, 0]]},
    {**BEAT, "tasks": [["7" * 65, 1, 1]]},
    {**BEAT, "leaving": "yes"},
    {**BEAT, "tier": 0},
    {**BEAT, "tier": 101},
    {**BEAT, "tier": "2"},
    {**BEAT, "tier": True},
    {**BEAT, "tier": None},
])
def test_a_malformed_heartbeat_is_400_saying_what_a_heartbeat_holds_and_reaches_no_actor(server, body):
    response = server.client.simulate_post("/internal/executors", json=body)

    assert_refused(response, 400, BEAT_WORDS)
    assert TIER_WORDS in response.json["description"]
    assert server.gateway.sent == []


def test_a_heartbeat_that_is_not_an_object_is_400(server):
    assert_refused(server.client.simulate_post("/internal/executors", json=[BEAT]), 400, "send a JSON object")
    assert server.gateway.sent == []


def test_a_heartbeat_of_an_unknown_service_is_404_naming_the_configured_ones(server):
    response = server.client.simulate_post("/internal/executors", json={**BEAT, "service": "nosuch"})

    assert_refused(response, 404, "service 'nosuch' is not configured on this server; configured: example, prodigy")
    assert server.gateway.sent == []


def test_a_heartbeat_goes_to_its_services_dispatcher_and_answers_the_executor_timeout(server):
    response = server.client.simulate_post("/internal/executors", json={**BEAT, "url": EXECUTOR + "/"})
    bare = server.client.simulate_post("/internal/executors", json={
        "service": "prodigy", "url": "https://node.example.org:9002", "slots": 4096, "draining": True})

    assert response.status_code == bare.status_code == 200
    assert response.json == {"executor_timeout": server.config.executor_timeout}
    assert server.gateway.posted == [
        ("dispatcher:example", ExecutorHeartbeat("example", EXECUTOR, 4, False, (("7", 1, 1),))),
        ("dispatcher:prodigy", ExecutorHeartbeat("prodigy", "https://node.example.org:9002", 4096, True, ()))]


def test_a_last_heartbeat_saying_the_executor_leaves_reaches_its_dispatcher(server):
    response = server.client.simulate_post("/internal/executors", json={**BEAT, "tasks": [], "leaving": True})

    assert response.status_code == 200
    assert server.gateway.posted == [
        ("dispatcher:example", ExecutorHeartbeat("example", EXECUTOR, 4, False, (), leaving=True))]


def test_a_heartbeats_tier_reaches_its_dispatcher_and_one_without_is_tier_1(server):
    server.client.simulate_post("/internal/executors", json={**BEAT, "tier": 2})
    server.client.simulate_post("/internal/executors", json=BEAT)

    assert [message.tier for _, message in server.gateway.posted] == [2, 1]


# --- GET/HEAD /download/{id}, GET /jobs/{id}, POST /jobs/{id}/cancel, by the job's state --------

WAITING_STATES = [JobState.QUEUED, JobState.DISPATCHING, JobState.SUBMITTED, JobState.RUNNING]
ENDED_STATES = [JobState.FAILED, JobState.CANCELLED, JobState.CLEANED]


@pytest.mark.parametrize("state", WAITING_STATES)
def test_download_is_202_with_the_state_while_a_job_waits_or_runs(server, state):
    _, job_id = job_in(state, server.config)

    got = server.client.simulate_get(f"/download/{job_id}")
    head = server.client.simulate_head(f"/download/{job_id}")

    assert got.status_code == head.status_code == 202
    assert got.json == {"id": job_id, "status": state.value} and head.content == b""


def test_download_of_a_completed_job_is_200_with_its_zip_and_head_gives_its_size_without_it(server):
    number, job_id = job_in(JobState.COMPLETED, server.config)
    with open(server.config.result_file(number), "rb") as handle:
        stored = handle.read()

    got = server.client.simulate_get(f"/download/{job_id}")
    head = server.client.simulate_head(f"/download/{job_id}")

    assert got.status_code == head.status_code == 200
    assert got.content == stored and head.content == b""
    for response in (got, head):
        assert response.headers["Content-Type"] == "application/zip"
        assert int(response.headers["Content-Length"]) == len(stored)
        assert f'filename="job-{job_id}.zip"' in response.headers["Content-Disposition"]


@pytest.mark.parametrize("state", ENDED_STATES)
def test_download_is_204_when_a_job_failed_was_cancelled_or_was_cleaned(server, state):
    _, job_id = job_in(state, server.config)

    for response in (server.client.simulate_get(f"/download/{job_id}"),
                     server.client.simulate_head(f"/download/{job_id}")):
        assert response.status_code == 204 and response.content == b""


def test_download_of_a_completed_job_whose_zip_is_gone_is_204_not_an_error(server):
    number, job_id = job_in(JobState.COMPLETED, server.config)
    os.remove(server.config.result_file(number))

    assert server.client.simulate_get(f"/download/{job_id}").status_code == 204


@pytest.mark.parametrize("method, path", [("GET", "/download/{}"), ("HEAD", "/download/{}"), ("GET", "/jobs/{}"),
                                          ("POST", "/jobs/{}/cancel"), ("POST", "/terminate/{}"),
                                          ("GET", "/jobs/{}/log"), ("GET", "/jobs/{}/files/run.sh"),
                                          ("GET", "/download_partial/{}")])
def test_an_unknown_job_is_404_and_a_malformed_id_400_on_every_job_call(server, method, path):
    unknown = server.client.simulate_request(method, path.format(10**18))
    assert unknown.status_code == 404
    if method != "HEAD":
        assert unknown.json == {"title": "Unknown job", "description": f"there is no job {10**18}."}
    for malformed in ("abc", "0", "-1", "1e3", str(2**63)):
        response = server.client.simulate_request(method, path.format(malformed))
        assert response.status_code == 400, (malformed, response.text)
        if method != "HEAD":
            assert "job id must be a positive integer" in response.json["description"]
    assert server.gateway.sent == []


def test_the_job_view_says_the_state_times_attempts_executor_and_for_a_failure_why(server):
    _, job_id = job_in(JobState.FAILED, server.config)

    view = server.client.simulate_get(f"/jobs/{job_id}").json

    assert view["id"] == job_id and view["status"] == view["outcome"] == "Failed"
    assert view["attempts"] == 1 and view["executor"] == EXECUTOR and view["exit_code"] == 3
    assert view["reason"] == "run.sh exited with 3" and view["stderr_tail"] == "no input.pdb"
    assert all(view[stamp].endswith("Z") for stamp in ("created_at", "dispatched_at", "started_at", "finished_at"))
    assert view["cleaned_at"] is None


@pytest.mark.parametrize("state", WAITING_STATES)
def test_cancel_ends_a_job_that_has_not_ended_and_tells_its_services_dispatcher(server, state):
    number, job_id = job_in(state, server.config)

    response = server.client.simulate_post(f"/jobs/{job_id}/cancel")

    assert response.status_code == 200, response.text
    assert response.json["status"] == "Cancelled" and response.json["reason"] == "cancelled on request"
    assert rows() == [(number, "Cancelled")]
    assert server.gateway.posted == [("dispatcher:example", CancelJob(number))]
    assert server.client.simulate_head(f"/download/{job_id}").status_code == 204


@pytest.mark.parametrize("state", [JobState.COMPLETED, *ENDED_STATES])
def test_cancel_of_an_ended_job_is_409_naming_its_state_and_changes_nothing(server, state):
    number, job_id = job_in(state, server.config)
    before = server.client.simulate_get(f"/jobs/{job_id}").json

    response = server.client.simulate_post(f"/jobs/{job_id}/cancel")

    assert_refused(response, 409, f"job {job_id} is {state.value}; only a job that has not ended can be cancelled")
    assert server.client.simulate_get(f"/jobs/{job_id}").json == before
    assert server.gateway.sent == []


# --- who may call what --------------------------------------------------------------------------

PORTAL_CALLS = [("GET", "/jobs/1"), ("GET", "/download/1"), ("HEAD", "/download/1"), ("POST", "/jobs/1/cancel"),
                ("POST", "/upload")]


@pytest.mark.parametrize("method, path", PORTAL_CALLS + [("GET", "/executors")])
@pytest.mark.parametrize("headers", [{}, bearer("wrong-token-wrong-token"), {"Authorization": HADDOCK},
                                     {"Authorization": f"Basic {HADDOCK}"}],
                         ids=["none", "wrong", "no-scheme", "basic"])
def test_with_portal_tokens_a_call_without_a_valid_token_is_401_with_a_bearer_challenge(guarded, method, path,
                                                                                         headers):
    response = guarded.client.simulate_request(method, path, headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert rows() == [] and guarded.leftovers() == [] and guarded.gateway.sent == []


@pytest.mark.parametrize("method, path", PORTAL_CALLS)
def test_the_cluster_secret_is_no_portal_token(guarded, method, path):
    assert guarded.client.simulate_request(method, path, headers=bearer(SECRET)).status_code == 401


@pytest.mark.parametrize("path", ["/", "/health", "/api-docs/openapi.json", "/swagger-ui/"])
def test_ping_health_and_the_api_description_need_no_token(guarded, path):
    assert guarded.client.simulate_get(path).status_code == 200


def test_an_upload_with_a_portal_token_is_named_by_a_public_id_and_queued_for_that_portal(guarded):
    response = guarded.upload(token=HADDOCK)

    assert response.status_code == 200, response.text
    public = response.json["id"]
    assert isinstance(public, str) and len(public) == 25 and public.startswith("j")
    ((number, _),) = rows()
    assert guarded.gateway.posted == [("queue", JobQueued(number, "example", 1, "haddock", 0, None, ANY))]
    assert guarded.client.simulate_get(f"/jobs/{public}", headers=bearer(HADDOCK)).json["id"] == public
    # Quotas count each portal's users apart: user 1 of the other portal has a queue of its own.
    assert [guarded.upload(token=HADDOCK).status_code for _ in range(2)] == [200, 429]
    assert guarded.upload(token=PRODIGY).status_code == 200


def test_with_portal_tokens_job_ids_are_random_public_ids_and_every_answer_names_the_job_by_it(guarded):
    tokens = [HADDOCK, PRODIGY, PRODIGY, PRODIGY, PRODIGY, PRODIGY, HADDOCK]
    ids = [guarded.upload({"user_id": str(n), "service": "example"}, token=token).json["id"]
           for n, token in enumerate(tokens, 1)]

    # Random, not a sequence: the ids tell a portal nothing of how many jobs the others uploaded.
    assert all(isinstance(job_id, str) and re.fullmatch("j[a-z2-7]{24}", job_id) for job_id in ids), ids
    assert len(set(ids)) == 7
    first = ids[0]
    assert guarded.client.simulate_get(f"/jobs/{first}", headers=bearer(HADDOCK)).json["id"] == first
    assert guarded.client.simulate_get(f"/download/{first}", headers=bearer(HADDOCK)).json == {
        "id": first, "status": "Queued"}
    assert guarded.client.simulate_post(f"/jobs/{first}/cancel", headers=bearer(HADDOCK)).json["id"] == first


@pytest.mark.parametrize("method, path", [("GET", "/jobs/{}"), ("GET", "/download/{}"), ("HEAD", "/download/{}"),
                                          ("POST", "/jobs/{}/cancel"), ("POST", "/terminate/{}"),
                                          ("GET", "/jobs/{}/log"), ("GET", "/jobs/{}/files/run.sh"),
                                          ("GET", "/download_partial/{}")])
def test_a_portal_cannot_see_download_or_cancel_another_portals_job_it_is_unknown_to_it(guarded, method, path):
    number, theirs = job_in(JobState.QUEUED, guarded.config, portal="haddock")
    missing = "j" + "a" * 24

    for job_id in (theirs, number, missing):  # the other portal's public id, its number, an id nobody has
        response = guarded.client.simulate_request(method, path.format(job_id), headers=bearer(PRODIGY))
        assert response.status_code == 404, job_id
        if method != "HEAD":
            assert response.json == {"title": "Unknown job", "description": f"there is no job {job_id}."}
    assert rows() == [(number, "Queued")] and guarded.gateway.sent == []
    # Its own portal names it by its public id only: the number names no job of a portal.
    assert guarded.client.simulate_request(method, path.format(theirs), headers=bearer(HADDOCK)).status_code != 404
    assert guarded.client.simulate_request(method, path.format(number), headers=bearer(HADDOCK)).status_code == 404


@pytest.mark.parametrize("malformed", ["abc", "j" + "a" * 23, "J" + "A" * 24, "j" + "1" * 24, "0", "-1"])
def test_with_portal_tokens_a_malformed_job_id_is_400_saying_what_an_id_looks_like(guarded, malformed):
    response = guarded.client.simulate_get(f"/jobs/{malformed}", headers=bearer(HADDOCK))

    assert_refused(response, 400, "'j' followed by 24 characters from a-z and 2-7")


@pytest.mark.parametrize("path, body", [("/internal/events", FINISHED), ("/internal/executors", BEAT)])
@pytest.mark.parametrize("headers", [{}, bearer(HADDOCK), bearer("wrong-secret-wrong-secret")],
                         ids=["none", "portal", "wrong"])
def test_executor_calls_without_the_cluster_secret_are_401_and_reach_no_actor(guarded, path, body, headers):
    response = guarded.client.simulate_post(path, json=body, headers=headers)

    assert_refused(response, 401, "executor calls need the cluster secret as a bearer token")
    assert guarded.gateway.sent == []


def test_executor_calls_with_the_cluster_secret_are_read_and_told(guarded):
    for path, body in (("/internal/events", FINISHED), ("/internal/executors", BEAT)):
        assert guarded.client.simulate_post(path, json=body, headers=bearer(SECRET)).status_code in (200, 202)
        assert guarded.client.simulate_post(path, json={}, headers=bearer(SECRET)).status_code == 400
    assert [role for role, _ in guarded.gateway.posted] == ["retriever", "dispatcher:example"]


def test_with_portal_tokens_the_executors_are_an_operator_view_for_the_cluster_secret_only(guarded):
    for token in (HADDOCK, PRODIGY):
        refused = guarded.client.simulate_get("/executors", headers=bearer(token))
        assert_refused(refused, 403, "a portal token does not open it")
        assert refused.json["title"] == "Operators only"
    assert guarded.client.simulate_get("/executors", headers=bearer(SECRET)).json == {"executors": []}


def test_health_shows_the_actor_processes_only_to_the_cluster_secret(guarded):
    for headers in ({}, bearer(HADDOCK), bearer("wrong-secret-wrong-secret")):
        health = guarded.client.simulate_get("/health", headers=headers)
        assert health.status_code == 200 and health.json == {"status": "ok", "database": "ok", "actors": "ok"}
    operator = guarded.client.simulate_get("/health", headers=bearer(SECRET)).json
    assert operator["actor_processes"] == {"supervisor": 1}


def test_health_is_503_with_retry_after_when_the_actors_do_not_answer_or_are_being_rebuilt(server):
    server.gateway.answering = False
    gone = server.client.simulate_get("/health")
    server.gateway.closed = "the actor system lost its admin"
    rebuilding = server.client.simulate_get("/health")

    assert gone.status_code == rebuilding.status_code == 503
    assert int(gone.headers["Retry-After"]) > 0 and int(rebuilding.headers["Retry-After"]) > 0
    assert gone.json["actors"] == "unavailable" and gone.json["reason"] == "the actors do not answer"
    assert rebuilding.json == {"status": "restarting", "database": "unknown", "actors": "restarting",
                               "reason": "the actor system lost its admin"}


@pytest.mark.parametrize("remote", ["127.0.0.1", "203.0.113.9"])
def test_without_tokens_or_secret_every_call_is_answered_without_a_token_as_the_loader_binds_it_to_loopback(
        server, remote):
    # NOTE: the app does not look at the caller's address: such a server refuses to start on any
    # host but loopback (conf.settings.load_server_config), which keeps strangers out. Only the
    # operator views do (web.auth: with no token at all, the callers on loopback are the operators).
    job_id = server.upload().json["id"]
    for method, path, body in (("GET", f"/jobs/{job_id}", None), ("HEAD", f"/download/{job_id}", None),
                               ("POST", "/internal/executors", BEAT)):
        response = server.client.simulate_request(method, path, json=body, remote_addr=remote)
        assert response.status_code in (200, 202), (path, response.text)
    assert "actor_processes" in server.client.simulate_get("/health", remote_addr=remote).json
    operator_view = server.client.simulate_get("/executors", remote_addr=remote).status_code
    assert operator_view == (200 if remote == "127.0.0.1" else 401)


# --- the API's own description --------------------------------------------------------------------

def test_the_openapi_document_describes_every_route_and_the_security_schemes(guarded):
    spec = guarded.client.simulate_get("/api-docs/openapi.json").json

    assert spec["openapi"] == "3.1.0"
    assert set(spec["paths"]) == {"/", "/health", "/upload", "/download/{job_id}", "/jobs", "/jobs/{job_id}",
                                  "/jobs/{job_id}/cancel", "/executors", "/metrics", "/services", "/status", "/internal/events",
                                  "/internal/executors", "/terminate/{job_id}", "/jobs/{job_id}/log",
                                  "/jobs/{job_id}/files/{name}", "/download_partial/{job_id}",
                                  "/events", "/jobs/{job_id}/webhooks"}
    assert set(spec["components"]["securitySchemes"]) == {"portalToken", "clusterSecret", "operatorToken"}
    assert spec["security"] == [{"portalToken": []}]
    assert spec["paths"]["/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"][
        "properties"]["service"]["enum"] == ["example", "prodigy"]



def test_the_document_groups_the_portal_api_apart_from_operator_views_and_executor_calls(guarded):
    spec = guarded.client.simulate_get("/api-docs/openapi.json").json
    tag_of = {(path, method): operation["tags"] for path, item in spec["paths"].items()
              for method, operation in item.items() if isinstance(operation, dict) and "responses" in operation}

    assert [tag["name"] for tag in spec["tags"]] == ["portal", "operator", "node", "executor (internal)"]
    assert all(len(tags) == 1 for tags in tag_of.values())
    assert {path for (path, _), tags in tag_of.items() if tags == ["executor (internal)"]} == {
        "/internal/events", "/internal/executors"}
    assert {path for (path, _), tags in tag_of.items() if tags == ["operator"]} == {"/executors", "/metrics", "/status"}
    assert tag_of[("/jobs", "get")] == tag_of[("/events", "get")] == tag_of[("/upload", "post")] == ["portal"]

def test_swagger_ui_is_served_from_local_files_with_no_cdn(guarded):
    page = guarded.client.simulate_get("/swagger-ui/")
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text
    initializer = guarded.client.simulate_get("/swagger-ui/swagger-initializer.js").text
    assert '"/api-docs/openapi.json"' in initializer and "https://" not in initializer
    for asset in ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css", "index.css"):
        assert guarded.client.simulate_get(f"/swagger-ui/{asset}").status_code == 200, asset


# --- the events of the web layer: rejected, queued, running, cancelled -------------------------

def test_an_accepted_upload_is_one_queued_event_with_its_files_and_bytes(server):
    with events_heard() as heard:
        response = server.upload(files=[RUN, ("input.pdb", b"x" * 100)])

    assert response.status_code == 200
    assert heard == [("queued", {"job": rows()[0][0], "user": 1, "portal": None, "service": "example", "files": 2,
                                 "bytes": len(RUN[1]) + 100, "priority": None, "group": None})]


@pytest.mark.parametrize("fields,files,status,reason,service", [
    ({"user_id": "1", "service": "nosuch"}, [RUN], 400, "unknown_service", None),
    ({"user_id": "x", "service": "example"}, [RUN], 400, "bad_request", None),
    (GOOD, [RUN, ("a", b""), ("b", b""), ("c", b"")], 413, "too_large", None),
])
def test_a_refused_upload_is_one_rejected_event_with_a_reason_and_its_status(server, fields, files, status, reason,
                                                                              service):
    with events_heard() as heard:
        assert server.upload(fields, files).status_code == status
    assert heard == [("rejected", {"service": service, "status": status, "reason": reason})]


def test_a_full_queue_and_a_stopping_server_are_rejected_events_too(server):
    server.upload(), server.upload()
    with events_heard() as heard:
        assert server.upload().status_code == 429
        server.stopping.set()
        assert server.upload().status_code == 503
    assert heard == [("rejected", {"service": "example", "status": 429, "reason": "queue_full"}),
                     ("rejected", {"service": None, "status": 503, "reason": "unavailable"})]


def test_a_started_report_is_one_running_event_and_a_cancel_one_cancelled_event(server):
    number, api_id = job_in(JobState.SUBMITTED, server.config)
    with events_heard() as heard:
        server.client.simulate_post("/internal/events", json={"event": "started", "job_id": number, "attempt": 1})
        server.client.simulate_post("/internal/events", json={"event": "started", "job_id": number, "attempt": 1})
        assert server.client.simulate_post(f"/jobs/{api_id}/cancel").status_code == 200

    assert [name for name, _ in heard] == ["running", "cancelled"]
    assert heard[0][1] == {"job": number, "service": "example", "executor": EXECUTOR, "attempt": 1}
    assert heard[1][1]["reason"] == "cancelled on request" and heard[1][1]["run_seconds"] is not None
