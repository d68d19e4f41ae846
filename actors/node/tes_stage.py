"""The TES stage: what an executor node does around a GA4GH TES task's sandboxed `bash run.sh`, as
its plan says (storage/node/tes_plan.py): place the content inputs and fetch the http(s) ones before,
keep the tails of the executors' stdout and stderr, collect the outputs and PUT the http(s) ones
after. Each GET and PUT goes to an address of its host that the server's `[tes] url_hosts` (in the
plan) admits, checked when it is sent (conf/pinned_http.py), and follows no redirect: a task cannot
make the node reach its own network or the cloud metadata address.

A program (`main`), run as the job's command by both backends (actors/node/tes_wrap.py builds its
command line): on this host as the head of the job's process group, or inside the Slurm allocation.
So it runs OUTSIDE the sandbox (it needs the network, which jobs may not have) but is the job's
own process: a cancel, the time limit or the node's death stop it with the job's other processes,
and its time counts in the job's.

Trust: the job folder is the job's to write, and the stage runs as the node's user. So the stage
reads its plan only if it is the one the node wrote (its SHA-256 is on the stage's command line);
makes `root` itself, fresh, before the run (one that exists, e.g. left by an earlier run of the same
folder, is refused) and remembers which directory it is; after the run (the sandbox ended, so every
process of the job is gone and nothing changes under the stage) it refuses a `root` that is no longer
that directory, matches outputs without following links to folders or out of it (`_Match`: nothing
outside root is listed, taken or named), resolves every file it reads to its real path and takes it
only inside the remembered root (outputs) or job folder (tails), opens with O_NOFOLLOW, and writes
its own files into a real `tes` folder, whatever the job left there.

Paths: the task's `/R/rest` is `<job folder>/root/R/rest`; the sandbox binds `<folder>/root/R` at
`/R` (actors/node/sandbox.py).

Exit code: `run.sh`'s, whatever the stage found after it; 1 when `run.sh` never ran (an input could
not be placed or fetched). A system failure (input, upload, missing output, a replaced root) is
`tes/reason.txt`, which the node sends the server as the task's reason (so the task is SYSTEM_ERROR,
not EXECUTOR_ERROR) when the stage exited by itself (tes_wrap.reason), and a line on stderr.log.
"""
from __future__ import annotations

import fnmatch
import hashlib
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
from storage.node.tes_plan import LOG_DIR, ROOT, TAIL_CHARS, Output, Plan, http_url, wildcard

OUTPUTS = os.path.basename(tes_plan.OUTPUTS_FILE)
REASON = os.path.basename(tes_plan.REASON_FILE)
TAILS = os.path.basename(tes_plan.TAILS_FILE)
#: The server's setting whose patterns (carried in the plan) the urls' hosts must match.
URL_HOSTS = "[tes] url_hosts"
#: (connect, read) seconds for an input's GET and an output's PUT: the job's time limit bounds the rest.
TIMEOUT = (10, 60)
CHUNK = 1 << 20
#: The exit code of a task whose run.sh never ran (the stage failed before it).
NOT_RUN = 1
#: An executor's stdout or stderr tail: the last TAIL_CHARS characters of its last TAIL_BYTES bytes.
TAIL_BYTES = 16 * 1024
REPLACED_ROOT = "the task replaced its root folder"
#: The most files and folders one output may match (every component of its path, each file and folder
#: of a DIRECTORY): past it, the task fails (a system failure).
MAX_MATCHES = 10_000


class StageFailed(Exception):
    """A system failure of the task; the message is its reason."""


@dataclass(frozen=True)
class Found:
    """One file of an output: the task's path of it, the real file, and where it is uploaded."""

    path: str
    real: str
    url: str


def main(argv: list[str]) -> int:
    """`<job folder> <the plan's SHA-256> -- <sandboxed command...>`"""
    folder, digest, command = os.path.abspath(argv[0]), argv[1], argv[argv.index("--") + 1:]
    code, reason = NOT_RUN, None
    try:
        plan = read_plan(folder, digest)
        for name in (OUTPUTS, TAILS, REASON):  # NOTE: whatever a run before this one left
            write_private(folder, name, None)
        root = make_root(folder, plan)
        place_inputs(plan, folder, root)
        fetch_inputs(plan, root.real)
        mode = os.stat(folder).st_mode
        code = subprocess.run(command).returncode
        code = code if code >= 0 else 128 - code
        os.chmod(folder, mode)  # NOTE: the job may have taken the folder's permissions away
        write_private(folder, TAILS, json.dumps(tails(plan, folder)))
        root.check(os.path.join(folder, ROOT))
        entries, reason = collect_and_upload(plan, folder, root.real, succeeded=code == 0)
        write_private(folder, OUTPUTS, json.dumps(entries))
    except StageFailed as failure:
        reason = str(failure)
    except Exception as exc:  # noqa: BLE001 — whatever it is, the task fails saying so, not as its command's fault
        reason = f"the executor's TES stage failed: {exc.__class__.__name__}: {exc}"
    return finish(folder, code, reason)


def finish(folder: str, code: int, reason: str | None) -> int:
    """Leave the reason for the node (or none: whatever the job wrote there is removed)."""
    if reason:
        print(f"orchestrator (TES): {reason}", file=sys.stderr)
    try:
        write_private(folder, REASON, reason)
    except OSError as exc:
        print(f"orchestrator (TES): the reason could not be written: {exc}", file=sys.stderr)
    return code


def read_plan(folder: str, digest: str) -> Plan:
    """The plan the node wrote into the folder: refused if its SHA-256 is not `digest` (a job that
    ran in this folder before, e.g. an allocation Slurm started again, could have rewritten it)."""
    try:
        descriptor = os.open(os.path.join(folder, tes_plan.PLAN_FILE), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as handle:
            text = handle.read(tes_plan.MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise StageFailed(f"the task's plan could not be read: {exc}") from None
    if hashlib.sha256(text).hexdigest() != digest:
        raise StageFailed("the task's plan is not the one the node wrote (was the job run in this folder before?)")
    return tes_plan.parse(text.decode("utf-8"))


@dataclass(frozen=True)
class Root:
    """The `root` folder the stage made: its real path and its identity."""

    real: str
    device: int
    inode: int

    def check(self, path: str) -> None:
        """Refuse a `path` that is no longer this directory (the job renamed it, put a link there)."""
        try:
            now = os.lstat(path)
        except OSError:
            raise StageFailed(REPLACED_ROOT) from None
        if not stat.S_ISDIR(now.st_mode) or (now.st_dev, now.st_ino) != (self.device, self.inode):
            raise StageFailed(REPLACED_ROOT)


def make_root(folder: str, plan: Plan) -> Root:
    """Make `root` and the plan's roots in it, fresh: one that exists is not the stage's."""
    path = os.path.join(folder, ROOT)
    try:
        os.mkdir(path)
    except FileExistsError:
        raise StageFailed(f"the task's folder already holds {ROOT!r} (was the job run in this folder before?)") from None
    made = os.lstat(path)
    for name in plan.roots:
        os.mkdir(os.path.join(path, name))
    return Root(os.path.realpath(path), made.st_dev, made.st_ino)


# --- inputs -----------------------------------------------------------------------------------

def place_inputs(plan: Plan, folder: str, root: Root) -> None:
    """Move each content input (a file of the job's bundle) to its mapped path, before the run."""
    for item in plan.inputs:
        if item.file is None:
            continue
        source = os.path.join(folder, item.file)
        target = inside(root.real, item.path)
        try:
            if not stat.S_ISREG(os.lstat(source).st_mode):
                raise StageFailed(f"TES input {item.path}: its file {item.file} is not a regular file")
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(source, target)
        except OSError as exc:
            raise StageFailed(f"TES input {item.path}: it could not be placed: {exc}") from None


def fetch_inputs(plan: Plan, root: str) -> None:
    """GET each http(s) input to its mapped path, all of them together at most max_input_bytes."""
    left = plan.max_input_bytes
    for item in plan.inputs:
        if item.url is None:
            continue
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


# --- the executors' output tails ------------------------------------------------------------

def tails(plan: Plan, folder: str) -> list[dict[str, str]]:
    """Each executor's {"stdout": tail, "stderr": tail} (tes/tails.json, for the task's FULL view)."""
    real = os.path.realpath(folder)
    return [{"stdout": tail(real, stdout), "stderr": tail(real, stderr)} for stdout, stderr in plan.streams]


def tail(folder: str, relative: str) -> str:
    """The end of the regular file `relative` in the real `folder` ("" if it is not one, or is not
    in the folder), read from its last TAIL_BYTES only."""
    real = os.path.realpath(os.path.join(folder, relative))
    if not real.startswith(folder + "/"):
        return ""
    try:  # NOTE: O_NONBLOCK: a FIFO the job left there must not hang the stage
        descriptor = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(descriptor, "rb") as handle:
        size = os.fstat(descriptor)
        if not stat.S_ISREG(size.st_mode):
            return ""
        handle.seek(max(0, size.st_size - TAIL_BYTES))
        return handle.read(TAIL_BYTES).decode("utf-8", "replace")[-TAIL_CHARS:]


# --- outputs ----------------------------------------------------------------------------------

def collect_and_upload(plan: Plan, folder: str, root: str, succeeded: bool) -> tuple[list[dict], str | None]:
    """The outputs.json entries, and the first system failure (None: none). Every output is tried.
    `root`: the real path of the task's root folder, as the stage made it (`Root.real`)."""
    entries, failures = [], []
    for output in plan.outputs:
        try:
            found, notes = collect(root, output)
        except StageFailed as failure:  # too many matches: this output fails, the others are still tried
            failures.append(str(failure))
            continue
        for note in notes:
            print(f"orchestrator (TES): {note}", file=sys.stderr)
        if not found and output.type == "FILE" and not wildcard(output.path) and succeeded:
            failures.append(f"TES output {output.path}: not found")
        for item in found:
            entry = {"path": item.path, "file": os.path.relpath(item.real, os.path.realpath(folder)),
                     "size_bytes": os.path.getsize(item.real), "url": None}
            if http_url(item.url):
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
    the file's path in it. StageFailed past MAX_MATCHES. How links are treated: `_Match`."""
    match, pattern = _Match(root, output.path), wildcard(output.path)
    prefix = (output.path_prefix if output.path_prefix is not None else _fixed_part(output.path)) if pattern else ""
    for path, place, mode in match.last_level():
        url = _join(output.url, path[len(prefix):] if path.startswith(prefix) else path) if pattern else output.url
        if output.type == "DIRECTORY":
            if stat.S_ISDIR(mode):
                match.walk(path, place, url)
            elif stat.S_ISLNK(mode):
                match.links += 1
        elif not (pattern and stat.S_ISDIR(mode)):
            match.take(path, place, mode, url)
    return sorted(match.found, key=lambda item: item.path), match.notes()


class _Match:
    """One output's matching under the real folder `root`, one path component at a time.

    The job made everything under root, links included, and the stage runs as the node's user: a
    link followed could list, and upload, whatever that user reads (/etc, other tasks' folders),
    and links looping back multiply the matches of `*/*/...` without end. So the match descends
    only into real folders (os.scandir, lstat), takes regular files, and follows a link only to a
    regular file whose real path is inside root (no folder, nothing outside); every other link is
    counted, never named (its name or target could tell what is outside). At most MAX_MATCHES
    entries are matched: the stage has no limits of its own but the job's time."""

    def __init__(self, root: str, output_path: str) -> None:
        self.root, self.output_path = root, output_path
        self.found: list[Found] = []
        self.matched = self.links = self.others = 0

    def last_level(self) -> list[tuple[str, str, int]]:
        """(task path, place, lstat mode) of what the path's last component matches."""
        parts = os.path.normpath(self.output_path).strip("/").split("/")
        folders = [("", self.root)]
        for depth, part in enumerate(parts):
            entries = [(f"{path}/{name}", place, mode)
                       for path, folder in folders for name, place, mode in self.entries(folder, part)]
            if depth == len(parts) - 1:
                return entries
            folders = [(path, place) for path, place, mode in entries if stat.S_ISDIR(mode)]
            # NOTE: a link here counts only if it leads to a folder: nothing is under one to a file.
            self.links += sum(stat.S_ISLNK(mode) and os.path.isdir(place) for _, place, mode in entries)
        return []

    def entries(self, folder: str, part: str | None) -> list[tuple[str, str, int]]:
        """(name, place, lstat mode) of each entry of `folder` that `part` matches (glob's rules: a
        wildcard matches a leading dot only in a part that starts with one; None: every entry);
        none if it cannot be read."""
        try:
            if part is not None and not wildcard(part):
                return [self.counted(part, os.path.join(folder, part), os.lstat(os.path.join(folder, part)).st_mode)]
            with os.scandir(folder) as listing:
                return [self.counted(entry.name, entry.path, entry.stat(follow_symlinks=False).st_mode)
                        for entry in sorted(listing, key=lambda entry: entry.name)
                        if part is None or (fnmatch.fnmatchcase(entry.name, part)
                                            and (part[0] == "." or entry.name[0] != "."))]
        except OSError:
            return []

    def counted(self, name: str, place: str, mode: int) -> tuple[str, str, int]:
        self.matched += 1
        if self.matched > MAX_MATCHES:
            raise StageFailed(f"TES output {self.output_path}: it matches more than {MAX_MATCHES} files and folders "
                              f"(the executor node's limit)")
        return name, place, mode

    def walk(self, path: str, place: str, url: str) -> None:
        """Take every regular file under the real folder `place` (a DIRECTORY output), depth first."""
        folders = [("", place)]
        while folders:
            relative, folder = folders.pop()
            for name, inner, mode in self.entries(folder, None):
                name = os.path.join(relative, name)
                if stat.S_ISDIR(mode):
                    folders.append((name, inner))
                else:
                    self.take(os.path.join(path, name), inner, mode, _join(url, name))

    def take(self, path: str, place: str, mode: int, url: str) -> None:
        """Take the entry if it is a regular file, or a link to one inside root."""
        if stat.S_ISREG(mode):
            self.found.append(Found(path, place, url))
        elif not stat.S_ISLNK(mode):
            self.others += 1
        elif (real := self.regular_inside(place)) is not None:
            self.found.append(Found(path, real, url))
        else:
            self.links += 1

    def regular_inside(self, link: str) -> str | None:
        real = os.path.realpath(link)
        try:
            return real if real.startswith(self.root + "/") and stat.S_ISREG(os.lstat(real).st_mode) else None
        except OSError:
            return None

    def notes(self) -> list[str]:
        counts = (("links", self.links, " (a link is followed only to a regular file inside the task's folders)"),
                  ("not regular files", self.others, ""))
        return [f"output {self.output_path}: {what} skipped: {count}{why}" for what, count, why in counts if count]


def _fixed_part(path: str) -> str:
    """The folder of a wildcard path before its first wildcard: `/out/` of `/out/*.txt`."""
    first = min(path.index(char) for char in tes_plan.WILDCARDS if char in path)
    return path[:path.rindex("/", 0, first) + 1]


def _join(url: str, rest: str) -> str:
    return url.rstrip("/") + "/" + rest.lstrip("/") if rest.strip("/") else url


def upload(real: str, url: str, url_hosts: tuple[str, ...]) -> str | None:
    """PUT the file at `url`, streamed; None once it answered 2xx, else what went wrong."""
    try:
        with os.fdopen(os.open(real, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle, \
                request("PUT", url, url_hosts, data=handle) as response:
            return None if 200 <= response.status_code < 300 else answer(response)
    except (requests.RequestException, OSError) as exc:
        return f"{exc.__class__.__name__}: {exc}"
    except (ValueError, LookupError) as exc:  # pinned_http: the host is not admitted or does not resolve
        return str(exc)


# --- the stage's own files --------------------------------------------------------------------

def write_private(folder: str, name: str, text: str | None) -> None:
    """Write (or, with None, remove) `tes/<name>` in the job's folder, whatever the job left there:
    a link or a file where the folder `tes` should be, or where the file should be, is removed, and
    permissions it took away are given back (the job's processes are gone when the stage writes)."""
    logs = os.path.join(folder, LOG_DIR)
    if os.path.islink(logs) or (os.path.lexists(logs) and not os.path.isdir(logs)):
        os.unlink(logs)
    os.makedirs(logs, exist_ok=True)
    os.chmod(logs, 0o755)
    descriptor = os.open(logs, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        try:
            os.unlink(name, dir_fd=descriptor)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            _remove_tree(os.path.join(logs, name))
        if text is not None:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=descriptor)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
    finally:
        os.close(descriptor)


def _remove_tree(path: str) -> None:
    """Remove the folder `path` (a real one) even where the job took permissions away; links in it
    are removed, not followed."""
    os.chmod(path, 0o700)
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            _remove_tree(entry.path)
    shutil.rmtree(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
