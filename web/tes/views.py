"""A stored TES task (storage/tes_tasks.py) as the spec's tesTask, in the MINIMAL, BASIC or FULL view,
and the mapping of the job's state to the TES state.

Runs in the server's main process (web threads). Only the spec's fields are written (strict clients
such as py-tes refuse any other key); an absent value is left out, never null. The executors' logs
and the outputs come from the result zip (web/tes/results.py reads it, once).
"""
from __future__ import annotations

from urllib.parse import quote

from storage import jobs
from storage.columns import iso
from storage.states import JobState
from storage.tes_tasks import Stored
from web.tes import results as task_results

VIEWS = ("MINIMAL", "BASIC", "FULL")
STATES = ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR",
          "CANCELED", "PREEMPTED", "CANCELING")
#: The job's states as TES states; Failed is EXECUTOR_ERROR or SYSTEM_ERROR (`tes_state`).
BY_JOB_STATE = {JobState.QUEUED: "QUEUED", JobState.DISPATCHING: "INITIALIZING", JobState.SUBMITTED: "INITIALIZING",
                JobState.RUNNING: "RUNNING", JobState.COMPLETED: "COMPLETE", JobState.CANCELLED: "CANCELED"}


def tes_state(job_state: str, outcome: str | None, exit_code: int | None, reason: str | None) -> str:
    """Failed because run.sh (an executor's command) exited non-zero is EXECUTOR_ERROR; failed for any
    other reason (executor lost, a limit, results not fetched) is SYSTEM_ERROR. A cleaned job keeps
    its outcome's state."""
    state = JobState(outcome) if job_state == JobState.CLEANED.value and outcome else JobState(job_state)
    if state is JobState.FAILED:
        # NOTE: the retriever writes this reason exactly when run.sh's exit code is the only cause
        # (actors/server/retriever.py); an executor's own reason (a limit, lost) overrides it.
        return "EXECUTOR_ERROR" if exit_code and reason == jobs.command_failed(exit_code) else "SYSTEM_ERROR"
    return BY_JOB_STATE.get(state, "SYSTEM_ERROR")


def task_view(task: Stored, view: str, base: str) -> dict:
    """The task in `view`; `base`: the server's URL as the client reaches it, for its outputs' URLs."""
    out = {"id": str(task.ref), "state": tes_state(task.state, task.outcome, task.exit_code, task.reason)}
    if view == "MINIMAL":
        return out
    full = view == "FULL"
    doc = task.document
    out.update({key: doc[key] for key in ("name", "description", "resources", "volumes", "tags", "outputs")
                if key in doc})
    out["inputs"] = [item if full else {k: v for k, v in item.items() if k != "content"} for item in doc["inputs"]]
    out["executors"] = doc["executors"]
    out["creation_time"] = iso(task.created_at)
    if task.started_at or task.finished_at:
        out["logs"] = [_task_log(task, full, base)]
    return out


def _task_log(task: Stored, full: bool, base: str) -> dict:
    results = task_results.read(task)
    streams = ("stdout", "stderr")
    log = {"logs": [entry if full else {k: v for k, v in entry.items() if k not in streams}
                    for entry in results.executors],
           "outputs": [{"url": f"{base}/jobs/{task.ref}/files/{quote(item['file'])}", "path": item["path"],
                        "size_bytes": str(item["size_bytes"])} for item in results.outputs],
           "metadata": {"service": task.service, "attempts": str(task.attempts)}}
    if task.started_at:
        log["start_time"] = iso(task.started_at)
    if task.finished_at:
        log["end_time"] = iso(task.finished_at)
    if full:
        notes = [f"output {item['path']}: {item['note']}" for item in results.outputs if item.get("note")]
        log["system_logs"] = [line for line in (task.reason, task.executor and f"executor {task.executor}",
                                                results.note) if line] + notes
    return log
