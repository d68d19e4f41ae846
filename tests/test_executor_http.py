"""An executor node's HTTP layer in process: `web.executor_app.create_app` under falcon.testing, with a
stand-in actor gateway and the node's temp SQLite task table.

Covers the submit's checks (what a refusal says, that it stores and tells nothing), an accepted and
a repeated submit, a draining or unhealthy node, every answer of retrieve by the task's state, the
task view, delete and kill, the attempt lookup, /health, and that only the cluster secret opens the
node. No process is started.
"""
from __future__ import annotations

import io
import os
import threading
import zipfile
from dataclasses import dataclass

import falcon.testing
import pytest
from pony.orm import db_session, select

from actors.messages import KillTask, RunTask
from conf.settings import ClientConfig
from storage.clock import utcnow
from storage.node import tasks
from storage.node.models import Task
from storage.node.states import TaskState
from tests.harness import StandInGateway, bearer, multipart, script
from web.executor_app import create_app

RUN = ("run.sh", script("echo hi > out.txt"))
SECRET = "cluster-secret-0123456789abcdef"
BUNDLE = {"job_id": "5", "job_uid": "0f3a-uid", "attempt": "1", "callback_url": "http://127.0.0.1:5000/"}


@dataclass
class Node:
    client: falcon.testing.TestClient
    gateway: StandInGateway
    config: ClientConfig
    stopping: threading.Event
    #: What the stand-in backend says is wrong (None: it can take work).
    problem: list

    def submit(self, fields=BUNDLE, files=(RUN,), token: str | None = None) -> falcon.testing.Result:
        body, headers = multipart(fields, list(files))
        return self.client.simulate_post("/submit", body=body, headers={**headers, **bearer(token)})

    def leftovers(self) -> list[str]:
        return [f"{os.path.basename(folder)}/{name}" for folder in (self.config.tasks_path, self.config.incoming_path)
                if os.path.isdir(folder) for name in os.listdir(folder)]


def make_node(tmp_path, **settings) -> Node:
    config = ClientConfig(data_dir=str(tmp_path / "node"), max_upload_mb=1, **settings)
    os.makedirs(config.tasks_path)  # as run_client.py makes it
    gateway, stopping, problem = StandInGateway(), threading.Event(), [None]
    app = create_app(config, gateway, stopping, lambda: problem[0])
    return Node(falcon.testing.TestClient(app), gateway, config, stopping, problem)


@pytest.fixture
def node(tmp_path, clean_node_database) -> Node:
    return make_node(tmp_path)


@db_session
def task_rows() -> list[tuple[int, str]]:
    return list(select((t.id, t.state) for t in Task).order_by(1))


def task_in(state: TaskState, node: Node, attempt: int = 1) -> int:
    """A task brought to `state` as the ExecutorActor brings it there, its folder holding out.txt;
    returns its id."""
    now = utcnow()
    folder = os.path.join(node.config.tasks_path, f"task-{attempt}")
    os.makedirs(folder)
    with open(os.path.join(folder, "out.txt"), "w") as handle:
        handle.write("hi\n")
    task_id = int(tasks.create(5, "0f3a-uid", attempt, None, folder, now)["id"])
    if state is not TaskState.ACCEPTED:
        tasks.mark_running(task_id, 4242, None, now)
    if state in (TaskState.FINISHED, TaskState.LOST, TaskState.KILLED, TaskState.CANCELLED):
        tasks.mark_ended(task_id, state, now, exit_code=0 if state is TaskState.FINISHED else None)
    if state is TaskState.CLEANED:
        tasks.mark_ended(task_id, TaskState.FINISHED, now, exit_code=0)
        tasks.mark_cleaned(task_id)
    assert tasks.find(task_id)["state"] == state.value
    return task_id


@db_session
def retrieved_at(task_id: int):
    return Task[task_id].retrieved_at


def assert_refused(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert words in response.json["description"], response.json


# --- POST /submit ------------------------------------------------------------------------------

def without(key: str) -> dict:
    return {name: value for name, value in BUNDLE.items() if name != key}


@pytest.mark.parametrize("fields, files, words", [
    (without("job_id"), [RUN], "job_id is missing; send it as a positive integer"),
    ({**BUNDLE, "job_id": "abc"}, [RUN], "job_id must be a positive integer below 2^63, got 'abc'"),
    ({**BUNDLE, "job_id": "0"}, [RUN], "job_id must be a positive integer"),
    (without("attempt"), [RUN], "attempt is missing; send it as a positive integer"),
    ({**BUNDLE, "attempt": "0"}, [RUN], "attempt must be a positive integer"),
    ({**BUNDLE, "attempt": str(2**31)}, [RUN], "attempt must be a positive integer"),
    (without("job_uid"), [RUN], "job_uid must be 1 to 64 letters, digits or '-'"),
    ({**BUNDLE, "job_uid": "../etc"}, [RUN], "job_uid must be 1 to 64 letters, digits or '-'"),
    ({**BUNDLE, "job_uid": "a" * 65}, [RUN], "job_uid must be 1 to 64 letters"),
    ({**BUNDLE, "user_id": "1"}, [RUN], "field 'user_id' is not accepted; send attempt, callback_url, job_id, job_uid"),
    (BUNDLE, [], "no files were sent; a job needs at least run.sh"),
    (BUNDLE, [("input.pdb", b"ATOM")], "do not include run.sh"),
    (BUNDLE, [RUN, ("..", b"x")], "has no usable base name"),
    (BUNDLE, [RUN, ("run.sh", b"x")], "every file name must be unique"),
])
def test_a_bad_bundle_is_400_saying_what_was_wrong_and_stores_and_tells_nothing(node, fields, files, words):
    response = node.submit(fields, files)

    assert_refused(response, 400, words)
    assert task_rows() == [] and node.leftovers() == [] and node.gateway.sent == []


@pytest.mark.parametrize("headers, body, status, words", [
    ({"Content-Type": "application/json"}, b"{}", 415, "multipart/form-data"),
    ({"Content-Type": "multipart/form-data; boundary=b"}, b"--b\r\n" + b"x" * (1 << 20), 413,
     f"at most {1 << 20} bytes are accepted"),
])
def test_a_submit_that_is_not_multipart_or_too_large_is_refused_before_its_body_is_read(node, headers, body,
                                                                                       status, words):
    assert_refused(node.client.simulate_post("/submit", body=body, headers=headers), status, words)
    assert task_rows() == [] and node.leftovers() == [] and node.gateway.sent == []


def test_an_accepted_bundle_is_an_accepted_task_a_folder_of_its_files_and_a_runtask(node):
    response = node.submit(files=[RUN, ("input.pdb", b"ATOM")])

    assert response.status_code == 200, response.text
    task = response.json
    assert task["state"] == "accepted" and task["job_id"] == 5 and task["attempt"] == 1
    stored = tasks.find(int(task["id"]))
    assert stored["job_uid"] == "0f3a-uid" and stored["callback_url"] == "http://127.0.0.1:5000"
    assert sorted(os.listdir(stored["dir"])) == ["input.pdb", "run.sh"]
    assert os.path.dirname(stored["dir"]) == node.config.tasks_path and os.listdir(node.config.incoming_path) == []
    assert node.gateway.sent == [RunTask(int(task["id"]))]


def test_a_repeated_submit_of_one_attempt_answers_the_task_it_has_and_stores_nothing_more(node):
    first = node.submit().json

    again = node.submit(files=[("run.sh", b"something else")])

    assert again.status_code == 200 and again.json == first
    assert len(task_rows()) == 1 and len(os.listdir(node.config.tasks_path)) == 1
    assert os.listdir(node.config.incoming_path) == []
    assert node.gateway.sent == [RunTask(int(first["id"]))]
    # The next attempt of the same job is a task of its own.
    assert node.submit({**BUNDLE, "attempt": "2"}).json["id"] != first["id"]


def test_a_draining_node_takes_no_new_bundle_but_still_answers_a_repeated_one(node):
    first = node.submit().json
    node.stopping.set()

    refused = node.submit({**BUNDLE, "attempt": "2"})

    assert_refused(refused, 503, "this executor is draining and takes no new jobs")
    assert int(refused.headers["Retry-After"]) > 0
    assert node.submit().json == first
    assert len(task_rows()) == 1 and node.gateway.sent == [RunTask(int(first["id"]))]
    assert os.listdir(node.config.incoming_path) == []


def test_a_node_whose_backend_cannot_take_work_refuses_bundles_saying_why(node):
    node.problem[0] = "slurmctld does not answer"

    refused = node.submit()

    assert_refused(refused, 503, "this executor takes no new jobs: slurmctld does not answer")
    assert task_rows() == [] and node.leftovers() == []
    assert node.gateway.sent == []


# --- GET/HEAD /retrieve/{id} -------------------------------------------------------------------

@pytest.mark.parametrize("state", [TaskState.ACCEPTED, TaskState.RUNNING])
def test_retrieve_is_202_while_a_task_waits_or_runs(node, state):
    task_id = task_in(state, node)

    assert node.client.simulate_get(f"/retrieve/{task_id}").status_code == 202
    assert node.client.simulate_head(f"/retrieve/{task_id}").status_code == 202
    assert not os.path.exists(node.config.zip_file(task_id))


def test_retrieve_of_a_finished_task_is_200_with_the_zip_of_its_folder_and_only_a_get_counts_as_retrieved(node):
    task_id = task_in(TaskState.FINISHED, node)

    head = node.client.simulate_head(f"/retrieve/{task_id}")
    assert head.status_code == 200 and head.content == b""
    assert retrieved_at(task_id) is None
    got = node.client.simulate_get(f"/retrieve/{task_id}")

    assert got.status_code == 200 and got.headers["Content-Type"] == "application/zip"
    assert int(head.headers["Content-Length"]) == len(got.content)
    assert zipfile.ZipFile(io.BytesIO(got.content)).read("out.txt") == b"hi\n"
    assert retrieved_at(task_id) is not None


@pytest.mark.parametrize("state", [TaskState.LOST, TaskState.KILLED, TaskState.CANCELLED, TaskState.CLEANED])
def test_retrieve_is_204_for_a_task_that_will_never_have_results(node, state):
    task_id = task_in(state, node)

    assert node.client.simulate_get(f"/retrieve/{task_id}").status_code == 204


def test_a_zip_that_cannot_be_made_is_409_saying_so_and_made_at_the_next_ask_once_it_can(node):
    task_id = task_in(TaskState.FINISHED, node)
    with open(node.config.zips_path, "w") as blocker:  # a file where the zips go: any zip fails
        blocker.write("in the way")

    refused = node.client.simulate_get(f"/retrieve/{task_id}")

    assert_refused(refused, 409, "the task's folder could not be zipped")
    assert refused.json["title"] == "Results not zipped"
    os.remove(node.config.zips_path)
    assert node.client.simulate_get(f"/retrieve/{task_id}").status_code == 200


@pytest.mark.parametrize("method, path", [("GET", "/retrieve/{}"), ("GET", "/jobs/{}"), ("DELETE", "/jobs/{}"),
                                          ("POST", "/jobs/{}/kill")])
def test_an_unknown_task_is_404_and_a_malformed_id_400(node, method, path):
    assert_refused(node.client.simulate_request(method, path.format(2**31 - 1)), 404, f"there is no task {2**31 - 1}.")
    for malformed in ("abc", "0", "-1"):
        assert_refused(node.client.simulate_request(method, path.format(malformed)), 400,
                       f"task id must be a positive integer up to {2**31 - 1}, got '{malformed}'")
    assert node.gateway.sent == []


@pytest.mark.parametrize("path", ["/retrieve/{}", "/jobs/{}", "/attempts/0f3a-uid/{}"])
@pytest.mark.parametrize("number", [2**31, 10**18])
def test_a_number_larger_than_the_task_table_holds_is_400_not_an_internal_error(node, path, number):
    # The task table's id and attempt are 32-bit columns: the database layer raised on such a number.
    assert_refused(node.client.simulate_get(path.format(number)), 400, f"must be a positive integer up to {2**31 - 1}")


# --- the task: view, delete, kill; the attempt lookup --------------------------------------------

def test_the_task_view_says_its_state_and_keeps_its_folder_and_callback_to_the_node(node):
    task_id = task_in(TaskState.FINISHED, node)

    view = node.client.simulate_get(f"/jobs/{task_id}").json

    assert view["state"] == "finished" and view["job_id"] == 5 and view["exit_code"] == 0
    assert not {"dir", "callback_url", "job_uid"} & set(view)


@pytest.mark.parametrize("state", [TaskState.ACCEPTED, TaskState.RUNNING])
def test_delete_of_a_waiting_or_running_task_is_409_and_keeps_its_folder(node, state):
    task_id = task_in(state, node)

    assert_refused(node.client.simulate_delete(f"/jobs/{task_id}"), 409, "delete it once it ended")
    assert task_rows() == [(task_id, state.value)]
    assert os.path.isdir(tasks.find(task_id)["dir"])


def test_delete_of_an_ended_task_removes_its_folder_and_zip_and_is_idempotent(node):
    task_id = task_in(TaskState.FINISHED, node)
    assert node.client.simulate_get(f"/retrieve/{task_id}").status_code == 200  # its zip is made
    folder = tasks.find(task_id)["dir"]

    first = node.client.simulate_delete(f"/jobs/{task_id}")
    again = node.client.simulate_delete(f"/jobs/{task_id}")

    assert first.status_code == again.status_code == 200
    assert first.json == {"id": str(task_id), "state": "cleaned"}
    assert not os.path.exists(folder) and not os.path.exists(node.config.zip_file(task_id))
    assert node.client.simulate_get(f"/retrieve/{task_id}").status_code == 204


def test_kill_of_a_task_is_202_and_tells_the_executor_actor(node):
    task_id = task_in(TaskState.RUNNING, node)

    response = node.client.simulate_post(f"/jobs/{task_id}/kill")

    assert response.status_code == 202 and response.json == {"id": str(task_id), "kill": "requested"}
    assert node.gateway.sent == [KillTask(task_id)]


def test_the_attempt_lookup_finds_the_task_of_that_attempt_and_nothing_else(node):
    task_id = task_in(TaskState.RUNNING, node, attempt=2)

    assert node.client.simulate_get("/attempts/0f3a-uid/2").json["id"] == str(task_id)
    for path in ("/attempts/0f3a-uid/1", "/attempts/other-uid/2", "/attempts/bad_uid!/2"):
        assert_refused(node.client.simulate_get(path), 404, "no task holds that attempt")
    assert node.client.simulate_get("/attempts/0f3a-uid/x").status_code == 400


# --- GET /health ---------------------------------------------------------------------------------

def test_health_counts_the_slots_and_the_tasks_held(node):
    running = task_in(TaskState.RUNNING, node, attempt=1)
    waiting = task_in(TaskState.ACCEPTED, node, attempt=2)
    task_in(TaskState.FINISHED, node, attempt=3)

    health = node.client.simulate_get("/health")

    body = health.json
    assert health.status_code == 200
    assert sorted(body.pop("tasks")) == sorted([[str(running), 5, 1], [str(waiting), 5, 2]])
    assert body == {"status": "ok", "service": "example", "backend": "local", "tier": 1, "slots": 4, "free": 3,
                    "running": 1, "waiting": 1}


@pytest.mark.parametrize("condition, code, status", [
    ("draining", 200, "draining"), ("actor gone", 503, "unavailable"), ("backend down", 503, "unhealthy")])
def test_health_says_when_the_node_drains_has_lost_its_actor_or_cannot_reach_its_backend(node, condition, code,
                                                                                         status):
    if condition == "draining":
        node.stopping.set()
    elif condition == "actor gone":
        node.gateway.answering = False
    else:
        node.problem[0] = "squeue does not answer"

    health = node.client.simulate_get("/health")

    assert health.status_code == code and health.json["status"] == status
    assert health.json.get("reason") == ("squeue does not answer" if condition == "backend down" else None)


# --- only the server (the cluster secret) may call the node ----------------------------------------

NODE_CALLS = [("GET", "/health"), ("POST", "/submit"), ("GET", "/retrieve/1"), ("HEAD", "/retrieve/1"),
              ("GET", "/jobs/1"), ("DELETE", "/jobs/1"), ("POST", "/jobs/1/kill"), ("GET", "/attempts/a/1")]


@pytest.mark.parametrize("method, path", NODE_CALLS)
@pytest.mark.parametrize("headers", [{}, bearer("a-portal-token-0123456789"), {"Authorization": SECRET}],
                         ids=["none", "wrong", "no-scheme"])
def test_with_a_cluster_secret_every_call_but_ping_needs_it(tmp_path, clean_node_database, method, path, headers):
    node = make_node(tmp_path, cluster_secret=SECRET)
    task_in(TaskState.RUNNING, node)

    response = node.client.simulate_request(method, path, headers=headers)

    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(task_rows()) == 1 and node.gateway.sent == []


def test_with_the_cluster_secret_the_node_answers_and_ping_needs_nothing(tmp_path, clean_node_database):
    node = make_node(tmp_path, cluster_secret=SECRET)

    assert node.client.simulate_get("/").json == {"message": "pong"}
    assert node.client.simulate_get("/health", headers=bearer(SECRET)).status_code == 200
    assert node.submit(token=SECRET).status_code == 200
