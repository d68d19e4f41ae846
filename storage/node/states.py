"""An executor node's task states, the table of allowed transitions, and the one function that
moves a task (as storage/states.py is for the server's jobs). Runs in the executor node's processes.

Every change of `Task.state` goes through `move`, so an ended task is never started or ended again,
and only an ended one is cleaned.
"""
from __future__ import annotations

from enum import Enum


class TaskState(str, Enum):
    ACCEPTED = "accepted"  #: stored, waiting for a free slot
    RUNNING = "running"    #: handed to the backend: bash run.sh runs (or, with Slurm, waits in its queue)
    FINISHED = "finished"  #: run.sh ended; exit_code holds its status
    CANCELLED = "cancelled"  #: cancelled outside the orchestrator (e.g. scancel of its Slurm job)
    LOST = "lost"          #: the node stopped while it ran; its outcome is unknown
    KILLED = "killed"      #: stopped because the server no longer counts its attempt
    CLEANED = "cleaned"    #: its folder was deleted


#: Waiting for or holding a slot.
WAITING = frozenset({TaskState.ACCEPTED, TaskState.RUNNING})
#: The ends a task can come to; each may only be cleaned after.
ENDED = frozenset({TaskState.FINISHED, TaskState.CANCELLED, TaskState.LOST, TaskState.KILLED})

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    # An accepted task can end before it ran: its script could not start (FINISHED 126), the server
    # stopped counting it (KILLED), or the node stopped (LOST).
    TaskState.ACCEPTED: frozenset({TaskState.RUNNING}) | ENDED,
    TaskState.RUNNING: ENDED,
    **{state: frozenset({TaskState.CLEANED}) for state in ENDED},
    TaskState.CLEANED: frozenset(),
}


class InvalidTaskMove(Exception):
    """A state change the transitions table does not allow."""

    def __init__(self, task_id: int, from_state: str, to_state: TaskState):
        super().__init__(f"task {task_id}: {from_state} -> {to_state.value} is not allowed")


def can_move(current: str | TaskState, new: TaskState) -> bool:
    return new in TRANSITIONS[TaskState(current)]


def move(task, new: TaskState) -> None:
    """Move `task` (a storage entity) to `new`.

    Raises:
        InvalidTaskMove: the table does not allow the move.
    """
    if not can_move(task.state, new):
        raise InvalidTaskMove(task.id, task.state, new)
    task.state = new.value
