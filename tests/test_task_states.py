"""The executor node's task table: the transitions table and its one changer (storage/node/states.py),
and the operations on the table that rely on it (storage/node/tasks.py) on a temp SQLite file (the
conftest's `clean_node_database`): an end reported twice keeps the first, only an ended task is
cleaned, which tasks are past retention, and what the node counts as holding a slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from storage.node import tasks
from storage.node.states import ENDED, TRANSITIONS, WAITING, InvalidTaskMove, TaskState, can_move, move

NOW = datetime(2024, 5, 1, 9, 30)
LATER = NOW + timedelta(minutes=5)
A, R, K = TaskState.ACCEPTED, TaskState.RUNNING, TaskState.CLEANED
ALL_PAIRS = [(a, b) for a in TaskState for b in TaskState]


def pair_id(pair) -> str:
    return f"{pair[0].value}->{pair[1].value}"


@dataclass
class FakeTask:
    """Exactly the attributes `move` reads and writes."""

    id: int = 3
    state: str = TaskState.ACCEPTED.value


# --- the table -----------------------------------------------------------------------------------

def test_the_table_is_exactly_the_task_life_cycle():
    # An accepted task may start or end (its script could not start, the server stopped counting it,
    # the node stopped); a running one may only end; an ended one may only be cleaned.
    expected = {(A, R)} | {(A, end) for end in ENDED} | {(R, end) for end in ENDED} | {(end, K) for end in ENDED}
    assert {(a, b) for a, b in ALL_PAIRS if can_move(a, b)} == expected
    assert set(TRANSITIONS) == set(TaskState)
    assert ENDED == {TaskState.FINISHED, TaskState.CANCELLED, TaskState.LOST, TaskState.KILLED}
    assert WAITING == {A, R}


@pytest.mark.parametrize("pair", [p for p in ALL_PAIRS if can_move(*p)], ids=pair_id)
def test_an_allowed_move_is_stored_by_its_value(pair):
    task = FakeTask(state=pair[0].value)
    move(task, pair[1])
    assert task.state == pair[1].value and type(task.state) is str


@pytest.mark.parametrize("pair", [p for p in ALL_PAIRS if not can_move(*p)], ids=pair_id)
def test_every_other_move_is_refused_and_leaves_the_task_alone(pair):
    task = FakeTask(state=pair[0].value)
    with pytest.raises(InvalidTaskMove, match=f"task 3: {pair[0].value} -> {pair[1].value} is not allowed"):
        move(task, pair[1])
    assert task.state == pair[0].value


# --- the table in the database -------------------------------------------------------------------

def new_task(n: int = 1) -> int:
    return int(tasks.create(n, f"job-{n}", 1, "http://server/cb", f"/tasks/{n}", NOW)["id"])


def running_task(n: int = 1) -> int:
    task_id = new_task(n)
    tasks.mark_running(task_id, 4242, 99, NOW)
    return task_id


def ended_task(n: int, finished: datetime, reported: bool = True, state: TaskState = TaskState.FINISHED) -> int:
    task_id = running_task(n)
    assert tasks.mark_ended(task_id, state, finished, exit_code=0)
    if reported:
        tasks.mark_reported([task_id])
    return task_id


def test_an_end_reported_twice_keeps_the_first(clean_node_database):
    task_id = running_task()
    assert tasks.mark_ended(task_id, TaskState.FINISHED, NOW, exit_code=3, stderr_tail="boom", reason="over memory")

    # e.g. the node's check for vanished processes, after the backend's own report
    assert tasks.mark_ended(task_id, TaskState.LOST, LATER, reason="the node stopped") is False

    found = tasks.find(task_id)
    assert (found["state"], found["exit_code"], found["stderr_tail"], found["reason"]) == (
        "finished", 3, "boom", "over memory")
    assert found["finished_at"] == NOW.isoformat() + "Z"


def test_a_task_killed_before_it_started_ends_and_needs_no_report(clean_node_database):
    task_id = new_task()

    assert tasks.mark_ended(task_id, TaskState.KILLED, NOW)

    assert tasks.find(task_id)["state"] == "killed"
    assert tasks.unreported() == []  # the server asked for it: there is nothing to tell


def test_an_ended_task_is_never_started_again(clean_node_database):
    task_id = ended_task(1, NOW)
    with pytest.raises(InvalidTaskMove):
        tasks.mark_running(task_id, 4243, 100, LATER)
    assert tasks.find(task_id)["state"] == "finished"


def test_a_waiting_or_running_task_is_not_cleaned(clean_node_database):
    waiting, run = new_task(1), running_task(2)

    assert tasks.mark_cleaned(waiting) is False
    assert tasks.mark_cleaned(run) is False
    assert tasks.mark_cleaned(999_999) is False

    assert (tasks.find(waiting)["state"], tasks.find(run)["state"]) == ("accepted", "running")


def test_cleaning_an_ended_task_is_idempotent(clean_node_database):
    task_id = ended_task(1, NOW)

    assert tasks.mark_cleaned(task_id) is True
    assert tasks.mark_cleaned(task_id) is True  # a second sweep, or the server's DELETE after the sweep

    assert tasks.find(task_id)["state"] == "cleaned"


def test_only_reported_ended_tasks_past_the_cutoff_are_expired(clean_node_database):
    cutoff = NOW
    old = ended_task(1, NOW - timedelta(hours=2))
    old_lost = ended_task(2, NOW - timedelta(hours=2), state=TaskState.LOST)
    unheard = ended_task(3, NOW - timedelta(hours=2), reported=False)  # the server does not know its end yet
    recent = ended_task(4, NOW + timedelta(seconds=1))
    at_cutoff = ended_task(5, NOW)
    cleaned = ended_task(6, NOW - timedelta(hours=2))
    tasks.mark_cleaned(cleaned)
    running_task(7)
    new_task(8)

    found = tasks.expired(cutoff)

    assert sorted(found) == [(old, "/tasks/1"), (old_lost, "/tasks/2")]
    assert not {unheard, recent, at_cutoff, cleaned} & {task_id for task_id, _ in found}
    assert len(tasks.expired(cutoff, limit=1)) == 1


def test_only_accepted_and_running_tasks_count_as_holding_or_waiting_for_a_slot(clean_node_database):
    waiting = new_task(1)
    run = running_task(2)
    ended_task(3, NOW)
    ended_task(4, NOW, state=TaskState.CANCELLED)
    killed = new_task(5)
    tasks.mark_ended(killed, TaskState.KILLED, NOW)

    assert tasks.counts() == {"accepted": 1, "running": 1}
    assert set(tasks.held()) == {(str(waiting), 1, 1), (str(run), 2, 1)}
