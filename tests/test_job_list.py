"""`GET /jobs` in process: falcon.testing over a temporary SQLite database (storage/job_list.py,
web/job_list.py): order and paging, every filter, tenancy, every refused query, the query plans."""
from __future__ import annotations

import base64
import threading
from datetime import datetime, timedelta

import falcon.testing
import pytest
import requests

from conf.settings import ServerConfig, ServiceConfig
from storage import job_list, jobs
from storage.models import Job
from storage.states import JobState
from tests.harness import StandInGateway, add_section, bearer, submit
from web.job_list import MAX_LIMIT, encode_cursor
from web.server_app import create_app

T0 = datetime(2026, 11, 1, 12, 0, 0)
HADDOCK = "haddock-token-0123456789abcdef"
PRODIGY = "prodigy-token-0123456789abcdef"
SECRET = "cluster-secret-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"
SERVICES = (ServiceConfig("example"), ServiceConfig("prodigy"))
PORTALS = dict(tokens=(("haddock", HADDOCK), ("prodigy", PRODIGY)), cluster_secret=SECRET,
               operators=(("ops", OPERATOR),))


def app(tmp_path, **settings) -> falcon.testing.TestClient:
    config = ServerConfig(data_dir=str(tmp_path / "data"), services=SERVICES, **settings)
    return falcon.testing.TestClient(create_app(config, StandInGateway(), threading.Event()))


def add(user: int = 1, service: str = "example", portal: str | None = None, minute: float = 0,
        state: JobState | None = None):
    """A job created `minute` minutes after T0; moved to `state` (Running or an outcome)."""
    job_id, view = jobs.create_job(user, service, f"/jobs/{user}", T0 + timedelta(minutes=minute), portal)
    if state in (JobState.RUNNING, JobState.COMPLETED):
        jobs.claim_for_dispatch([job_id], T0)
        jobs.begin_attempts([(job_id, "http://e:1")], T0)
        jobs.mark_running([(job_id, 1)], T0)
        if state is JobState.COMPLETED:
            jobs.finish(job_id, 1, state, T0, exit_code=0)
    elif state is not None:
        jobs.finish(job_id, None, state, T0)
    return view["id"]


def listed(client, token: str | None = None, **params) -> tuple[list, str | None]:
    answer = client.simulate_get("/jobs", params=params, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    return [job["id"] for job in answer.json["jobs"]], answer.json["next_cursor"]


def every_page(client, token: str | None = None, **params) -> list:
    ids, cursor = listed(client, token, **params)
    while cursor is not None:
        more, cursor = listed(client, token, cursor=cursor, **params)
        ids += more
    return ids


def refusal(client, token: str | None = None, query: str = "") -> str:
    answer = client.simulate_get("/jobs", query_string=query, headers=bearer(token))
    assert answer.status_code == 400, (query, answer.status_code, answer.text)
    return answer.json["description"]


# --- order and paging ----------------------------------------------------------------------------

def test_jobs_come_newest_first_in_pages_whose_cursor_leads_to_the_next_until_none_is_left(tmp_path, clean_database):
    made = [add(user=n % 3 + 1, minute=n, service=("example", "prodigy")[n % 2]) for n in range(7)]
    client = app(tmp_path)
    first, cursor = listed(client, limit=3)
    assert first == made[::-1][:3] and cursor is not None
    assert every_page(client, limit=3) == made[::-1]
    assert listed(client, limit=7)[1] is None  # exactly all: no empty page to ask for
    assert listed(client)[0] == made[::-1]  # limit 100 by default


def test_a_page_is_the_same_however_many_jobs_arrived_after_the_first(tmp_path, clean_database):
    older = [add(minute=n, state=(None, JobState.COMPLETED, JobState.FAILED)[n % 3]) for n in range(6)]
    client = app(tmp_path)
    seen, cursor = listed(client, limit=2)
    while cursor is not None:
        add(minute=100 + len(seen))  # a new upload between every two pages
        more, cursor = listed(client, limit=2, cursor=cursor)
        seen += more
    assert seen == older[::-1]


def test_jobs_created_in_the_same_microsecond_are_ordered_by_number_and_none_is_skipped(tmp_path, clean_database):
    made = [add(minute=1, state=(None, JobState.CANCELLED)[n % 2]) for n in range(5)]
    assert every_page(app(tmp_path), limit=2) == made[::-1]


# --- filters -------------------------------------------------------------------------------------

@pytest.fixture
def mixed(clean_database) -> dict[str, list]:
    """Jobs of users 1 and 2 in both services and several states, created a minute apart."""
    kinds = [(1, "example", None), (2, "example", JobState.RUNNING), (1, "prodigy", JobState.COMPLETED),
             (2, "prodigy", None), (1, "example", JobState.FAILED), (1, "example", JobState.CANCELLED)]
    return {"all": [(add(user, service, minute=n, state=state), user, service, (state or JobState.QUEUED).value, n)
                    for n, (user, service, state) in enumerate(kinds)][::-1]}


def test_each_filter_and_their_combinations_list_exactly_the_matching_jobs(tmp_path, mixed):
    client = app(tmp_path)
    rows = mixed["all"]

    def expect(keep):
        return [job_id for job_id, user, service, state, minute in rows if keep(user, service, state, minute)]

    assert listed(client, user_id=1)[0] == expect(lambda u, s, st, m: u == 1)
    assert listed(client, service="prodigy")[0] == expect(lambda u, s, st, m: s == "prodigy")
    assert listed(client, status="Queued")[0] == expect(lambda u, s, st, m: st == "Queued")
    assert listed(client, status=["Running", "Failed"])[0] == expect(lambda u, s, st, m: st in ("Running", "Failed"))
    assert listed(client, status="Running,Failed")[0] == expect(lambda u, s, st, m: st in ("Running", "Failed"))
    assert listed(client, created_after="2026-11-01T12:02:00Z")[0] == expect(lambda u, s, st, m: m > 2)
    assert listed(client, created_before="2026-11-01T13:02:00+01:00")[0] == expect(lambda u, s, st, m: m < 2)
    assert listed(client, created_after="2026-11-01T12:00:30", created_before="2026-11-01T12:04:00")[0] == \
        expect(lambda u, s, st, m: 0.5 < m < 4)
    assert listed(client, created_after="2026-11-02")[0] == []
    assert listed(client, user_id=1, service="example", status=["Queued", "Cancelled"])[0] == \
        expect(lambda u, s, st, m: u == 1 and s == "example" and st in ("Queued", "Cancelled"))
    assert every_page(client, user_id=1, service="example", limit=1) == expect(lambda u, s, st, m: u == 1 and s == "example")


def test_a_service_no_longer_configured_can_be_listed_while_it_has_jobs(tmp_path, clean_database):
    gone = add(service="haddock")
    add()
    assert listed(app(tmp_path), service="haddock")[0] == [gone]



def test_a_portal_cannot_learn_which_retired_services_other_portals_used(tmp_path, clean_database):
    """A service no longer configured is a filter only for a caller that has jobs of it: another
    portal's answer would otherwise tell it that someone used that service."""
    gone = add(service="haddock", portal="haddock")
    client = app(tmp_path, **PORTALS)
    assert listed(client, HADDOCK, service="haddock")[0] == [gone]
    assert listed(client, OPERATOR, service="haddock")[0] == [gone]
    assert client.simulate_get("/jobs", params={"service": "haddock"}, headers=bearer(PRODIGY)).status_code == 400

# --- tenancy -------------------------------------------------------------------------------------

def test_a_portal_lists_only_its_own_jobs_and_an_operator_every_portals(tmp_path, clean_database):
    haddock = [add(portal="haddock", minute=n, user=1 + n % 2) for n in range(3)]
    prodigy = [add(portal="prodigy", minute=10 + n) for n in range(2)]
    client = app(tmp_path, **PORTALS)

    assert every_page(client, HADDOCK, limit=2) == haddock[::-1]
    assert listed(client, HADDOCK, user_id=1)[0] == [haddock[2], haddock[0]]
    assert listed(client, PRODIGY)[0] == prodigy[::-1]
    assert every_page(client, OPERATOR, limit=2) == (haddock + prodigy)[::-1]
    assert listed(client, OPERATOR, portal="haddock", user_id=2)[0] == [haddock[1]]
    assert client.simulate_get("/jobs").status_code == 401
    assert client.simulate_get("/jobs", headers=bearer(SECRET)).status_code == 401  # no portal's, no operator's


def test_a_portal_may_name_itself_as_portal_and_no_other(tmp_path, clean_database):
    add(portal="haddock")
    client = app(tmp_path, **PORTALS)
    assert "portal may only be 'haddock'" in refusal(client, HADDOCK, "portal=prodigy")
    assert listed(client, HADDOCK, portal="haddock")[0] == listed(client, HADDOCK)[0]
    assert "send one of: haddock, prodigy" in refusal(client, OPERATOR, "portal=nobody")


def test_another_portals_cursor_is_refused_like_one_that_names_no_job(tmp_path, clean_database):
    theirs = add(portal="prodigy")
    client = app(tmp_path, **PORTALS)
    assert "cursor is not one this server gave" in refusal(client, HADDOCK, f"cursor={encode_cursor(theirs)}")
    assert listed(client, PRODIGY, cursor=encode_cursor(theirs))[0] == []


def test_without_tokens_every_loopback_caller_lists_the_jobs_by_number(tmp_path, clean_database):
    made = [add(minute=n) for n in range(3)]
    assert every_page(app(tmp_path), limit=1) == made[::-1] and all(isinstance(i, int) for i in made)


# --- refusals ------------------------------------------------------------------------------------

def _grouped(job_ref, group: str) -> None:
    """Give a job a group, as an upload with `group` does."""
    with job_list.db_session:
        job = Job.get(public_id=job_ref) if isinstance(job_ref, str) else Job[job_ref]
        job.group = group


def test_the_group_filter_lists_exactly_that_groups_jobs_of_the_callers_portal(tmp_path, clean_database):
    made = {}
    for n, (user, portal, group, state) in enumerate([
            (1, "haddock", "class-a", None), (2, "haddock", "class-a", JobState.COMPLETED),
            (3, "haddock", "class-b", None), (1, "haddock", None, None),
            (1, "prodigy", "class-a", None),  # another portal's class-a: another group
            (2, "haddock", "class-a", JobState.FAILED)]):
        made[n] = add(user, portal=portal, minute=n, state=state)
        if group:
            _grouped(made[n], group)
    client = app(tmp_path, **PORTALS)
    assert every_page(client, HADDOCK, group="class-a", limit=1) == [made[5], made[1], made[0]]
    assert listed(client, HADDOCK, group="class-a", user_id=2)[0] == [made[5], made[1]]
    assert listed(client, HADDOCK, group="class-a", status="Queued")[0] == [made[0]]
    assert listed(client, HADDOCK, group="class-b", service="prodigy")[0] == []
    assert listed(client, PRODIGY, group="class-a")[0] == [made[4]]
    assert listed(client, HADDOCK, group="nobody")[0] == []  # a group is a label: an unknown one lists nothing
    assert listed(client, OPERATOR, group="class-a")[0] == [made[5], made[4], made[1], made[0]]
    assert listed(client, OPERATOR, group="class-a", portal="prodigy")[0] == [made[4]]


@pytest.mark.parametrize("query, says", [
    ("page=2", "unknown parameter 'page'; accepted: user_id, service, status, created_after, created_before, portal"),
    ("user_id=0", "user_id must be a positive integer"),
    ("user_id=x", "user_id must be a positive integer"),
    ("user_id=", "user_id must be a positive integer"),
    ("user_id=1&user_id=2", "user_id may be given once"),
    ("service=nope", "service 'nope' has no jobs here; send one of: example, prodigy"),
    ("service=", "has no jobs here"),
    ("status=Done", "send one or more of: Queued, Dispatching, Submitted, Running, Completed, Failed, Cancelled"),
    ("status=Queued&status=queued", "status 'queued' is not a job state"),
    ("status=", "is not a job state"),
    ("created_after=yesterday", "created_after must be an ISO 8601 date or time"),
    ("created_before=2026-13-01", "created_before must be an ISO 8601"),
    ("created_before=0001-01-01T00:00:00%2B01:00", "created_before must be an ISO 8601"),
    ("created_after=9999-12-31T23:59:59-01:00", "created_after must be an ISO 8601"),
    ("group=", "group must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-', as at upload; got ''"),
    ("group=class%20a", "group must be 1 to 64 characters"),
    ("group=" + "g" * 65, "group must be 1 to 64 characters"),
    ("group=caf%C3%A9", "group must be 1 to 64 characters"),
    ("group=a&group=b", "group may be given once"),
    ("limit=0", f"limit must be an integer from 1 to {MAX_LIMIT}"),
    (f"limit={MAX_LIMIT + 1}", "limit must be an integer from 1"),
    ("limit=ten", "limit must be an integer from 1"),
    ("portal=haddock", "this server has no portals (no tokens): leave portal out"),
    ("cursor=", "cursor is not one this server gave"),
    ("cursor=%%%", "cursor is not one this server gave"),
    ("cursor=" + base64.urlsafe_b64encode(b"\x02" + b"1").decode(), "cursor is not one this server gave"),
    ("cursor=" + base64.urlsafe_b64encode(b"\x01" + b"-1").decode(), "cursor is not one this server gave"),
    ("cursor=" + base64.urlsafe_b64encode(b"\x01" + b"999").decode(), "cursor is not one this server gave"),
    ("cursor=" + base64.urlsafe_b64encode(b"\x01\xff\xfe").decode(), "cursor is not one this server gave"),
])
def test_every_bad_query_is_a_400_saying_what_is_accepted(tmp_path, clean_database, query, says):
    add()
    assert says in refusal(app(tmp_path), query=query)


def test_a_cursor_altered_by_hand_is_refused(tmp_path, clean_database):
    for n in range(3):
        add(portal="haddock", minute=n)
    client = app(tmp_path, **PORTALS)
    cursor = listed(client, HADDOCK, limit=1)[1]
    # NOTE: every character replaced by each of several others, the last one (whose low bits
    # base64 leaves unused) included.
    for position in range(len(cursor)):
        for other in set("ABCDb7-_") - {cursor[position]}:
            changed = cursor[:position] + other + cursor[position + 1:]
            answer = client.simulate_get("/jobs", params={"cursor": changed}, headers=bearer(HADDOCK))
            assert answer.status_code == 400, (changed, answer.text)
    assert client.simulate_get("/jobs", params={"cursor": cursor + "="}, headers=bearer(HADDOCK)).status_code == 400


# --- the query plans: every combination walks an index in page order, never the table ------------------

@pytest.mark.parametrize("user_id", [None, 7])
@pytest.mark.parametrize("group", [None, "class-a"])
@pytest.mark.parametrize("created", [False, True])
@pytest.mark.parametrize("after", [None, ("2026-11-01 12:00:00.000000", 10)])
def test_every_walk_reads_an_index_in_page_order_and_sorts_nothing(clean_database, user_id, group, created, after):
    query = job_list.Query(scope="haddock", user_id=user_id, group=group, created_after=T0 if created else None,
                           created_before=T0 if created else None, after=after)
    for portal in ("haddock", None):
        sql, params = job_list.walk_sql(portal, "example", "Queued", query)
        with job_list.db_session:
            plan = " | ".join(row[-1] for row in job_list.execute("EXPLAIN QUERY PLAN " + sql, params))
        # NOTE: with both a user and a group, either index is a short walk (all four columns equal).
        indexes = {"idx_job__portal_user_id_service_state_created_at"} if user_id else set()
        indexes |= {"idx_job__portal_job_group_service_state_created_at"} if group else set()
        indexes = indexes or {"idx_job__portal_service_state_created_at"}
        assert any(f"INDEX {index} (portal" in plan for index in indexes) and "TEMP B-TREE" not in plan, plan
        assert ("created_at<" in plan or "created_at>" in plan) == (created or after is not None), plan


# --- real processes: a server with two portals and an operator -----------------------------------

@pytest.fixture(scope="module")
def portals_server(module_cluster):
    """A server with two portals and an operator, and no executor that answers: jobs stay Queued
    until cancelled, so the listing sees exactly what the test made."""
    unreachable = {"clients": "http://127.0.0.1:9"}
    server = module_cluster.server({"example": unreachable, "prodigy": unreachable},
                                   tokens={"haddock": HADDOCK, "prodigy": PRODIGY}, cluster_secret=SECRET, start=False)
    return add_section(server, "operators", {"ops": OPERATOR}).start()


def live(server, token: str | None, **params) -> requests.Response:
    return requests.get(f"{server.url}/jobs", params=params, headers=bearer(token), timeout=10)


def test_paging_through_a_portals_jobs_while_uploads_arrive_shows_each_older_job_once(portals_server):
    older = [submit(portals_server, "true", user_id=1 + n % 3, token=HADDOCK) for n in range(10)]
    theirs = submit(portals_server, "true", token=PRODIGY)
    seen, arrived, cursor = [], [], None
    while True:
        answer = live(portals_server, HADDOCK, limit=3, **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        seen += [job["id"] for job in answer.json()["jobs"]]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
        arrived += [submit(portals_server, "true", user_id=9, token=token) for token in (HADDOCK, PRODIGY)]
    # Every job older than the first page once, newest first; none that came after it; nothing of prodigy's.
    assert len(arrived) == 2 * 3 and seen == older[::-1] and theirs not in seen
    assert [job["id"] for job in live(portals_server, HADDOCK, limit=4).json()["jobs"]] == arrived[-2::-2] + older[-1:]


def test_portals_are_isolated_and_the_operator_sees_and_filters_every_portal(portals_server):
    mine = [submit(portals_server, "true", user_id=5, service=service, token=PRODIGY)
            for service in ("example", "prodigy", "prodigy")]
    assert requests.post(f"{portals_server.url}/jobs/{mine[1]}/cancel", headers=bearer(PRODIGY), timeout=10).ok
    haddocks = live(portals_server, HADDOCK, limit=1000).json()["jobs"]

    prodigy = [job["id"] for job in live(portals_server, PRODIGY, limit=1000).json()["jobs"]]
    assert prodigy[:3] == mine[::-1] and not {job["id"] for job in haddocks} & set(prodigy)
    everything = [job["id"] for job in live(portals_server, OPERATOR, limit=1000).json()["jobs"]]
    assert sorted(everything) == sorted(prodigy + [job["id"] for job in haddocks])
    assert [job["id"] for job in live(portals_server, OPERATOR, portal="prodigy", user_id=5, service="prodigy",
                                      status="Cancelled").json()["jobs"]] == [mine[1]]
    assert [job["id"] for job in live(portals_server, PRODIGY, status=["Queued", "Cancelled"], service="prodigy",
                                      user_id=5).json()["jobs"]] == [mine[2], mine[1]]
    alone = requests.get(f"{portals_server.url}/jobs/{mine[2]}", headers=bearer(PRODIGY), timeout=5).json()
    alone.pop("queue")  # the job's own view says why it waits; the list does not work that out per job
    assert live(portals_server, PRODIGY, user_id=5).json()["jobs"][0] == alone  # the same view

    # Another portal's cursor names no job of this one; nor does a portal's filter open another portal.
    cursor = live(portals_server, HADDOCK, limit=1).json()["next_cursor"]
    assert live(portals_server, PRODIGY, cursor=cursor).status_code == 400
    assert live(portals_server, PRODIGY, portal="haddock").status_code == 400
    assert live(portals_server, None).status_code == 401
    assert live(portals_server, PRODIGY, page="2").json()["description"].startswith("unknown parameter 'page'")
