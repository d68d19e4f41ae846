"""Operations on an executor node's task table, shared by its web layer and its ExecutorActor."""
from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime

from pony.orm import commit, db_session, flush, select

from storage.node.models import Task
from storage.node.states import ENDED, WAITING, TaskState, can_move, move


@db_session
def find(task_id: int) -> dict | None:
    task = Task.get(id=task_id)
    return task.to_dict() | {"dir": task.dir, "callback_url": task.callback_url, "job_uid": task.job_uid,
                             "tes_plan": task.tes_plan} if task else None


@db_session
def find_attempt(job_uid: str, attempt: int) -> dict | None:
    task = Task.get(job_uid=job_uid, attempt=attempt)
    return task.to_dict() if task else None


@db_session
def create(job_id: int, job_uid: str, attempt: int, callback_url: str | None, folder: str, now: datetime,
           max_runtime: int | None = None, tes_plan: str | None = None) -> dict:
    task = Task(job_id=job_id, job_uid=job_uid, attempt=attempt, callback_url=callback_url or None, dir=folder,
                created_at=now, max_runtime=max_runtime, tes_plan=tes_plan)
    flush()  # assigns the id; reading the row after commit would cost another query
    view = task.to_dict(new=True)
    commit()
    return view


@db_session
def counts() -> dict[str, int]:
    """How many tasks are in each state that uses or waits for a slot."""
    result = {state.value: 0 for state in WAITING}
    for state in select(t.state for t in Task if t.state in list(result)).without_distinct():
        result[state] += 1
    return result


@db_session
def ids_in(state: TaskState) -> list[int]:
    return list(select(t.id for t in Task if t.state == state.value).order_by(1))


@db_session
def mark_running(task_id: int, pid: int, pid_start: int | None, now: datetime) -> None:
    task = Task[task_id]
    move(task, TaskState.RUNNING)
    task.pid, task.pid_start, task.started_at = pid, pid_start, now


@db_session
def mark_submitted(task_id: int, slurm_id: str) -> None:
    """Slurm accepted the task: it holds a slot from now on, whether Slurm runs it yet or not."""
    task = Task[task_id]
    move(task, TaskState.RUNNING)
    task.slurm_id = slurm_id


@db_session
def mark_started(task_id: int, now: datetime) -> None:
    task = Task[task_id]
    if task.started_at is None:
        task.started_at = now


@db_session
def slurm_jobs() -> list[tuple[int, str, bool]]:
    """(task id, Slurm job id, seen running) of every task handed to Slurm that has not ended."""
    return list(select((t.id, t.slurm_id, t.started_at is not None) for t in Task
                       if t.state == TaskState.RUNNING.value and t.slurm_id is not None).order_by(1))


@db_session
def attempts_in(state: TaskState) -> list[tuple[int, str, int]]:
    """(task id, job uid, attempt) of every task in `state`."""
    return list(select((t.id, t.job_uid, t.attempt) for t in Task if t.state == state.value).order_by(1))


@db_session
def mark_ended(task_id: int, state: TaskState, now: datetime, exit_code: int | None = None,
               stderr_tail: str | None = None, reason: str | None = None) -> bool:
    """Record the task's end; False, and nothing changes, if it had ended already (the first end stands)."""
    task = Task[task_id]
    assert state in ENDED
    if not can_move(task.state, state):
        return False
    move(task, state)
    task.finished_at, task.exit_code, task.stderr_tail = now, exit_code, stderr_tail
    task.reason = reason
    task.pid = task.pid_start = None
    if state is TaskState.KILLED:
        task.reported = True  # the server asked for it; there is nothing to tell
    return True


@db_session
def find_many(task_ids: list[int]) -> dict[int, dict]:
    """`find` for each task that exists, in one transaction."""
    return {task_id: found for task_id in set(task_ids) if (found := find(task_id)) is not None}


def _fetched():
    """The finished tasks whose results the server fetches: run.sh exited 0 and went over no limit,
    or a GA4GH TES task (its row holds a plan) however it ended, whose logs the server fetches too."""
    return select(t for t in Task if t.state == TaskState.FINISHED.value
                  and (t.exit_code == 0 and t.reason is None or t.tes_plan is not None))


@db_session
def fetched_folders() -> list[tuple[int, str]]:
    """(task id, folder) of every finished task whose results the server fetches, oldest first."""
    return list(select((t.id, t.dir) for t in _fetched()).order_by(1))


@db_session
def fetched_folder(task_id: int) -> str | None:
    """The folder of the task if it finished and the server fetches its results, else None."""
    task = _fetched().filter(lambda t: t.id == task_id).first()
    return task.dir if task else None


@db_session
def mark_retrieved(task_id: int, now: datetime) -> None:
    task = Task.get(id=task_id)
    if task is not None and task.retrieved_at is None:
        task.retrieved_at = now


@db_session
def awaiting_retrieval(since: datetime) -> int:
    """Finished tasks whose results the server fetches (`_fetched`), that ended after `since` and have
    not been downloaded yet."""
    return _fetched().filter(lambda t: t.retrieved_at is None and t.finished_at > since).count()


@db_session
def mark_reported(task_ids: list[int]) -> None:
    for task_id in task_ids:
        Task[task_id].reported = True


@db_session
def unreported() -> list[int]:
    ended = [TaskState.FINISHED.value, TaskState.LOST.value, TaskState.CANCELLED.value]
    return list(select(t.id for t in Task if t.state in ended and not t.reported).order_by(1))


@db_session
def held() -> list[tuple[str, int, int]]:
    """(task id, job id, attempt) of every task waiting or running here."""
    waiting = [state.value for state in WAITING]
    return [(str(i), j, a) for i, j, a in select((t.id, t.job_id, t.attempt) for t in Task if t.state in waiting)]


@db_session
def running_pids() -> list[tuple[int, int | None, int | None]]:
    return list(select((t.id, t.pid, t.pid_start) for t in Task if t.state == TaskState.RUNNING.value))


@db_session
def expired(cutoff: datetime, limit: int = 500) -> list[tuple[int, str]]:
    """Ended tasks past retention whose outcome the server has heard (an unheard one is kept)."""
    ended = [state.value for state in ENDED]
    return list(select((t.id, t.dir) for t in Task if t.state in ended and t.reported
                       and t.finished_at < cutoff)[:limit])


@db_session
def mark_cleaned(task_id: int) -> bool:
    """Clean an ended task (again: cleaning is idempotent); False if it is still waiting or running."""
    task = Task.get(id=task_id)
    if task is None or TaskState(task.state) in WAITING:
        return False
    if task.state != TaskState.CLEANED.value:
        move(task, TaskState.CLEANED)
    return True


def remove_partial_zips(folder: str) -> None:
    """Remove the zips a stopped node was still writing (`*.part` in `folder`): none of them is whole."""
    try:
        names = os.listdir(folder)
    except OSError:
        return  # none yet
    for name in names:
        if name.endswith(".part"):
            os.remove(os.path.join(folder, name))


def remove_folder(folder: str) -> None:
    """Delete a task's folder, whatever its script left there.

    NOTE: `rm -rf`, not shutil.rmtree: a script may leave a tree thousands of directories deep,
    on which Python 3.11's rmtree raises RecursionError (even with ignore_errors).
    """
    try:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", folder], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    except (OSError, subprocess.TimeoutExpired):
        shutil.rmtree(folder, ignore_errors=True)


def remove_zip(path: str) -> None:
    """Remove a task's zip and the lock its maker took (web/zip_once.py)."""
    for name in (path, f"{path}.lock"):
        try:
            os.remove(name)
        except FileNotFoundError:
            pass
