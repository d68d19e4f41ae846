"""How a node writes its log (conf/logs.py, the keys of conf/settings.py) and the events of a job's
end (storage/job_events.py), in process: the JSON formatter's fixed keys, a record's event and fields
surviving the pickling Thespian uses to carry it to its logger process, the level given to the actor
processes, and the log_level / log_format keys."""
from __future__ import annotations

import io
import json
import logging
import pickle
import sys
from datetime import datetime, timedelta

import pytest
from thespian.system.multiprocCommon import get_min_log_level

from conf import logs
from conf.settings import ConfigError, load_client_config, load_server_config
from storage import job_events
from storage.jobs import JobRef
from storage.states import JobState
from tests.harness import events_heard

T0 = datetime(2026, 11, 30, 4, 0, 0)


def emitted(formatter: logging.Formatter, emit) -> str:
    """What `emit(logger)` writes through a handler with `formatter`."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("orchestrator.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_a_json_event_line_has_the_fixed_keys_first_then_its_own_fields():
    line = emitted(logs.JsonFormatter(), lambda log: logs.event(log, "queued", job=12, user=7, service="example",
                                                                  files=2, bytes=2048, portal=None))
    entry = json.loads(line)
    assert list(entry) == [*logs.JSON_KEYS, "files", "bytes", "portal"]
    assert entry["event"] == "queued" and entry["level"] == "INFO" and entry["logger"] == "orchestrator.test-logs"
    assert (entry["job"], entry["user"], entry["service"], entry["executor"], entry["attempt"]) == (12, 7, "example",
                                                                                                   None, None)
    assert entry["message"] == "queued job=12 user=7 service=example files=2 bytes=2048"
    assert datetime.fromisoformat(entry["ts"]).utcoffset() == timedelta(0)


def test_a_plain_json_line_has_a_null_event_and_its_exception():
    def emit(log):
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed: %s", "why")

    entry = json.loads(emitted(logs.JsonFormatter(), emit))
    assert entry["event"] is None and entry["message"] == "it failed: why" and entry["job"] is None
    assert "ValueError: boom" in entry["exception"]


def test_an_event_and_its_fields_survive_the_pickling_that_carries_a_record_to_thespians_logger():
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("orchestrator.test-pickle")
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        logs.event(log, "dispatched", job=3, service="example", executor="http://127.0.0.1:9000", attempt=2)
    finally:
        log.removeHandler(handler)
    carried = pickle.loads(pickle.dumps(records[0]))

    assert logs.JsonFormatter().format(carried) == logs.JsonFormatter().format(records[0])
    assert carried.event == "dispatched" and carried.fields["attempt"] == 2


@pytest.mark.parametrize("level", list(logs.LEVELS))
def test_the_actor_processes_forward_exactly_the_chosen_level(level):
    """Thespian gives each actor process the lowest level of the logger's config as its threshold."""
    config = logs.logging_config(level, "json")
    assert get_min_log_level(config) == logs.LEVELS[level]
    assert config["formatters"]["chosen"] == {"()": "conf.logs.JsonFormatter"}


def test_configure_sets_the_main_process_and_the_actor_system_alike():
    try:
        logs.configure("warning", "json")
        assert logging.root.level == logging.WARNING
        assert isinstance(logging.root.handlers[0].formatter, logs.JsonFormatter)
        assert logging.root.handlers[0].stream is sys.stderr
        assert logs.actor_system_config() == logs.logging_config("warning", "json")
    finally:
        logs.configure()
    assert logging.root.level == logging.INFO and logs.actor_system_config()["formatters"]["chosen"] == {
        "format": logs.TEXT_FORMAT}


def write(tmp_path, section: str, lines: str) -> str:
    path = tmp_path / "node.ini"
    services = "[service.example]\nclients = http://127.0.0.1:9000\n" if section == "server" else ""
    path.write_text(f"[{section}]\n{lines}\n{services}")
    return str(path)


@pytest.mark.parametrize("section,load", [("server", load_server_config), ("client", load_client_config)])
def test_log_level_and_log_format_default_to_info_and_text_and_are_read_in_any_case(tmp_path, section, load):
    assert (load(write(tmp_path, section, "")).log_level, load(write(tmp_path, section, "")).log_format) == ("info",
                                                                                                            "text")
    config = load(write(tmp_path, section, "log_level = DEBUG\nlog_format = json"))
    assert (config.log_level, config.log_format) == ("debug", "json")
    assert load(write(tmp_path, section, "log_level = debug"), log_level="error").log_level == "error"


@pytest.mark.parametrize("section,load", [("server", load_server_config), ("client", load_client_config)])
@pytest.mark.parametrize("lines,given,words", [
    ("log_level = verbose", None, "log_level must be one of debug, info, warning, error, got 'verbose'"),
    ("log_format = xml", None, "log_format must be one of text, json, got 'xml'"),
    ("", "loud", "--log-level must be one of debug, info, warning, error, got 'loud'"),
])
def test_a_bad_log_key_stops_the_start_with_one_sentence_naming_it(tmp_path, section, load, lines, given, words):
    with pytest.raises(ConfigError) as refused:
        load(write(tmp_path, section, lines), log_level=given)
    assert words in str(refused.value)
    if given is None:
        assert f"[{section}]" in str(refused.value)


def ended_job(state: JobState, started: datetime | None, **extra) -> JobRef:
    return JobRef(5, 7, None, "example", state, "/data/jobs/x", 1 if started else 0,
                  "http://127.0.0.1:9000" if started else None, None, T0, started, T0 + timedelta(seconds=10), **extra)


def test_the_end_of_a_job_that_ran_gives_its_wait_run_and_turnaround_seconds():
    with events_heard() as heard:
        job_events.ended(logging.getLogger("test"), ended_job(JobState.COMPLETED, T0 + timedelta(seconds=2.5),
                                                              exit_code=0))
    # (no registry here: the executor's backend is not known)
    assert heard == [("completed", {"job": 5, "user": 7, "service": "example", "executor": "http://127.0.0.1:9000",
                                    "backend": None, "attempt": 1, "exit_code": 0, "reason": None, "wait_seconds": 2.5,
                                    "run_seconds": 7.5, "turnaround_seconds": 10.0})]


def test_the_end_of_a_job_that_never_started_has_no_wait_or_run_time():
    with events_heard() as heard:
        job_events.ended(logging.getLogger("test"), ended_job(JobState.CANCELLED, None, reason="cancelled on request"))
    name, fields = heard[0]
    assert name == "cancelled" and fields["reason"] == "cancelled on request"
    assert (fields["wait_seconds"], fields["run_seconds"], fields["turnaround_seconds"]) == (None, None, 10.0)
    assert (fields["attempt"], fields["executor"]) == (None, None)
