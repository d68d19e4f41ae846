"""A job's whole life in the nodes' logs, on real processes: one line per event, in text and in
JSON (the actor processes' lines come out of the node's stderr in the same format), and nothing of
it at log_level = warning."""
from __future__ import annotations

import re

import pytest

from conf.logs import JOB_EVENTS, JSON_KEYS
from tests.harness import cancel, job, json_events, log_lines, script, submit, upload, wait_for_outcome, wait_until

#: About 2 s, so the janitor cleans the finished jobs while the test watches (it sweeps every second).
RETENTION_HOURS = 0.0005


def nodes(cluster, **logging):
    executor = cluster.executor("example", slots=2, **logging)
    server = cluster.server({"example": {"clients": executor.url, "retention_hours": RETENTION_HOURS}}, **logging)
    return server, executor


@pytest.fixture(scope="module")
def json_nodes(module_cluster):
    return nodes(module_cluster, log_format="json")


def of_job(entries: list[dict], job_id: int) -> list[dict]:
    return [entry for entry in entries if entry["event"] and entry["job"] == job_id]


def assert_life(names: list[str]) -> None:
    """A completed job's events, each once and in order.

    NOTE: `running` is written by the main process (the executor's report) and `dispatched` by the
    dispatcher's process through Thespian's logger, within milliseconds of each other: those two may
    change places. Every other event follows from the one before it."""
    assert sorted(names[2:4]) == ["dispatched", "running"], names
    assert names[:2] + names[4:] == ["queued", "admitted", "retrieved", "completed", "cleaned"], names


def wait_for_events(node, job_id: int, *names: str) -> list[dict]:
    """The node's events of `job_id` once all of `names` are among them."""
    wait_until(lambda: set(names) <= {e["event"] for e in of_job(json_events(node), job_id)}, 15, 0.05,
               f"events {names} of job {job_id} in the {node.kind}'s log")
    return of_job(json_events(node), job_id)


def test_a_completed_job_logs_each_event_once_in_order_with_its_fields_as_json_keys(json_nodes):
    server, executor = json_nodes
    job_id = submit(server, "echo done > out.txt", user_id=7)
    assert wait_for_outcome(server, job_id) == 200

    events = wait_for_events(server, job_id, "cleaned")
    assert_life([e["event"] for e in events])
    by_name = {e["event"]: e for e in events}
    for entry in json_events(server) + json_events(executor):
        assert list(entry)[:len(JSON_KEYS)] == list(JSON_KEYS)
    assert by_name["queued"]["user"] == 7 and by_name["queued"]["service"] == "example"
    assert by_name["queued"]["files"] == 1 and by_name["queued"]["bytes"] > 0
    assert by_name["queued"]["logger"] == "orchestrator.web" and by_name["queued"]["level"] == "INFO"
    assert (by_name["admitted"]["active"], by_name["admitted"]["runs_per_user"]) == (1, 5)
    assert by_name["admitted"]["logger"] == "orchestrator.quota"  # an actor process's line, fields intact
    for name in ("dispatched", "running", "retrieved", "completed"):
        assert by_name[name]["executor"] == executor.url, name
    assert by_name["dispatched"]["attempt"] == by_name["running"]["attempt"] == by_name["completed"]["attempt"] == 1
    assert by_name["retrieved"]["bytes"] > 0
    completed = by_name["completed"]
    assert completed["exit_code"] == 0 and completed["reason"] is None and completed["user"] == 7
    assert 0 <= completed["wait_seconds"] and 0 <= completed["run_seconds"]
    assert completed["turnaround_seconds"] >= completed["wait_seconds"] + completed["run_seconds"] - 0.002
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", completed["ts"])

    tasks = wait_for_events(executor, job_id, "task_finished")
    assert [e["event"] for e in tasks] == ["task_accepted", "task_started", "task_finished"]
    assert all(e["attempt"] == 1 for e in tasks) and tasks[-1]["exit_code"] == 0


def test_a_failed_job_logs_its_exit_code_and_reason(json_nodes):
    server, executor = json_nodes
    job_id = submit(server, "exit 3")
    assert wait_for_outcome(server, job_id) == 204

    failed = [e for e in wait_for_events(server, job_id, "failed") if e["event"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["exit_code"] == 3 and "code 3" in failed[0]["reason"] and failed[0]["run_seconds"] is not None
    finished = [e for e in wait_for_events(executor, job_id, "task_finished") if e["event"] == "task_finished"]
    assert finished[0]["exit_code"] == 3


def test_a_cancelled_job_logs_cancelled_once_and_its_executor_logs_the_kill(json_nodes):
    server, executor = json_nodes
    job_id = submit(server, "sleep 30")
    wait_until(lambda: job(server, job_id)["status"] == "Running", 15, 0.05, "the job to run")

    assert cancel(server, job_id).status_code == 200

    events = wait_for_events(server, job_id, "cancelled")
    cancelled = [e for e in events if e["event"] == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["reason"] == "cancelled on request"
    assert cancelled[0]["run_seconds"] is not None and cancelled[0]["executor"] == executor.url
    assert "task_killed" in {e["event"] for e in wait_for_events(executor, job_id, "task_killed")}
    assert not {"completed", "failed"} & {e["event"] for e in of_job(json_events(server), job_id)}


def test_a_refused_upload_logs_rejected_with_a_reason(json_nodes):
    server, _ = json_nodes
    response = upload(server, {"run.sh": script("true")}, service="nosuch")
    assert response.status_code == 400

    wait_until(lambda: any(e["event"] == "rejected" for e in json_events(server)), 5, 0.05, "a rejected event")
    rejected = [e for e in json_events(server) if e["event"] == "rejected"]
    assert rejected[-1]["reason"] == "unknown_service" and rejected[-1]["status"] == 400
    assert rejected[-1]["service"] is None


def text_events(node) -> list[tuple[str, str]]:
    """(event, its fields as text) of the node's job event lines, in the order they reached stderr."""
    found = []
    for line in log_lines(node):
        match = re.search(r" INFO \[\d+\] orchestrator\.\w+: (\w+) (.*)$", line)
        if match and match.group(1) in JOB_EVENTS:
            found.append((match.group(1), match.group(2)))
    return found


def test_as_text_a_job_is_one_line_per_event_with_its_fields(module_cluster):
    server, _ = nodes(module_cluster)
    job_id = submit(server, "echo text > out.txt", user_id=3)
    assert wait_for_outcome(server, job_id) == 200
    mine = lambda: [(name, fields) for name, fields in text_events(server) if f"job={job_id} " in fields + " "]
    wait_until(lambda: "cleaned" in [name for name, _ in mine()], 15, 0.05, "the job to be cleaned")

    assert_life([name for name, _ in mine()])
    fields = dict(mine())
    assert f"job={job_id} user=3 service=example files=1 bytes=" in fields["queued"]
    assert re.search(r"exit_code=0 wait_seconds=[\d.]+ run_seconds=[\d.]+ turnaround_seconds=[\d.]+$",
                     fields["completed"])


def test_at_log_level_warning_no_job_event_is_logged(module_cluster):
    server, executor = nodes(module_cluster, log_level="warning")
    job_id = submit(server, "echo quiet > out.txt")
    assert wait_for_outcome(server, job_id) == 200
    # NOTE: cleaned comes seconds after completed: by then the lines of its life would have been written.
    wait_until(lambda: job(server, job_id)["status"] == "Cleaned", 15, 0.05, "the job to be cleaned")

    for node in (server, executor):
        assert not [line for line in log_lines(node) if " INFO " in line or " DEBUG " in line], node.kind
