"""Receiving a multipart job bundle: files streamed to a staging folder, text fields returned.

Shared by the server's `POST /upload` and the executor's `POST /submit`. On any problem the staging
folder is removed before the 4xx is raised, so a rejected request leaves nothing on disk.
"""
from __future__ import annotations

import os
import shutil
import uuid
from typing import Callable, TypeVar

import falcon

from web import common
from web.common import MAX_ID

MAX_FILENAME_BYTES = 255
REQUIRED_SCRIPT = "run.sh"
T = TypeVar("T")
R = TypeVar("R")


def bad_request(description: str) -> falcon.HTTPBadRequest:
    return falcon.HTTPBadRequest(title="Invalid upload", description=description)


def safe_name(raw: str) -> str:
    """The base name of an uploaded file, or a 400 that says why it cannot be stored."""
    if "\x00" in raw:
        raise bad_request("a file name contains a NUL byte; send plain base names such as run.sh.")
    if any(ord(c) < 0x20 or c in '\x7f"' or 0xD800 <= ord(c) <= 0xDFFF for c in raw):
        raise bad_request(f"file name {raw[:40]!r} contains control characters or quotes; send plain names.")
    name = os.path.basename(raw.replace("\\", "/")).strip()
    if name in ("", ".", ".."):
        raise bad_request(f"file name {raw!r} has no usable base name; send names such as run.sh or input.pdb.")
    if len(name.encode("utf-8")) > MAX_FILENAME_BYTES:
        raise bad_request(f"file name {name[:40]!r}... is longer than {MAX_FILENAME_BYTES} bytes.")
    return name


def check_envelope(req: falcon.Request, max_bytes: int) -> None:
    """Refuse what is not multipart, or is larger than allowed, before reading the body."""
    if not (req.content_type or "").lower().startswith("multipart/form-data"):
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported media type",
            description="send the job as multipart/form-data (curl -F file=@run.sh -F user_id=1 -F service=NAME).")
    if req.content_length is None and not req.get_header("Transfer-Encoding"):
        raise falcon.HTTPLengthRequired(title="Length required",
                                        description="send a Content-Length header with the upload.")
    if req.content_length is not None and req.content_length > max_bytes:
        raise falcon.HTTPContentTooLarge(
            title="Upload too large",
            description=f"the upload is {req.content_length} bytes; at most {max_bytes} bytes are accepted.")


def receive(req: falcon.Request, staging_root: str, text_fields: set[str], max_bytes: int,
            check: Callable[[dict[str, str], list[str]], T], max_files: int) -> tuple[str, T]:
    """Stream every file part into a new folder under `staging_root`, then `check` the upload.

    `check(fields, file names)` returns the parsed values or raises a 4xx.

    Returns:
        (folder, parsed values). The caller owns the folder: `settle` it or remove it.

    Raises:
        falcon.HTTPError: 4xx naming what was wrong; the folder is already removed then.
    """
    check_envelope(req, max_bytes)
    folder = os.path.join(staging_root, uuid.uuid4().hex)
    os.makedirs(folder)
    try:
        fields: dict[str, str] = {}
        names: list[str] = []
        for part in req.get_media():
            if part.filename is None:
                if part.name not in text_fields:
                    raise bad_request(f"field {part.name!r} is not accepted; send {', '.join(sorted(text_fields))}"
                                      " as text fields and the job's files as file parts.")
                if part.name in fields:
                    raise bad_request(f"field {part.name!r} was sent twice.")
                fields[part.name] = part.get_text()
                continue
            name = safe_name(part.filename)
            if len(names) >= max_files:
                raise falcon.HTTPContentTooLarge(title="Too many files",
                                                 description=f"an upload may hold at most {max_files} files.")
            if name in names:
                raise bad_request(f"two file parts are named {name!r}; every file name must be unique.")
            names.append(name)
            with open(os.path.join(folder, name), "wb") as handle:
                part.stream.pipe(handle)
        return folder, check(fields, names)
    except UnicodeError:
        shutil.rmtree(folder, ignore_errors=True)
        raise bad_request("a part's headers or text are not valid UTF-8.") from None
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def settle(staging: str, final_root: str, record: Callable[[str], R]) -> R:
    """Move a checked upload into `final_root`, then `record` it; on any failure nothing remains."""
    folder = os.path.join(final_root, os.path.basename(staging))
    try:
        os.rename(staging, folder)
        return record(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(staging, ignore_errors=True)
        raise


def require_script(names: list[str]) -> None:
    if not names:
        raise bad_request("no files were sent; a job needs at least run.sh.")
    if REQUIRED_SCRIPT not in names:
        raise bad_request(f"the files ({', '.join(sorted(names)[:10])}) do not include run.sh, which the executor runs.")


def positive_int(fields: dict[str, str], key: str, limit: int = MAX_ID) -> int:
    raw = fields.get(key)
    if raw is None:
        raise bad_request(f"{key} is missing; send it as a positive integer.")
    value = common.positive_int(raw.strip(), limit)
    if value is None:
        raise bad_request(f"{key} must be a positive integer below 2^63, got {raw[:40]!r}.")
    return value
