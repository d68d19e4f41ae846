"""The TES stage: what an executor node does around a GA4GH TES task's sandboxed `bash run.sh`, as
its plan says (storage/node/tes_plan.py): fetch the http(s) inputs before, collect the outputs and
PUT the http(s) ones after. Each GET and PUT goes to an address of its host that the server's
`[tes] url_hosts` (in the plan) admits, checked when it is sent (conf/pinned_http.py), and follows
no redirect: a task cannot make the node reach its own network or the cloud metadata address.

A program (`main`), run as the job's command by both backends (actors/node/tes_wrap.py builds its
command line): on this host as the head of the job's process group, or inside the Slurm allocation.
So it runs OUTSIDE the sandbox (it needs the network, which jobs may not have) but is the job's
own process: a cancel, the time limit or the node's death stop it with the job's other processes,
and its time counts in the job's.

Paths: the task's `/R/rest` is `<job folder>/root/R/rest`; the sandbox binds `<folder>/root/R` at
`/R` (actors/node/sandbox.py). What it writes (`tes/outputs.json`, `tes/reason.txt`) it writes after
the sandbox ended, so every process of the job is gone; it never follows a link the job left (a
fetched input goes where the plan says, an output is a regular file whose real path is under
`root`, and its own files are written with O_NOFOLLOW into a real `tes` folder).

Exit code: `run.sh`'s, whatever the stage found after it; 1 when `run.sh` never ran (an input could
not be fetched). A system failure (input, upload, missing output) is `tes/reason.txt`, which the
node sends the server as the task's reason (so the task is SYSTEM_ERROR, not EXECUTOR_ERROR), and
a line on stderr.log.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests

from conf import pinned_http
from storage.node import tes_plan
from storage.node.tes_plan import ROOT, Output, Plan

LOG_DIR, OUTPUTS = os.path.split(tes_plan.OUTPUTS_FILE)
REASON = os.path.basename(tes_plan.REASON_FILE)
#: The server's setting whose patterns (carried in the plan) the urls' hosts must match.
URL_HOSTS = "[tes] url_hosts"
#: (connect, read) seconds for an input's GET and an output's PUT: the job's time limit bounds the rest.
TIMEOUT = (10, 60)
CHUNK = 1 << 20
WILDCARDS = "*?["
#: The exit code of a task whose run.sh never ran (the stage failed before it).
NOT_RUN = 1


class StageFailed(Exception):
    """A system failure of the task; the message is its reason."""


@dataclass(frozen=True)
class Found:
    """One file of an output: the task's path of it, the real file, and where it is uploaded."""

    path: str
    real: str
    url: str


def main(argv: list[str]) -> int:
    """`<job folder> -- <sandboxed command...>`"""
    folder, command = os.path.abspath(argv[0]), argv[argv.index("--") + 1:]
    code = NOT_RUN
    try:
        with open(os.path.join(folder, tes_plan.PLAN_FILE), encoding="utf-8") as handle:
            plan = tes_plan.parse(handle.read())  # NOTE: read before the job runs: it cannot change it
        root = os.path.join(folder, ROOT)
        for name in plan.roots:
            os.makedirs(os.path.join(root, name), exist_ok=True)
        fetch_inputs(plan, root)
        code = subprocess.run(command).returncode
        code = code if code >= 0 else 128 - code
        entries, reason = collect_and_upload(plan, folder, succeeded=code == 0)
        write_private(folder, OUTPUTS, json.dumps(entries))
    except StageFailed as failure:
        reason = str(failure)
    except Exception as exc:  # noqa: BLE001 — whatever it is, the task fails saying so, not as its command's fault
        reason = f"the executor's TES stage failed: {exc.__class__.__name__}: {exc}"
    return finish(folder, code, reason)


def finish(folder: str, code: int, reason: str | None) -> int:
    """Leave the reason for the node (or none: whatever the job wrote there is removed)."""
    write_private(folder, REASON, reason)
    if reason:
        print(f"orchestrator (TES): {reason}", file=sys.stderr)
    return code


# --- inputs -----------------------------------------------------------------------------------

def fetch_inputs(plan: Plan, root: str) -> None:
    """GET each http(s) input to its mapped path, all of them together at most max_input_bytes."""
    left = plan.max_input_bytes
    for item in plan.inputs:
        target = inside(root, item.path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        try:
            with request("GET", item.url, plan.url_hosts, stream=True) as response:
                if not 200 <= response.status_code < 300:
                    raise StageFailed(f"TES input {item.path}: {item.url} answered {answer(response)}")
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as handle:
                    for chunk in response.iter_content(CHUNK):
                        left -= len(chunk)
                        if left < 0:
                            raise StageFailed(f"TES input {item.path}: the task's inputs are larger than "
                                              f"{plan.max_input_bytes} bytes in all (the server's max_upload_mb)")
                        handle.write(chunk)
        except requests.RequestException as exc:
            raise StageFailed(f"TES input {item.path}: fetching {item.url} failed: {exc.__class__.__name__}: "
                              f"{exc}") from None
        except (ValueError, LookupError) as exc:  # pinned_http: the host is not admitted or does not resolve
            raise StageFailed(f"TES input {item.path}: {exc}") from None
        except OSError as exc:
            raise StageFailed(f"TES input {item.path}: it could not be written: {exc}") from None


@contextmanager
def request(method: str, url: str, url_hosts: tuple[str, ...], **kwargs) -> Iterator[requests.Response]:
    """`method` `url`, sent to an address of its host that `url_hosts` admits (every address it
    resolves to now must be: conf/pinned_http.py), redirects not followed: a redirect's target is
    not checked, and requests would follow it to any address. ValueError or LookupError (from
    pinned_http) when the host is refused or does not resolve."""
    address = pinned_http.checked_address(url, url_hosts, URL_HOSTS, any_when_empty=True)
    session, pinned_url, host = pinned_http.pinned(url, address)
    with session, session.request(method, pinned_url, headers={"Host": host}, timeout=TIMEOUT,
                                  allow_redirects=False, **kwargs) as response:
        yield response


def answer(response: requests.Response) -> str:
    """A non-2xx answer in words."""
    if response.is_redirect:
        return (f"HTTP {response.status_code}, a redirect to {response.headers.get('location', '')[:200]!r} "
                f"(redirects are not followed: give the final URL)")
    return f"HTTP {response.status_code}"


def inside(root: str, path: str) -> str:
    """The place of the task's `path` under `root` (the plan's paths have no `..`)."""
    return os.path.join(root, os.path.normpath(path).lstrip("/"))


# --- outputs ----------------------------------------------------------------------------------

def collect_and_upload(plan: Plan, folder: str, succeeded: bool) -> tuple[list[dict], str | None]:
    """The outputs.json entries, and the first system failure (None: none). Every output is tried."""
    root = os.path.realpath(os.path.join(folder, ROOT))
    entries, failures = [], []
    for output in plan.outputs:
        found, notes = collect(root, output)
        for note in notes:
            print(f"orchestrator (TES): {note}", file=sys.stderr)
        if not found and output.type == "FILE" and not wildcard(output.path) and succeeded:
            failures.append(f"TES output {output.path}: not found")
        for item in found:
            entry = {"path": item.path, "file": os.path.relpath(item.real, os.path.realpath(folder)),
                     "size_bytes": os.path.getsize(item.real), "url": None}
            if item.url.lower().startswith(tes_plan.HTTP_SCHEMES):
                entry["url"] = item.url
                problem = upload(item.real, item.url, plan.url_hosts)
                if problem:
                    failures.append(f"TES output {item.path}: upload to {item.url} failed: {problem}")
            else:
                entry["note"] = f"not uploaded: scheme {item.url.partition(':')[0] or '(none)'} is not supported"
            entries.append(entry)
    return entries, (failures[0] if failures else None)


def collect(root: str, output: Output) -> tuple[list[Found], list[str]]:
    """The regular files `output` names under the real folder `root`, and notes on what was skipped.

    A wildcard path is matched under `root`; each match's URL is the output's url with the matched
    path, less `path_prefix` (default: the pattern's folder before its first wildcard), appended. A
    DIRECTORY is flattened: one file per regular file under it, its URL the folder's plus "/" and
    the file's path in it. A file whose real path is not under `root` (a link out) is skipped."""
    if wildcard(output.path):
        pattern = os.path.normpath(output.path).lstrip("/")
        prefix = output.path_prefix if output.path_prefix is not None else _fixed_part(output.path)
        matches = sorted("/" + match for match in glob.glob(pattern, root_dir=root))
        pairs = [(path, _join(output.url, path[len(prefix):] if path.startswith(prefix) else path))
                 for path in matches]
    else:
        pairs = [(os.path.normpath(output.path), output.url)]
    found, notes = [], []
    for path, url in pairs:
        place = inside(root, path)
        if output.type == "DIRECTORY":
            if os.path.isdir(place) and _contained(root, place, notes, path):
                for base, _, names in os.walk(place):
                    for name in sorted(names):
                        full = os.path.join(base, name)
                        relative = os.path.relpath(full, place)
                        _add(found, notes, root, os.path.join(path, relative), full, _join(url, relative))
        elif os.path.lexists(place) and not (wildcard(output.path) and os.path.isdir(place)):
            _add(found, notes, root, path, place, url)
    return found, notes


def _add(found: list[Found], notes: list[str], root: str, path: str, place: str, url: str) -> None:
    real = os.path.realpath(place)
    if not _contained(root, real, notes, path):
        return
    try:
        regular = stat.S_ISREG(os.stat(real).st_mode)
    except OSError:
        regular = False
    if regular:
        found.append(Found(path, real, url))
    else:
        notes.append(f"output {path} skipped: it is not a regular file")


def _contained(root: str, place: str, notes: list[str], path: str) -> bool:
    real = os.path.realpath(place)
    if real == root or real.startswith(root + "/"):
        return True
    notes.append(f"output {path} skipped: it leads outside the task's folders")
    return False


def wildcard(path: str) -> bool:
    return any(char in path for char in WILDCARDS)


def _fixed_part(path: str) -> str:
    """The folder of a wildcard path before its first wildcard: `/out/` of `/out/*.txt`."""
    first = min(path.index(char) for char in WILDCARDS if char in path)
    return path[:path.rindex("/", 0, first) + 1]


def _join(url: str, rest: str) -> str:
    return url.rstrip("/") + "/" + rest.lstrip("/") if rest.strip("/") else url


def upload(real: str, url: str, url_hosts: tuple[str, ...]) -> str | None:
    """PUT the file at `url`, streamed; None once it answered 2xx, else what went wrong."""
    try:
        with open(real, "rb") as handle, request("PUT", url, url_hosts, data=handle) as response:
            return None if 200 <= response.status_code < 300 else answer(response)
    except (requests.RequestException, OSError) as exc:
        return f"{exc.__class__.__name__}: {exc}"
    except (ValueError, LookupError) as exc:  # pinned_http: the host is not admitted or does not resolve
        return str(exc)


# --- the stage's own files --------------------------------------------------------------------

def write_private(folder: str, name: str, text: str | None) -> None:
    """Write (or, with None, remove) `tes/<name>` in the job's folder, whatever the job left there:
    a link or a file where the folder `tes` should be, or where the file should be, is removed."""
    logs = os.path.join(folder, LOG_DIR)
    if os.path.islink(logs) or (os.path.lexists(logs) and not os.path.isdir(logs)):
        os.unlink(logs)
    os.makedirs(logs, exist_ok=True)
    descriptor = os.open(logs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.unlink(name, dir_fd=descriptor)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            shutil.rmtree(os.path.join(logs, name))
        if text is not None:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=descriptor)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
    finally:
        os.close(descriptor)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
