"""A stored TES task (storage/tes_tasks.py) as the spec's tesTask, in the MINIMAL, BASIC or FULL view,
and the mapping of the job's state to the TES state.

Runs in the server's main process (web threads). Only the spec's fields are written (strict clients
such as py-tes refuse any other key); an absent value is left out, never null. The executors' logs
and the outputs come from the result zip, fetched for completed and failed tasks alike (web/tes/script.py
writes the logs into the job's folder; the executor node lists the outputs it collected and the
tails of the executors' output). The job can write those files too: they are read within size caps
and entry by entry (`_results`).
"""
from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass, field
from urllib.parse import quote

from storage.columns import iso
from storage.states import JobState
from storage.tes_tasks import Stored
from web.tes import script

VIEWS = ("MINIMAL", "BASIC", "FULL")
STATES = ("UNKNOWN", "QUEUED", "INITIALIZING", "RUNNING", "PAUSED", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR",
          "CANCELED", "PREEMPTED", "CANCELING")
#: The job's states as TES states; Failed is EXECUTOR_ERROR or SYSTEM_ERROR (`tes_state`).
BY_JOB_STATE = {JobState.QUEUED: "QUEUED", JobState.DISPATCHING: "INITIALIZING", JobState.SUBMITTED: "INITIALIZING",
                JobState.RUNNING: "RUNNING", JobState.COMPLETED: "COMPLETE", JobState.CANCELLED: "CANCELED"}
#: How much of an executor's stdout and stderr the FULL view shows: their last characters.
TAIL_CHARS = 4000
#: The outputs the executor node collected after the task's executors (actors/node/), in the zip.
OUTPUTS_LOG = f"{script.LOG_DIR}/outputs.json"
#: The tails of each executor's stdout and stderr, which the node writes after run.sh (actors/node/):
#: [{"stdout": ..., "stderr": ...}, ...] by executor.
TAILS_LOG = f"{script.LOG_DIR}/tails.json"
#: The most of executors.tsv, outputs.json and tails.json read; a larger one is ignored.
MAX_LOG_BYTES = 1 << 20
#: The largest stream file (tes/N.stdout, or the task's own stdout path) read for its tail when
#: tails.json does not give it: reading a larger one would cost a request its whole size.
MAX_STREAM_BYTES = 64 << 10
#: What run.sh writes in executors.tsv: its times (date -u +%Y-%m-%dT%H:%M:%S.%6NZ) and an exit code.
TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")
EXIT_CODE = re.compile(r"-?[0-9]{1,9}")


def tes_state(job_state: str, outcome: str | None, exit_code: int | None, reason: str | None) -> str:
    """Failed because run.sh (an executor's command) exited non-zero is EXECUTOR_ERROR; failed for any
    other reason (executor lost, a limit, results not fetched) is SYSTEM_ERROR. A cleaned job keeps
    its outcome's state."""
    state = JobState(outcome) if job_state == JobState.CLEANED.value and outcome else JobState(job_state)
    if state is JobState.FAILED:
        # NOTE: the retriever writes this reason exactly when run.sh's exit code is the only cause
        # (actors/server/retriever.py); an executor's own reason (a limit, lost) overrides it.
        return "EXECUTOR_ERROR" if exit_code and reason == f"run.sh exited with code {exit_code}" else "SYSTEM_ERROR"
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
    results = _results(task, full)
    log = {"logs": results.executors,
           "outputs": [{"url": f"{base}/jobs/{task.ref}/files/{quote(item['file'])}", "path": item["path"],
                        "size_bytes": str(item["size_bytes"])} for item in results.outputs],
           "metadata": {"service": task.service, "attempts": str(task.attempts)}}
    if task.started_at:
        log["start_time"] = iso(task.started_at)
    if task.finished_at:
        log["end_time"] = iso(task.finished_at)
    if full:
        notes = [f"output {item['path']}: {item['note']}" for item in results.outputs if item.get("note")]
        log["system_logs"] = [line for line in (task.reason, task.executor and f"executor {task.executor}")
                              if line] + notes
    return log


@dataclass(frozen=True)
class Results:
    """What the result zip says of the task: each executor's log (tes/executors.tsv, with the tails
    of its output in FULL) and the outputs the node collected (tes/outputs.json)."""

    executors: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)


def _results(task: Stored, full: bool) -> Results:
    """The task's results from its zip (fetched for completed and failed tasks alike); none while it
    has no zip, and none from a zip that is gone or unreadable: its state and times still answer.

    NOTE: the job can write every file read here (its folder is writable, tes/ included), so each is
    read only below its size cap and parsed entry by entry, a bad entry dropped; whatever reading
    the zip raises (a bad archive, an encrypted or oddly compressed member) leaves the logs empty:
    a job's files never make the task's views, or its portal's list, fail."""
    if not task.result_path:
        return Results()
    try:
        with zipfile.ZipFile(task.result_path) as archive:
            return Results(_executor_logs(task, archive, full), _outputs(archive))
    except Exception:  # noqa: BLE001 — see the NOTE: anything a job's files can cause
        return Results()


def _member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes | None:
    """The member `name`, if the zip has it and it is at most `limit` bytes (its declared size: zipfile
    reads no more than that)."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        return None
    return archive.read(info) if info.file_size <= limit else None


def _json_list(archive: zipfile.ZipFile, name: str) -> list:
    raw = _member(archive, name, MAX_LOG_BYTES)
    try:
        value = json.loads(raw) if raw is not None else []
    except (ValueError, RecursionError):
        return []
    return value if isinstance(value, list) else []


def _executor_logs(task: Stored, archive: zipfile.ZipFile, full: bool) -> list[dict]:
    """One entry per executor that ended, from tes/executors.tsv (lines that are not an executor's
    index, two times and an exit code are dropped)."""
    raw = _member(archive, script.EXECUTORS_LOG, MAX_LOG_BYTES)
    if raw is None:
        return []
    executors = task.document["executors"]
    tails = _json_list(archive, TAILS_LOG) if full else []
    logs = []
    for line in raw.decode("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or not fields[0].isdigit() or int(fields[0]) >= len(executors) \
                or not all(map(TIME.fullmatch, fields[1:3])) or not EXIT_CODE.fullmatch(fields[3]):
            continue
        index = int(fields[0])
        entry = {"start_time": fields[1], "end_time": fields[2], "exit_code": int(fields[3])}
        if full:
            entry.update(_tails(archive, executors[index], index, tails))
        logs.append(entry)
    return logs


def _tails(archive: zipfile.ZipFile, executor: dict, index: int, tails: list) -> dict[str, str]:
    """Executor `index`'s stdout and stderr tails: from tes/tails.json (the node writes it after
    run.sh), else from the stream's own file when that is small; else ""."""
    listed = tails[index] if index < len(tails) and isinstance(tails[index], dict) else {}
    out = {}
    for stream in ("stdout", "stderr"):
        text = listed.get(stream)
        if not (isinstance(text, str) and _utf8(text)):
            raw = _member(archive, script.stream_file(executor, index, stream), MAX_STREAM_BYTES)
            text = raw.decode("utf-8", "replace") if raw is not None else ""
        out[stream] = text[-TAIL_CHARS:]
    return out


def _outputs(archive: zipfile.ZipFile) -> list[dict]:
    """The outputs the executor node collected, as it listed them in tes/outputs.json: each with its
    task `path`, its `file` in the job folder, `size_bytes`, and a `note` when it was not uploaded.
    Entries not of that shape are dropped."""
    return [output for output in map(_output, _json_list(archive, OUTPUTS_LOG)) if output is not None]


def _output(item) -> dict | None:
    if not isinstance(item, dict):
        return None
    path, file, size, note = (item.get(key) for key in ("path", "file", "size_bytes", "note"))
    if not (isinstance(path, str) and path.startswith("/") and isinstance(file, str) and _in_folder(file)
            and isinstance(size, int) and not isinstance(size, bool) and size >= 0
            and (note is None or isinstance(note, str)) and all(map(_utf8, (path, file, note or "")))):
        return None
    return {"path": path, "file": file, "size_bytes": size, "note": note}


def _in_folder(file: str) -> bool:
    """A relative path in the job's folder, without '..' (a download URL of ours is made of it)."""
    return bool(file) and not file.startswith("/") and ".." not in file.split("/")


def _utf8(text: str) -> bool:
    """JSON can hold a lone surrogate, which no answer can send."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
