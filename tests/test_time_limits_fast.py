"""Time limits without processes: the service's max_runtime setting, the upload's max_runtime field
(falcon.testing, the server's and the executor's), which running tasks are over their limit at
`now`, and a limit as Slurm's --time.

The limits on real processes are in tests/test_time_limits.py (local) and tests/test_slurm_jobs.py.
"""
from __future__ import annotations

import pytest
from pony.orm import db_session, select

from actors.node.backends.slurm_cli import slurm_seconds, time_limit_args
from actors.node.job_limits import overdue, time_limit_reason
from conf.settings import ConfigError, ServiceConfig, load_server_config
from storage import jobs
from storage.models import Job
from storage.node.models import Task
from tests.harness import GOOD, make_server
from tests.test_executor_http import BUNDLE, make_node

LIMITED = (ServiceConfig("example", clients=("http://127.0.0.1:9",), max_runtime=60), ServiceConfig("prodigy"))


# --- the setting --------------------------------------------------------------------------------

def service_section(tmp_path, line: str) -> ServiceConfig:
    path = tmp_path / "server.ini"
    path.write_text(f"[server]\n[service.example]\nclients = http://h:1\n{line}\n")
    return load_server_config(str(path), environ={}).service("example")


def test_a_services_max_runtime_is_seconds_and_empty_or_absent_means_none(tmp_path):
    assert service_section(tmp_path, "max_runtime = 3600").max_runtime == 3600
    assert service_section(tmp_path, "max_runtime =").max_runtime is None
    assert service_section(tmp_path, "").max_runtime is None


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "an hour", str(10 * 365 * 24 * 3600 + 1)])
def test_a_bad_max_runtime_stops_start_up_naming_the_key(tmp_path, value):
    with pytest.raises(ConfigError, match=r"\[service.example\] max_runtime must be"):
        service_section(tmp_path, f"max_runtime = {value}")


# --- the upload's field ---------------------------------------------------------------------------

@db_session
def limits() -> list[int | None]:
    return [job.max_runtime for job in Job.select().order_by(Job.id)]


@pytest.mark.parametrize("services, asked, stored", [
    (LIMITED, "30", 30),      # the upload's, below the service's
    (LIMITED, "60", 60),      # up to the service's
    (LIMITED, None, 60),      # the service's applies to a job without its own
    (LIMITED, " ", 60),       # an empty field is no field
    (None, "86400", 86400),   # a service without one takes any
    (None, None, None),       # neither: no limit
])
def test_an_uploads_limit_is_its_max_runtime_else_its_services_and_is_in_its_view(tmp_path, clean_database, services,
                                                                                   asked, stored):
    server = make_server(tmp_path, **({"services": services} if services else {}))

    response = server.upload({**GOOD, **({"max_runtime": asked} if asked is not None else {})})

    assert response.status_code == 200, response.text
    assert response.json["max_runtime"] == stored and limits() == [stored]
    assert jobs.get_ref(only_job()).max_runtime == stored  # what the dispatcher sends
    assert server.client.simulate_get(f"/jobs/{response.json['id']}").json["max_runtime"] == stored
    assert server.client.simulate_get("/jobs").json["jobs"][0]["max_runtime"] == stored


@db_session
def only_job() -> int:
    return Job.select().first().id


@pytest.mark.parametrize("services, asked, accepted", [
    (LIMITED, "-1", "from 1 to 60 (the service's max_runtime)"),
    (LIMITED, "0", "from 1 to 60"),
    (LIMITED, "abc", "from 1 to 60"),
    (LIMITED, "61", "from 1 to 60 (the service's max_runtime), got '61'"),
    (LIMITED, "1.5", "from 1 to 60"),
    (None, "0", f"from 1 to {10 * 365 * 24 * 3600} (ten years), got '0'"),
])
def test_a_bad_max_runtime_is_400_saying_what_is_accepted_and_stores_nothing(tmp_path, clean_database, services,
                                                                             asked, accepted):
    server = make_server(tmp_path, **({"services": services} if services else {}))

    response = server.upload({**GOOD, "max_runtime": asked})

    assert response.status_code == 400, response.text
    assert f"max_runtime must be a whole number of seconds {accepted}" in response.json["description"]
    assert limits() == [] and server.leftovers() == [] and server.gateway.sent == []


def test_the_executor_stores_the_limit_the_server_sends_and_refuses_a_bad_one(tmp_path, clean_node_database):
    node = make_node(tmp_path)

    assert node.submit({**BUNDLE, "max_runtime": "0"}).status_code == 400
    limited = node.submit({**BUNDLE, "max_runtime": "2"})
    unlimited = node.submit({**BUNDLE, "job_uid": "other-uid"})

    assert limited.status_code == 200 and limited.json["max_runtime"] == 2
    assert unlimited.status_code == 200 and unlimited.json["max_runtime"] is None
    with db_session:
        assert sorted(select(t.max_runtime for t in Task).without_distinct(), key=str) == [2, None]


# --- the local backend's decision ---------------------------------------------------------------

def test_a_task_is_over_its_limit_once_it_ran_its_seconds_and_not_before():
    started = {1: 100.0, 2: 100.0, 3: 99.0, 4: 100.0}
    limits = {1: 2, 2: 5, 3: 5, 5: 1}  # 4 has no limit; 5 is not running

    assert overdue(started, limits, now=101.9) == []
    assert overdue(started, limits, now=102.0) == [1]
    assert overdue(started, limits, now=104.0) == [1, 3]
    assert overdue(started, limits, now=1e9) == [1, 2, 3]
    assert overdue(started, {}, now=1e9) == []


def test_the_reason_names_the_limit_in_seconds():
    assert time_limit_reason(2) == "time limit (2 s)"


# --- Slurm's --time -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("5", 300), ("5:30", 330), ("1:00:00", 3600), ("2-0", 172800), ("1-2:3", 93780), ("1-2:3:4", 93784),
    ("INFINITE", None), ("UNLIMITED", None), ("0", None), ("0:00", None), ("an hour", None), ("", None),
    ("1:2:3:4", None),
])
def test_slurm_times_read_as_seconds(text, seconds):
    assert slurm_seconds(text) == seconds


@pytest.mark.parametrize("operator, max_runtime, args, limit", [
    ((), None, (), None),                                              # no limit: nothing added
    (("--time=5",), None, ("--time=5",), None),                        # the operator's alone stays
    ((), 60, ("--time=1",), 60),                                       # whole minutes
    ((), 61, ("--time=2",), 61),                                       # rounded up
    (("--mem=5G", "--time=30"), 90, ("--mem=5G", "--time=2"), 90),     # the job's is smaller: it wins
    (("-t", "30"), 90, ("--time=2",), 90),
    (("-t30",), 90, ("--time=2",), 90),
    (("--time", "1"), 3600, ("--time", "1"), 60),                      # the operator's is smaller: it stays
    (("--time=1-0", "--time-min=5"), 60, ("--time-min=5", "--time=1"), 60),
    (("--time=UNLIMITED",), 60, ("--time=1",), 60),
    (("--time=0",), 600, ("--time=10",), 600),                         # 0 is Slurm's "no limit"
])
def test_a_jobs_limit_becomes_its_time_in_minutes_and_the_smaller_limit_wins(operator, max_runtime, args, limit):
    assert time_limit_args(operator, max_runtime) == (args, limit)
