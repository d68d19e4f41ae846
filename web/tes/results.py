"""What a TES task's result zip says for its views (web/tes/views.py): each executor's log (exit code,
times, the tails of its output) and the outputs the executor node collected; read from the zip once
and kept beside it.

Runs in the server's main process (web threads). The result zip is fetched for completed and failed
tasks alike (actors/server/retriever.py); web/tes/script.py's run.sh writes tes/executors.tsv and
the node writes tes/outputs.json and tes/tails.json in the job's folder.

NOTE: the job can write every file read here (its folder is writable, tes/ included), and can make
the zip hold any number of files. So the zip's central directory, which opening it parses whole,
is measured first from its end record and not parsed above MAX_DIRECTORY_BYTES (100,000 files cost
a request 1.6 s); each member is read only below its size cap and parsed entry by entry, a bad entry
dropped; whatever reading the zip raises leaves the logs empty. What was read is written once,
atomically, to the result's sidecar (storage/tes_tasks.py `sidecar`), which later views read
instead: a list page of 2,048 tasks does not open 2,048 zips at every request.
"""
from __future__ import annotations

import json
import os
import re
import struct
import uuid
import zipfile
from dataclasses import asdict, dataclass, field

from storage.node.tes_plan import OUTPUTS_FILE, TAIL_CHARS, TAILS_FILE
from storage.tes_tasks import Stored, sidecar
from web.tes import script

#: The most of executors.tsv, outputs.json and tails.json read; a larger one is ignored.
MAX_LOG_BYTES = 1 << 20
#: The largest stream file (tes/N.stdout, or the task's own stdout path) read for its tail when
#: tails.json does not give it: reading a larger one would cost a request its whole size.
MAX_STREAM_BYTES = 64 << 10
#: The largest central directory parsed (about 15,000 files of short names; 0.12 s to parse, once).
MAX_DIRECTORY_BYTES = 1 << 20
TOO_MANY_FILES = "the task's results hold too many files to read its logs from (the executors' logs are not shown)"
#: What run.sh writes in executors.tsv: its times (date -u +%Y-%m-%dT%H:%M:%S.%6NZ) and an exit code.
TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")
EXIT_CODE = re.compile(r"-?[0-9]{1,9}")
#: A zip's end records (as web/zip_writer.py writes them): the end of central directory record,
#: the ZIP64 one and its locator, which precedes the former when the zip needs ZIP64.
END = struct.Struct("<IHHHHIIH")
END64 = struct.Struct("<IQHHIIQQQQ")
LOCATOR64 = struct.Struct("<IIQI")


@dataclass(frozen=True)
class Results:
    """What the result zip says of the task: each executor's log (tes/executors.tsv, with the tails
    of its output), the outputs the node collected (tes/outputs.json), and why they are not shown
    when the zip is too large to read them from."""

    executors: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)
    note: str | None = None


def read(task: Stored) -> Results:
    """The task's results: from its sidecar, else from its zip (then kept in the sidecar); none while
    it has no zip, and none from a zip that is gone or unreadable: its state and times still answer."""
    if not task.result_path:
        return Results()
    kept = sidecar(task.result_path)
    try:
        with open(kept, encoding="utf-8") as handle:
            return Results(**json.load(handle))
    except (OSError, ValueError, TypeError):
        pass  # not written yet (or cut short by a crash: .part files are removed at start)
    try:
        with open(task.result_path, "rb") as handle:
            results = _from_zip(task, handle)
    except Exception:  # noqa: BLE001 — see the module's NOTE: anything a job's files can cause
        return Results()
    _keep(results, kept, task.result_path)
    return results


def _keep(results: Results, kept: str, result_path: str) -> None:
    """Write `results` to the sidecar `kept` atomically. The janitor removes the result, then its
    sidecar (actors/server/janitor.py): a sidecar written after the result is gone is removed here,
    so none outlives its result whichever runs first."""
    part = f"{kept}.part-{uuid.uuid4().hex}"
    try:
        with open(part, "w", encoding="utf-8") as handle:
            json.dump(asdict(results), handle)
        os.replace(part, kept)
        if not os.path.exists(result_path):
            os.remove(kept)
    except OSError:  # e.g. a full disk: the next view reads the zip again
        for path in (part, kept):
            try:
                os.remove(path)
            except OSError:
                pass


def directory_bytes(handle) -> int | None:
    """The size of the zip's central directory as its end record says (the ZIP64 record's when there
    is one), without reading the directory; None when no end record is found."""
    length = handle.seek(0, os.SEEK_END)
    span = min(length, LOCATOR64.size + END.size + 0xFFFF)  # 0xFFFF: the longest zip comment
    handle.seek(length - span)
    tail = handle.read(span)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + END.size > len(tail):
        return None
    size = END.unpack_from(tail, at)[5]
    if at >= LOCATOR64.size:
        signature, _, end64, _ = LOCATOR64.unpack_from(tail, at - LOCATOR64.size)
        if signature == 0x07064B50:
            handle.seek(end64)
            record = handle.read(END64.size)
            if len(record) < END64.size or END64.unpack(record)[0] != 0x06064B50:
                return None
            size = END64.unpack(record)[8]
    return size


def _from_zip(task: Stored, handle) -> Results:
    size = directory_bytes(handle)
    if size is None:
        return Results()
    if size > MAX_DIRECTORY_BYTES:
        return Results(note=TOO_MANY_FILES)
    handle.seek(0)
    with zipfile.ZipFile(handle) as archive:
        return Results(_executor_logs(task, archive), _outputs(archive))


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


def _executor_logs(task: Stored, archive: zipfile.ZipFile) -> list[dict]:
    """One entry per executor that ended, from tes/executors.tsv (lines that are not an executor's
    index, two times and an exit code are dropped), with the tails of its output."""
    raw = _member(archive, script.EXECUTORS_LOG, MAX_LOG_BYTES)
    if raw is None:
        return []
    executors = task.document["executors"]
    tails = _json_list(archive, TAILS_FILE)  # [{"stdout": ..., "stderr": ...}, ...] by executor
    logs = []
    for line in raw.decode("utf-8", "replace").splitlines():
        fields = line.split("\t")
        if len(fields) != 4 or not fields[0].isdigit() or int(fields[0]) >= len(executors) \
                or not all(map(TIME.fullmatch, fields[1:3])) or not EXIT_CODE.fullmatch(fields[3]):
            continue
        index = int(fields[0])
        logs.append({"start_time": fields[1], "end_time": fields[2], "exit_code": int(fields[3]),
                     **_tails(archive, executors[index], index, tails)})
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
    return [output for output in map(_output, _json_list(archive, OUTPUTS_FILE)) if output is not None]


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
