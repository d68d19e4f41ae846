"""The plan of a GA4GH TES task: what the executor node does around the task's `run.sh` (the
contract between the server's web/tes/script.py, which writes it, and the node).

Pure functions. Used by the server's main process (web/tes/script.py: `RESERVED_ROOTS`, `VERSION`),
the executor node's main process (web/executor_app.py checks the `tes_plan` field of a submit) and
the TES stage, a program each TES task runs on the node (actors/node/tes_stage.py).

A plan (JSON, version 1) names the top-level folders of the task's absolute paths (`roots`: the node
binds `<job folder>/root/R` at `/R` in the sandbox), the inputs to place before `run.sh` (a content
input's file of the job's bundle, moved; an http(s) url, fetched: at most `max_input_bytes` in all),
every output to collect after it, each executor's stdout and stderr files (the stage keeps their
tails), and the host patterns of
`[tes] url_hosts` (`url_hosts`: the node checks every address an input's or output's host resolves
to against them at each request, conf/pinned_http.py). Anything else is refused,
so a plan that reaches the node is safe to act on: every task path is absolute, free of `..`, under
one of its roots, no root is a folder the sandbox mounts itself, and every file of the job folder it
names is relative and free of `..`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from conf import webhook_hosts

VERSION = 1
#: Where, in a task's folder on the node, the task's absolute paths are (`/R/rest` is `root/R/rest`),
#: and the stage's files (in LOG_DIR, beside run.sh's executors.tsv): the plan it reads, the outputs
#: it found, the executors' output tails and the reason of a system failure.
ROOT = "root"
LOG_DIR = "tes"
PLAN_FILE = f"{LOG_DIR}/plan.json"
OUTPUTS_FILE = f"{LOG_DIR}/outputs.json"
TAILS_FILE = f"{LOG_DIR}/tails.json"
REASON_FILE = f"{LOG_DIR}/reason.txt"
#: An executor's stdout or stderr tail, as the stage keeps it and the FULL view shows it: its last
#: characters.
TAIL_CHARS = 4000
#: The largest plan a node takes (a multipart text field of the submit; Falcon buffers at most 1 MiB).
MAX_PLAN_BYTES = 1 << 20
#: Top-level directories a task path may not map: the sandbox mounts them itself (actors/node/sandbox.py).
RESERVED_ROOTS = frozenset({"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "var",
                            "sys", "run"})
HTTP_SCHEMES = ("http://", "https://")
#: The characters that make an output path a pattern.
WILDCARDS = "*?["


class PlanError(ValueError):
    """The text is not a plan this node can act on; the message says what is wrong."""


@dataclass(frozen=True)
class Input:
    """An input placed at `path`: fetched from `url`, or (url None) moved from the job folder's `file`."""

    url: str | None
    path: str
    file: str | None = None


@dataclass(frozen=True)
class Output:
    path: str
    url: str
    type: str = "FILE"
    path_prefix: str | None = None


@dataclass(frozen=True)
class Plan:
    roots: tuple[str, ...]
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    max_input_bytes: int
    #: `[tes] url_hosts` of the server (conf/webhook_hosts.py patterns); empty: any global address.
    url_hosts: tuple[str, ...] = ()
    #: Each executor's (stdout, stderr) files, relative to the job folder, in order.
    streams: tuple[tuple[str, str], ...] = ()


def parse(text: str) -> Plan:
    """The plan in `text`. Raises PlanError naming the first thing wrong."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PLAN_BYTES:
        raise PlanError(f"the plan is larger than {MAX_PLAN_BYTES} bytes")
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        raise PlanError("the plan is not JSON") from None
    if not isinstance(raw, dict) or raw.get("version") != VERSION:
        raise PlanError(f"the plan must be an object with version {VERSION}")
    roots = raw.get("roots")
    if not isinstance(roots, list) or not all(_root(name) for name in roots):
        raise PlanError("roots must be a list of top-level folder names, none of which the sandbox mounts itself")
    size = raw.get("max_input_bytes")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PlanError("max_input_bytes must be a non-negative integer")
    inputs = tuple(_input(item, f"inputs[{i}]", roots) for i, item in enumerate(_items(raw, "inputs")))
    outputs = []
    for i, item in enumerate(_items(raw, "outputs")):
        where = f"outputs[{i}]"
        kind = item.get("type", "FILE")
        prefix = item.get("path_prefix")
        if kind not in ("FILE", "DIRECTORY"):
            raise PlanError(f"{where}.type must be FILE or DIRECTORY")
        if prefix is not None and not isinstance(prefix, str):
            raise PlanError(f"{where}.path_prefix must be a string")
        outputs.append(Output(_path(item, where, roots), _url(item, where), kind, prefix))
    streams = tuple((_relative(item, f"executors[{i}]", "stdout"), _relative(item, f"executors[{i}]", "stderr"))
                    for i, item in enumerate(_items(raw, "executors")))
    return Plan(tuple(roots), inputs, tuple(outputs), size, _url_hosts(raw.get("url_hosts", [])), streams)


def http_url(url: str) -> bool:
    """Whether the node fetches from or uploads to `url`: the one test, the server's at create
    (web/tes/validate.py) and the node's, of the raw text: it starts with http:// or https:// in any
    case. No parsing first: urlsplit drops tabs and leading spaces, so "ht\\ttp://" would pass it at
    create and then be refused here."""
    return url[:8].lower().startswith(HTTP_SCHEMES)


def wildcard(path: str) -> bool:
    """Whether an output's path is a pattern (the stage matches it; a plain one names one file)."""
    return any(char in path for char in WILDCARDS)


def _input(item: dict, where: str, roots: list[str]) -> Input:
    if "file" in item:
        name = item["file"]
        if not isinstance(name, str) or not _name(name) or "url" in item:
            raise PlanError(f"{where}.file must be the name of a file of the job folder (and no url beside it)")
        return Input(None, _path(item, where, roots), name)
    return Input(_url(item, where, http_only=True), _path(item, where, roots))


def _relative(item: dict, where: str, key: str) -> str:
    value = item.get(key)
    parts = value.split("/") if isinstance(value, str) else [""]
    if not all(_name(part) for part in parts):
        raise PlanError(f"{where}.{key} must be a path relative to the job folder, without '..'")
    return value


def _url_hosts(value) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and "," not in item for item in value):
        raise PlanError("url_hosts must be a list of host patterns")
    try:
        return webhook_hosts.parse_patterns(",".join(value))
    except ValueError as exc:
        raise PlanError(f"url_hosts has {exc.args[0][:80]!r}, which is not a host pattern") from None


def _name(name: str) -> bool:
    """A plain name of a folder's entry."""
    return name not in ("", ".", "..") and "/" not in name and "\x00" not in name


def _root(name) -> bool:
    return isinstance(name, str) and _name(name) and name not in RESERVED_ROOTS


def _items(raw: dict, key: str) -> list[dict]:
    items = raw.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise PlanError(f"{key} must be a list of objects")
    return items


def _url(item: dict, where: str, http_only: bool = False) -> str:
    url = item.get("url")
    if not isinstance(url, str) or not url or (http_only and not http_url(url)):
        raise PlanError(f"{where}.url must be {'an http(s)' if http_only else 'a'} URL")
    return url


def _path(item: dict, where: str, roots: list[str]) -> str:
    path = item.get("path")
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise PlanError(f"{where}.path must be an absolute path")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts or len(parts) < 2 or parts[0] not in roots:
        raise PlanError(f"{where}.path must be below one of the plan's roots, without '..'")
    return path
