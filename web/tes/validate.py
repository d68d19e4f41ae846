"""Checking a GA4GH TES task (`POST /ga4gh/tes/v1/tasks`): every field the orchestrator uses, with a
400 that names what is wrong, before anything is stored.

Runs in the server's main process (web threads). Returns the task as it is stored (only the spec's
fields, each of the spec's type: the readOnly ones and unknown keys are dropped at every level, as
clients differ in what they send, and what is stored is given back to strict clients such as py-tes)
and what the job needs of it: its service, its user and its labels. Every string must be encodable
as UTF-8 (JSON lets a client send a lone surrogate, which no column and no answer can hold).
"""
from __future__ import annotations

import json
import math
import posixpath
import re
from dataclasses import dataclass

import falcon

from conf import webhook_hosts
from conf.settings import ServerConfig, ServiceConfig
from storage import jobs
from storage.node.tes_plan import MAX_PLAN_BYTES, RESERVED_ROOTS, http_url, wildcard
from web import scheduling_fields
from web.common import MAX_ID, positive_int
from web.tes import script

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: resources.backend_parameters keys the orchestrator honours (as the portal API's fields).
BACKEND_PARAMETERS = ("max_runtime", "priority", "group")
#: The user a task without a `user_id` tag counts for: the portal itself. Uploads need user ids
#: from 1, so 0 names no portal user.
PORTAL_USER = 0
#: The longest tag key and value, and task name, in UTF-8 bytes: they are stored in indexed columns
#: (storage/models.py TesTag, TesTask), and a PostgreSQL index entry holds about 2,700 bytes (a
#: 1,024-character CJK name is 3,072). In bytes, each also fits its column's size in characters.
MAX_TAG_KEY, MAX_TAG_VALUE, MAX_NAME = 128, 400, 1024
TASK_KEYS = ("name", "description", "inputs", "outputs", "resources", "executors", "volumes", "tags")
#: The spec's tesResources, each with the check of its type.
RESOURCES = {
    "cpu_cores": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "ram_gb": lambda v: _number(v), "disk_gb": lambda v: _number(v),  # defined below
    "preemptible": lambda v: isinstance(v, bool),
    "zones": lambda v: isinstance(v, list) and all(isinstance(z, str) for z in v),
    "backend_parameters": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in (*v, *v.values())),
    "backend_parameters_strict": lambda v: isinstance(v, bool)}
RESOURCE_TYPES = {"cpu_cores": "a positive integer", "ram_gb": "a number", "disk_gb": "a number", "preemptible": "true or false",
                  "zones": "a list of strings", "backend_parameters": "an object whose values are strings",
                  "backend_parameters_strict": "true or false"}


@dataclass(frozen=True)
class Accepted:
    document: dict
    service: str
    user_id: int
    labels: jobs.Labels
    #: The task's plan for the executor node, as JSON (web/tes/script.py `plan`): measured here,
    #: written into the job's folder as it is.
    plan: str = ""
    #: Why the task cannot run (an input it cannot have: `unsupported`); it is stored Failed at once.
    unsupported: str | None = None


def bad(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Invalid task", description=description)


def task(body, config: ServerConfig) -> Accepted:
    """The checked task, or a 400 naming the first thing wrong (413: content inputs above
    max_upload_mb)."""
    if not isinstance(body, dict):
        raise bad("send the task as a JSON object (tesTask).")
    doc = {key: body[key] for key in TASK_KEYS if body.get(key) is not None}
    encodable(doc, "task")
    for key in ("name", "description"):
        _string(doc, key, key)
    name = doc.get("name", "")
    if _bytes(name) > MAX_NAME or "\x00" in name:
        raise bad(f"name must be at most {MAX_NAME} bytes in UTF-8, without NUL (it has {_bytes(name)}).")
    executors = doc.get("executors")
    if not isinstance(executors, list) or not executors:
        raise bad("executors must be a non-empty list of executors (image, command).")
    doc["executors"] = [_executor(e, f"executors[{i}]") for i, e in enumerate(executors)]
    doc["inputs"] = [_input(x, f"inputs[{i}]") for i, x in enumerate(_list(doc, "inputs"))]
    doc["outputs"] = [_output(x, f"outputs[{i}]") for i, x in enumerate(_list(doc, "outputs"))]
    for i, volume in enumerate(_list(doc, "volumes")):
        absolute_path(volume, f"volumes[{i}]", folder=True)
    _conflicts(doc["inputs"], doc["outputs"])
    _input_limits(doc["inputs"], config)
    tags = _tags(doc.get("tags", {}))
    if "resources" in doc:
        doc["resources"] = _resources(doc["resources"])
    service = _service(doc["executors"], config)
    settings = config.service(service)
    labels = _labels(doc.get("resources"), settings.max_runtime)
    _cores(doc.get("resources"), settings)
    _drop_unsupported_parameters(doc.get("resources"))
    reasons = [reason for reason in map(unsupported, doc["inputs"]) if reason]
    _outbound_urls(doc, config.tes.url_hosts)
    return Accepted(doc, service, _user(tags), labels, _plan(doc, config), reasons[0] if reasons else None)


def absolute_path(value, where: str, folder: bool = False) -> str:
    """An absolute path the job folder can hold (web/tes/script.py maps it): no `..`, not directly
    under `/` unless it is a `folder` (a workdir, a volume: the node binds `root/R` at `/R`), not
    under a directory the sandbox mounts."""
    if not isinstance(value, str) or not value.startswith("/") or "\x00" in value or len(value) > 4096:
        raise bad(f"{where} must be an absolute path such as /data/in.txt.")
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise bad(f"{where} {value[:80]!r} must not contain '..'.")
    if len(parts) < 2 and not folder:
        raise bad(f"{where} {value[:80]!r} is directly under /; put it in a folder such as /data.")
    if parts and parts[0] in RESERVED_ROOTS:
        raise bad(f"{where} {value[:80]!r} is under /{parts[0]}, which the sandbox mounts itself; use another "
                  f"folder such as /data.")
    return value


def _executor(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise bad(f"{where} must be an object with image and command.")
    if not isinstance(value.get("image"), str) or not value["image"].strip():
        raise bad(f"{where}.image must be a non-empty string.")
    command = value.get("command")
    if not isinstance(command, list) or not command or not all(isinstance(a, str) and "\x00" not in a for a in command):
        raise bad(f"{where}.command must be a non-empty list of strings (an argument vector).")
    out = {"image": value["image"], "command": command}
    for key in ("workdir", "stdin", "stdout", "stderr"):
        if value.get(key) is not None:
            out[key] = absolute_path(value[key], f"{where}.{key}", folder=key == "workdir")
    env = _string_map(value.get("env") or {}, f"{where}.env")
    bad_names = [name for name in env if not ENV_NAME.match(name)]
    if bad_names:
        raise bad(f"{where}.env name {bad_names[0][:40]!r} is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*).")
    if env:
        out["env"] = env
    if value.get("ignore_error") is not None:
        if not isinstance(value["ignore_error"], bool):
            raise bad(f"{where}.ignore_error must be true or false.")
        out["ignore_error"] = value["ignore_error"]
    return out


def _input(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise bad(f"{where} must be an object with path and url or content.")
    out = {key: value[key] for key in ("name", "description", "url", "content", "type", "streamable")
           if value.get(key) is not None}
    out["path"] = absolute_path(value.get("path"), f"{where}.path")
    out["type"] = _file_type(out, where)
    for key in ("name", "description", "url", "content"):
        _string(out, key, f"{where}.{key}")
    if not isinstance(out.get("streamable", False), bool):
        raise bad(f"{where}.streamable must be true or false.")
    if "content" not in out and "url" not in out:
        raise bad(f"{where} must have a url or content.")
    return out


def unsupported(item: dict) -> str | None:
    """Why the (checked) input `item` cannot be had, if so: a url that is not http(s) (tes_plan.http_url),
    or a DIRECTORY. Such a task is accepted and ends SYSTEM_ERROR with this reason, never run (the
    issue: other schemes and DIRECTORY inputs are accepted at create, never a 4xx)."""
    if "content" not in item and not http_url(item["url"]):
        scheme, colon, _ = item["url"].partition(":")
        shown = (scheme[:40] if scheme.isprintable() else repr(scheme[:40])) if colon and scheme else \
            "(none: a bare path)"
        return (f"TES input {item['path']}: scheme {shown} is not supported (inputs may be content or "
                f"http(s) URLs)")
    if item["type"] == "DIRECTORY":
        return (f"TES input {item['path']}: DIRECTORY inputs are not supported (inputs may be content or "
                f"http(s) URLs of files)")
    return None


def _outbound_urls(doc: dict, patterns: tuple[str, ...]) -> None:
    """The http(s) urls the executor node will GET (inputs) or PUT to (outputs) must name a host
    `[tes] url_hosts` admits, without credentials, and no loopback, private or link-local address
    unless listed exactly (conf/webhook_hosts.py); the node checks the addresses the host resolves
    to again at each request. Other schemes are not fetched (see `unsupported`); an http(s) url
    (tes_plan.http_url) must name a host."""
    for kind in ("inputs", "outputs"):
        for i, item in enumerate(doc[kind]):
            url = item.get("url", "")
            if http_url(url):
                why = webhook_hosts.url_refusal(url, patterns, f"{kind}[{i}].url", "fetches from and uploads to",
                                                "[tes] url_hosts", any_when_empty=True)
                if why:
                    raise bad(why)


def _output(value, where: str) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise bad(f"{where} must be an object with path and url.")
    out = {key: value[key] for key in ("name", "description", "url", "path_prefix", "type") if value.get(key) is not None}
    out["path"] = absolute_path(value.get("path"), f"{where}.path")
    out["type"] = _file_type(out, where)
    for key in ("name", "description", "path_prefix"):
        _string(out, key, f"{where}.{key}")
    return out


def encodable(value, where: str) -> None:
    """400 naming the first string in `value` (keys too) that UTF-8 cannot encode (a lone surrogate
    such as "\\ud800", which JSON's escapes allow): no column stores it and no answer can send it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad(f"{where} holds a lone surrogate (not a Unicode character); send text as UTF-8.") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            encodable(key, f"{where} key {key!r}")
            encodable(item, f"{where}.{key}" if where != "task" else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            encodable(item, f"{where}[{index}]")


def _conflicts(inputs: list[dict], outputs: list[dict]) -> None:
    """400 for paths no folder can hold together: the same input path twice, or a file (a FILE input, or
    a FILE output without wildcards) that is also a folder of another input's or output's path."""
    seen: dict[str, str] = {}
    for i, item in enumerate(inputs):
        path = posixpath.normpath(item["path"])
        if path in seen:
            raise bad(f"inputs[{i}].path {item['path'][:80]!r} is also {seen[path]}'s path; give each input its own path.")
        seen[path] = f"inputs[{i}]"
    named = [(f"inputs[{i}]", item) for i, item in enumerate(inputs)] + \
            [(f"outputs[{i}]", item) for i, item in enumerate(outputs)]
    files = {posixpath.normpath(item["path"]): where for where, item in named
             if item["type"] == "FILE" and not wildcard(item["path"])}
    for where, item in named:
        folder = posixpath.dirname(posixpath.normpath(item["path"]))
        while folder != "/":
            if folder in files:
                raise bad(f"{where}.path {item['path'][:80]!r} is inside {files[folder]}'s path {folder[:80]!r}, "
                          f"which is a file; a path cannot be a file and a folder.")
            folder = posixpath.dirname(folder)


def _input_limits(inputs: list[dict], config: ServerConfig) -> None:
    """As for an upload: the job's files, its inputs and run.sh, at most max_files (400), the inputs'
    contents at most max_upload_mb in all (413)."""
    if len(inputs) >= config.max_files:
        raise bad(f"the task has {len(inputs)} inputs; at most {config.max_files - 1} are accepted (max_files = "
                  f"{config.max_files} files, run.sh one of them).")
    size, limit = sum(len(item.get("content", "").encode("utf-8")) for item in inputs), config.max_upload_mb << 20
    if size > limit:
        raise falcon.HTTPContentTooLarge(
            title="Inputs too large",
            description=f"the inputs' contents are {size} bytes in all; at most {limit} bytes are accepted "
                        f"(max_upload_mb); give larger inputs as http(s) urls.")


def _resources(value) -> dict:
    """The spec's resources only (unknown keys dropped), each of its type."""
    if not isinstance(value, dict):
        raise bad("resources must be an object.")
    kept = {key: value[key] for key in RESOURCES if value.get(key) is not None}
    for key, item in kept.items():
        if not RESOURCES[key](item):
            raise bad(f"resources.{key} must be {RESOURCE_TYPES[key]}.")
    return kept


def _number(value) -> bool:
    """A JSON number the answers can give back: finite (1e400 parses as infinity), not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _file_type(value: dict, where: str) -> str:
    kind = value.get("type", "FILE")
    if kind not in ("FILE", "DIRECTORY"):
        raise bad(f"{where}.type must be FILE or DIRECTORY.")
    return kind


def _service(executors: list[dict], config: ServerConfig) -> str:
    services = set()
    for i, executor in enumerate(executors):
        service = config.tes.service_of(executor["image"])
        if service is None:
            listed = ", ".join(image for image, _ in config.tes.images) or "none"
            raise bad(f"executors[{i}].image {executor['image'][:80]!r} is not served here; images served: {listed}.")
        services.add(service)
    if len(services) > 1:
        raise bad(f"the executors' images map to different services ({', '.join(sorted(services))}); a task runs "
                  f"on one service.")
    return services.pop()


def _labels(resources: dict | None, service_max_runtime: int | None) -> jobs.Labels:
    """The job's labels from backend_parameters (`resources` checked by `_resources` already)."""
    if resources is None:
        return jobs.Labels(max_runtime=service_max_runtime)
    params = {key.lower(): value for key, value in (resources.get("backend_parameters") or {}).items()}
    unknown = sorted(set(params) - set(BACKEND_PARAMETERS))
    if resources.get("backend_parameters_strict") and unknown:
        raise bad(f"resources.backend_parameters {unknown[0][:40]!r} is not supported (backend_parameters_strict); "
                  f"supported: {', '.join(BACKEND_PARAMETERS)}.")
    fields = {key: params[key] for key in BACKEND_PARAMETERS if key in params}
    try:
        return jobs.Labels(scheduling_fields.priority(fields), scheduling_fields.group(fields),
                           scheduling_fields.max_runtime(fields, service_max_runtime))
    except falcon.HTTPBadRequest as error:
        raise bad(f"resources.backend_parameters: {error.description}") from None


def _drop_unsupported_parameters(resources: dict | None) -> None:
    """The spec: without backend_parameters_strict, keys the server does not support are ignored and
    neither stored nor returned (the task's views show what it kept)."""
    params = (resources or {}).get("backend_parameters")
    if params:
        resources["backend_parameters"] = {key: value for key, value in params.items()
                                           if key.lower() in BACKEND_PARAMETERS}


def _cores(resources: dict | None, settings: ServiceConfig) -> None:
    """resources.cpu_cores (an integer: `_resources`): positive, at most the service's max_cores
    (unset: no cap). NOTE: ram_gb and disk_gb are not checked: the server does not know its
    executors' memory and disk limits (max_memory_mb, max_output_mb are each executor node's own)."""
    cores = (resources or {}).get("cpu_cores")
    if cores is None:
        return
    if cores < 1:
        raise bad("resources.cpu_cores must be a positive integer.")
    if settings.max_cores is not None and cores > settings.max_cores:
        raise bad(f"resources.cpu_cores {cores} is more than service {settings.name!r} gives a task "
                  f"(max_cores = {settings.max_cores}).")


def _user(tags: dict[str, str]) -> int:
    if "user_id" not in tags:
        return PORTAL_USER
    value = positive_int(tags["user_id"].strip(), MAX_ID)
    if value is None:
        raise bad(f"tags.user_id must be a positive integer (the portal's user), got {tags['user_id'][:40]!r}.")
    return value


def _string(doc: dict, key: str, where: str) -> None:
    if key in doc and not isinstance(doc[key], str):
        raise bad(f"{where} must be a string.")


def _list(doc: dict, key: str) -> list:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise bad(f"{key} must be a list.")
    return value


def _string_map(value, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise bad(f"{where} must be an object whose values are strings.")
    return value


def _tags(value) -> dict[str, str]:
    tags = _string_map(value, "tags")
    for key, text in tags.items():
        if _bytes(key) > MAX_TAG_KEY or _bytes(text) > MAX_TAG_VALUE or "\x00" in key + text:
            raise bad(f"tags: keys must be at most {MAX_TAG_KEY} bytes in UTF-8 and values at most {MAX_TAG_VALUE}, "
                      f"without NUL; {key[:40]!r} is not.")
    return tags


def _bytes(text: str) -> int:
    """The length of `text` in UTF-8 (checked encodable already)."""
    return len(text.encode("utf-8"))


def _plan(doc: dict, config: ServerConfig) -> str:
    """The task's plan for the node, as JSON; 400 for a task no node would take: its plan (sent as it
    is written) above the node's MAX_PLAN_BYTES (storage/node/tes_plan.py), e.g. hundreds of outputs
    of long paths."""
    text = json.dumps(script.plan(doc, config.max_upload_mb << 20, config.tes.url_hosts))
    size = len(text.encode("utf-8"))
    if size > MAX_PLAN_BYTES:
        raise bad(f"the task's inputs, outputs and paths make a plan of {size} bytes for the executor node; at most "
                  f"{MAX_PLAN_BYTES} are accepted: give fewer or shorter paths and urls.")
    return text
