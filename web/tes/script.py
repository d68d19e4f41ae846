"""A TES task as the files of a job: its `content` inputs, and a generated `run.sh` that runs the
task's executors in order.

Runs in the server's main process (web threads, at `POST /ga4gh/tes/v1/tasks`).

Paths: the task's absolute paths are mapped into the job's folder: `/data/in.txt` is
`<job folder>/root/data/in.txt`. The script uses the mapped paths for what it handles itself (inputs,
workdir, stdin, stdout, stderr); an argument vector is passed as the task wrote it, and works because
the executor node binds each `root/R` at `/R` in the job's sandbox, as the task's plan says.

The job's bundle is a flat folder: the executor link sends its top-level files, and the plan as a
field of its own (actors/server/executor_link.py). So each content input travels as `tes-input-N`,
which the node's TES stage moves to its mapped path before run.sh (outside the sandbox: a failure is
the system's, not a command's); and the plan (`tes/plan.json`, format in storage/node/tes_plan.py:
the roots to bind, the inputs to place, the outputs to collect, each executor's stdout and stderr
files, whose tails the stage keeps) is in a subfolder, where no file of a bundle can pose as one.

The script records each executor's index, start, end and exit code, tab-separated, in
`tes/executors.tsv`, and its output in `tes/N.stdout` / `tes/N.stderr` unless the task names files:
web/tes/results.py reads them from the result zip for the task's logs.
"""
from __future__ import annotations

import os
import shlex

from storage.node import tes_plan

LOG_DIR = tes_plan.LOG_DIR
EXECUTORS_LOG = f"{LOG_DIR}/executors.tsv"
INPUT_FILE = "tes-input-{}"


def mapped(path: str) -> str:
    """Where the task's absolute `path` is, relative to the job's folder."""
    return os.path.normpath("root/" + path.lstrip("/"))


def stream_file(executor: dict, index: int, stream: str) -> str:
    """The file (relative to the job's folder) that holds executor `index`'s stdout or stderr."""
    return mapped(executor[stream]) if executor.get(stream) else f"{LOG_DIR}/{index}.{stream}"


def write_job_files(folder: str, document: dict, plan_text: str) -> None:
    """Write the task's content inputs, run.sh and the node's plan (`plan`, as JSON: web/tes/validate.py
    made and measured it) into the (new, empty) job `folder`."""
    for index, item in _content_inputs(document):
        with open(os.path.join(folder, INPUT_FILE.format(index)), "w", encoding="utf-8") as handle:
            handle.write(item["content"])
    with open(os.path.join(folder, "run.sh"), "w", encoding="utf-8") as handle:
        handle.write(run_script(document))
    os.makedirs(os.path.dirname(os.path.join(folder, tes_plan.PLAN_FILE)))
    with open(os.path.join(folder, tes_plan.PLAN_FILE), "w", encoding="utf-8") as handle:
        handle.write(plan_text)


def plan(document: dict, max_input_bytes: int, url_hosts: tuple[str, ...]) -> dict:
    """The task's plan for the executor node (storage/node/tes_plan.py). `max_input_bytes`: what the
    node may fetch for the task's url inputs in all (the server's max_upload_mb, as for an upload's
    files); `url_hosts`: `[tes] url_hosts`, which the node checks the urls' hosts' addresses against
    at each request."""
    paths = [item["path"] for item in document["inputs"] + document["outputs"]]
    paths += [executor[key] for executor in document["executors"] for key in ("workdir", "stdin", "stdout", "stderr")
              if executor.get(key)]
    paths += document.get("volumes", [])
    roots = sorted({parts[0] for parts in (os.path.normpath(path).strip("/").split("/") for path in paths) if parts[0]})
    outputs = [{key: item[key] for key in ("path", "url", "type", "path_prefix") if key in item}
               for item in document["outputs"]]
    inputs = [{"file": INPUT_FILE.format(index), "path": item["path"]} if "content" in item
              else {"url": item["url"], "path": item["path"]} for index, item in enumerate(document["inputs"])]
    streams = [{stream: stream_file(executor, index, stream) for stream in ("stdout", "stderr")}
               for index, executor in enumerate(document["executors"])]
    return {"version": tes_plan.VERSION, "roots": roots, "inputs": inputs, "outputs": outputs,
            "max_input_bytes": max_input_bytes, "url_hosts": list(url_hosts), "executors": streams}


def _content_inputs(document: dict) -> list[tuple[int, dict]]:
    """(index, input) of the inputs the task gives with their content (the others are fetched)."""
    return [(index, item) for index, item in enumerate(document["inputs"]) if "content" in item]


def run_script(document: dict) -> str:
    q = shlex.quote
    lines = ["#!/bin/bash",
             "# Generated from a GA4GH TES task (web/tes/script.py): do not edit.",
             'J="$PWD"',
             f"mkdir -p {LOG_DIR}",
             "now() { date -u +%Y-%m-%dT%H:%M:%S.%6NZ; }"]
    for index, executor in enumerate(document["executors"]):
        workdir = mapped(executor["workdir"]) if executor.get("workdir") else "."
        stdin = mapped(executor["stdin"]) if executor.get("stdin") else "/dev/null"
        stdout, stderr = stream_file(executor, index, "stdout"), stream_file(executor, index, "stderr")
        folders = {workdir, os.path.dirname(stdout), os.path.dirname(stderr)}
        exports = "".join(f"export {name}={q(value)}; " for name, value in executor.get("env", {}).items())
        argv = " ".join(q(arg) for arg in executor["command"])
        # NOTE: `exec --` keeps a first word starting with '-' a command; `export` (not `env
        # NAME=...`) keeps a first word holding '=' one too. The cd goes before the task's exports,
        # which may name J, PATH or CDPATH. A folder that cannot be made or entered (a file is
        # there) ends the executor with that failure: the command never runs elsewhere.
        lines += [f"# executor {index}",
                  "s=$(now)",
                  f"mkdir -p -- {' '.join(q(f) for f in sorted(folders))} && "
                  f'( cd -- "$J"/{q(workdir)} || exit $?; {exports}exec -- {argv} ) <{_at(stdin)} >"$J"/{q(stdout)} '
                  f'2>"$J"/{q(stderr)}',
                  "c=$?",
                  f"printf '%s\\t%s\\t%s\\t%s\\n' {index} \"$s\" \"$(now)\" \"$c\" >> {EXECUTORS_LOG}"]
        if not executor.get("ignore_error"):
            lines.append('[ "$c" -eq 0 ] || exit "$c"')
    lines.append("exit 0")
    return "\n".join(lines) + "\n"


def _at(path: str) -> str:
    return shlex.quote(path) if path.startswith("/") else f'"$J"/{shlex.quote(path)}'
