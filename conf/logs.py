"""How the orchestrator records what it does: one call per job or executor event.

Runs in every process of a node (main process, actors). `event` writes one INFO line (DEBUG for
decisions that hold a job back) naming the event and its fields, as `queued job=12 user=7
service=example files=2 bytes=2048`; the fields also travel on the record (`record.event`,
`record.fields`), so a JSON formatter can write them as keys. Whatever else wants to know of each
event (the metrics) registers a listener here, so that each event is reported in one place.
"""
from __future__ import annotations

import json
import logging
import logging.config
import sys
from datetime import datetime, timezone
from typing import Callable

#: The events of a job's life (and of an upload refused).
JOB_EVENTS = ("rejected", "queued", "admitted", "dispatched", "running", "completed", "failed", "cancelled",
              "requeued", "retrieved", "cleaned")
#: The events of an executor as the server sees it.
EXECUTOR_EVENTS = ("registered", "alive", "lost", "draining", "gone")

#: Called with (event name, fields) for every event, whatever the log level.
LISTENERS: list[Callable[[str, dict], None]] = []


def event(log: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log the event `name` with its `fields` (None values are left out of the text line) and tell
    the listeners."""
    for listener in LISTENERS:
        try:
            listener(name, fields)
        except Exception:  # noqa: BLE001 — a listener's bug must not stop the job's way
            log.exception("a listener of %r events failed", name)
    if not log.isEnabledFor(level):
        return
    shown = " ".join(f"{key}={_shown(value)}" for key, value in fields.items() if value is not None)
    log.log(level, "%s %s", name, shown, extra={"event": name, "fields": fields})


def _shown(value) -> str:
    text = str(value)
    return repr(text) if (not text or any(c.isspace() or c in "\"'=" for c in text)) else text


# --- how a node writes its log: level and format (main process, actor processes, Thespian's logger) ---

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
#: The keys of every JSON line, in this order, before the event's other fields.
JSON_KEYS = ("ts", "level", "logger", "event", "message", "job", "user", "service", "executor", "attempt")
#: Loggers that talk too much below WARNING: every HTTP call of urllib3, waitress's queue depth.
QUIET = {"urllib3": "WARNING", "waitress.queue": "ERROR"}

#: This node's (level, format), set by `configure`; the actor system's logger is built from it.
_chosen = ("info", "text")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: JSON_KEYS always (null when not given), then the event's other fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        line = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None),
            "message": record.getMessage(),
        }
        for key in JSON_KEYS[5:]:
            line[key] = fields.get(key)
        for key, value in fields.items():
            line.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:  # NOTE: Thespian's forwarder formats the traceback into exc_text itself
            line["exception"] = record.exc_text
        return json.dumps(line, default=str)


def formatter_config(fmt: str) -> dict:
    """The dictConfig entry of the formatter for `fmt` (text or json)."""
    return {"()": f"{__name__}.JsonFormatter"} if fmt == "json" else {"format": TEXT_FORMAT}


def logging_config(level: str, fmt: str) -> dict:
    """The dictConfig of a node's log: everything to stderr at `level`, in `fmt`."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"chosen": formatter_config(fmt)},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "chosen",
                                "level": level.upper(), "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        # NOTE: only those above `level`: Thespian's actor processes forward whatever reaches the
        # lowest level named here.
        "loggers": {name: {"level": quiet} for name, quiet in QUIET.items() if LEVELS[quiet.lower()] > LEVELS[level]},
    }


def configure(level: str = "info", fmt: str = "text") -> None:
    """Write this process's log to stderr at `level` in `fmt`; the actor system started after this
    logs the same way (`actor_system_config`)."""
    global _chosen
    _chosen = (level, fmt)
    for handler in list(logging.root.handlers):  # NOTE: importing Thespian gives the root a default handler
        logging.root.removeHandler(handler)
    logging.config.dictConfig(logging_config(level, fmt))


def own_lines_to_stderr() -> None:
    """In an actor process: write the orchestrator's own lines (its events among them) straight to
    the node's stderr, at the node's level and in its format, like the main process.

    NOTE: through Thespian's logger process each line costs a pickled TCP message and its
    acknowledgement: at INFO, about a tenth of a drain's CPU more (bench.cpu). Other loggers' lines
    (Thespian's, libraries') still go that way, in the same format. Forked from the main process,
    this one knows its choice.
    """
    own = logging.getLogger("orchestrator")
    if own.handlers:
        return
    level, fmt = _chosen
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    own.addHandler(handler)
    own.setLevel(LEVELS[level])
    own.propagate = False


def actor_system_config() -> dict:
    """The dictConfig for the actor system's logger process, which writes the actor processes' lines
    other than the orchestrator's own: the same level and format as the node's main process. Records
    reach it pickled whole, so `record.event` and `record.fields` would arrive with them too."""
    return logging_config(*_chosen)
