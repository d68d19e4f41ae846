"""The executor table's states and the node's notices, without processes: the state rules
(actors/server/executor_states.py), the registry at a server's start (storage/executors.py), and
what an executor node says of a server that does not answer or does not know its service
(actors/node/reporter.py)."""
from __future__ import annotations

import logging
from datetime import datetime

import pytest

from actors.node.reporter import outage_notice, unknown_service_sentence
from actors.server.executor_states import after_contact, after_silence
from conf.settings import ClientConfig
from storage import executors

TIMEOUT = 30.0


# --- the state rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("previous, draining, leaving, expected", [
    ("unknown", False, False, ("alive", "alive")),
    ("lost", False, False, ("alive", "alive")),
    ("alive", False, False, ("alive", None)),
    ("alive", True, False, ("draining", "draining")),
    ("draining", True, False, ("draining", None)),
    ("draining", False, False, ("alive", "alive")),
    ("draining", True, True, ("gone", "gone")),
    ("gone", True, False, ("gone", None)),  # still answering for the moment it takes to stop
    ("gone", False, False, ("alive", "alive")),  # started again
])
def test_the_state_after_an_executor_answers(previous, draining, leaving, expected):
    assert after_contact(previous, draining, leaving) == expected


@pytest.mark.parametrize("previous, holds_jobs, silent_for, expected", [
    ("alive", False, TIMEOUT, ("alive", None)),  # not yet
    ("alive", False, TIMEOUT + 1, ("lost", "lost")),
    ("draining", False, TIMEOUT + 1, ("lost", "lost")),
    ("lost", True, TIMEOUT * 9, ("lost", None)),  # said once
    ("unknown", False, TIMEOUT * 9, ("unknown", None)),  # never heard from: not a fault
    ("unknown", True, TIMEOUT + 1, ("lost", "lost")),  # but its jobs must run elsewhere
    ("gone", False, TIMEOUT * 9, ("gone", None)),
    ("gone", True, TIMEOUT + 1, ("lost", "lost")),  # it left with a result not fetched
])
def test_the_state_of_an_executor_that_does_not_answer(previous, holds_jobs, silent_for, expected):
    assert after_silence(previous, holds_jobs, silent_for, TIMEOUT) == expected


# --- the registry at the server's start -----------------------------------------------------------

def test_at_the_start_nothing_heard_before_is_known_and_every_configured_executor_is_listed(clean_database):
    seen = datetime(2026, 1, 2, 3, 4, 5)
    for url, state in (("http://a:1", "alive"), ("http://b:1", "draining"), ("http://c:1", "lost"),
                       ("http://d:1", "gone")):
        executors.record(url, "example", 2, state, seen, registered=True, error=f"{url} failed")
    executors.record("http://old:1", "removed", 3, "alive", seen, registered=True)

    executors.server_started({"http://a:1": "example", "http://new:1": "prodigy"})

    listed = {row.url: row for row in executors.rows()}
    assert {url: row.state for url, row in listed.items()} == {
        "http://a:1": "unknown", "http://b:1": "unknown", "http://c:1": "unknown", "http://d:1": "gone",
        "http://old:1": "unknown", "http://new:1": "unknown"}
    assert (listed["http://old:1"].service, listed["http://old:1"].slots) == ("removed", 3)
    assert (listed["http://c:1"].last_seen, listed["http://c:1"].last_error) == (seen, "http://c:1 failed")
    assert (listed["http://new:1"].service, listed["http://new:1"].last_seen) == ("prodigy", None)
    assert executors.gone() == {"http://d:1"}


def test_record_says_when_an_executor_registers_for_the_first_time(clean_database):
    assert executors.record("http://a:1", "example", 2, "alive", None, registered=True)
    assert not executors.record("http://a:1", "example", 2, "alive", None, registered=True)
    executors.record("http://b:1", "example", 2, "unknown", None)  # configured: not registered
    assert executors.record("http://b:1", "example", 2, "alive", None, registered=True)


# --- the node's notices ---------------------------------------------------------------------------

@pytest.mark.parametrize("said, reached, down_for, expected", [
    (None, False, 0, logging.INFO),  # the server is not up yet: said once, quietly
    (logging.INFO, False, TIMEOUT, None),
    (logging.INFO, False, TIMEOUT + 1, logging.WARNING),  # down for longer than its executor_timeout
    (logging.WARNING, False, TIMEOUT * 9, None),
    (None, True, 0, logging.WARNING),  # it answered before
    (logging.WARNING, True, 5, None),
])
def test_what_a_node_says_of_a_server_that_does_not_answer(said, reached, down_for, expected):
    assert outage_notice(said, reached, down_for, TIMEOUT) == expected


def test_a_node_of_a_service_the_server_does_not_know_says_how_to_add_it_in_one_sentence():
    config = ClientConfig(service="haddock", port=9002, server_url="http://127.0.0.1:5000")

    sentence = unknown_service_sentence(config)

    assert sentence == ("the server at http://127.0.0.1:5000 does not know service 'haddock': add a "
                        "[service.haddock] section to its server.ini (or set "
                        "SERVICE_HADDOCK_UPLOAD_URL=http://127.0.0.1:9002 in its environment), restart the "
                        "server, then start this node again")
