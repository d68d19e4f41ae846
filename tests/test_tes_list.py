"""`GET /ga4gh/tes/v1/tasks` as indexed queries (storage/tes_tasks.py `page`), without processes:
every filter gives exactly the tasks the views' state mapping and the documents' tags and names
say, in order, over pages; and every walk reads an index in page order (SQLite's query plans)."""
from __future__ import annotations

import itertools

import pytest
from pony.orm import db_session

from storage import jobs, tes_tasks
from storage.clock import utcnow
from storage.models import Job
from web.tes import views

#: (job state, outcome, exit code, reason): every way a job can stand, Failed ones of both kinds.
STANDINGS = [
    ("Queued", None, None, None), ("Dispatching", None, None, None), ("Submitted", None, None, None),
    ("Running", None, None, None), ("Completed", "Completed", 0, None),
    ("Failed", "Failed", 3, "run.sh exited with code 3"), ("Failed", "Failed", 137, "the job ran longer than max_runtime"),
    ("Failed", "Failed", None, "executor lost 3 times"), ("Failed", "Failed", 0, "run.sh exited with code 0"),
    ("Cancelled", "Cancelled", None, "cancelled on request"), ("Cleaned", "Completed", 0, None),
    ("Cleaned", "Failed", 2, "run.sh exited with code 2"), ("Cleaned", "Failed", None, "TES input /d/x: refused"),
    ("Cleaned", "Cancelled", None, None), ("Cleaned", None, None, None),
]
#: Names that sort around the prefixes asked for (a collation ignoring punctuation would not).
NAMES = ["a-b", "ab", "a.", "a", "a-", "b", "", "a-\U0010ffff", "é-x", "\U0010ffffz"]
PREFIXES = ["a-", "a", "ab", "é", "\U0010ffff", "zz"]


def make(portal: str | None, n: int) -> tuple[int, dict]:
    """A task of `portal` standing as STANDINGS[n % ...], with a name and tags that vary with `n`."""
    state, outcome, exit_code, reason = STANDINGS[n % len(STANDINGS)]
    tags = {"user_id": str(n % 3), "parity": "odd" if n % 2 else "even", **({"rare": "yes"} if n % 7 == 0 else {})}
    document = {"name": NAMES[n % len(NAMES)], "tags": tags, "executors": []}
    job_id, _ = jobs.create_job(n % 3, "example", "/none", utcnow(), portal, also=tes_tasks.writer(document, portal))
    with db_session:
        job = Job[job_id]
        job.state, job.outcome, job.exit_code, job.reason = state, outcome, exit_code, reason
    return job_id, document


@pytest.fixture
def tasks(clean_database):
    """60 tasks: 45 of portal `haddock`, 8 of `prodigy`, 7 without a portal; and one portal job."""
    jobs.create_job(1, "example", "/none", utcnow(), "haddock")  # an upload: no task
    made = {}
    for n in range(60):
        portal = "haddock" if n % 8 < 6 else "prodigy" if n % 8 == 6 else None
        job_id, document = make(portal, n)
        made[job_id] = (portal, document)
    return made


@db_session
def standings() -> dict[int, str]:
    """Each job's TES state, by the views' own mapping."""
    return {job.id: views.tes_state(job.state, job.outcome, job.exit_code, job.reason) for job in Job.select()}


def expected(tasks: dict, standing: dict[int, str], portal: str | None, filters: tes_tasks.Filters) -> list[int]:
    """What the list must answer, from the views' state mapping (`standings`) and the documents."""
    return [job_id for job_id, (owner, document) in sorted(tasks.items(), reverse=True)
            if portal in (owner, jobs.EVERY_PORTAL) and document["name"].startswith(filters.name_prefix)
            and (filters.state is None or standing[job_id] == filters.state)
            and all(key in document["tags"] and (not value or document["tags"][key] == value)
                    for key, value in filters.tags)]


def listed(portal: str | None, filters: tes_tasks.Filters, size: int) -> list[int]:
    """Every task of the list, a page of `size` at a time."""
    found, after = [], None
    while True:
        page, more = tes_tasks.page(portal, filters, after, size)
        found += [task.ref for task in page]
        if not more:
            return found
        after = page[-1].ref


def numbers(refs: list) -> list[int]:
    with db_session:
        return [ref if isinstance(ref, int) else Job.get(public_id=ref).id for ref in refs]


TAG_FILTERS = [(), (("parity", "odd"),), (("rare", ""),), (("parity", "even"), ("rare", "")),
               (("user_id", "2"), ("parity", "")), (("missing", ""),), (("parity", "odd"), ("parity", "even"))]


def test_each_state_and_tag_filter_lists_exactly_the_tasks_the_views_and_documents_say_over_pages(tasks):
    standing = standings()
    # NOTE: an operator's list (EVERY_PORTAL) walks the tasks without a portal (no tokens) too.
    for state, portal, tags in itertools.product((None, *views.STATES), ("haddock", jobs.EVERY_PORTAL), TAG_FILTERS):
        filters = tes_tasks.Filters("", state, tags)
        assert numbers(listed(portal, filters, 5)) == expected(tasks, standing, portal, filters), filters


def test_a_name_prefix_lists_exactly_the_names_that_start_with_it(tasks):
    standing = standings()
    for prefix, portal, state, tags in itertools.product(PREFIXES, ("haddock", jobs.EVERY_PORTAL), (None, "COMPLETE"),
                                                         TAG_FILTERS[:3]):
        filters = tes_tasks.Filters(prefix, state, tags)
        assert numbers(listed(portal, filters, 3)) == expected(tasks, standing, portal, filters), (portal, filters)


def test_a_page_holds_the_documents_and_a_cursor_of_another_portals_task_finds_nothing(tasks):
    stored, more = tes_tasks.page("prodigy", tes_tasks.Filters(), None, 100)

    assert not more and dict(zip(numbers([task.ref for task in stored]), [task.document for task in stored])) == {
        job_id: document for job_id, (portal, document) in tasks.items() if portal == "prodigy"}
    assert tes_tasks.page("haddock", tes_tasks.Filters(), stored[0].ref, 10) == ([], False)


# --- the query plans: every walk reads an index in page order, never the table, and sorts nothing ------

def test_every_walk_reads_an_index_in_page_order(clean_database):
    for state, tags, prefix, after in itertools.product(
            (None, "QUEUED", "COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR"),
            ((), (("user_id", "7"),), (("batch", ""), ("user_id", "7"))), ("", "rule-"), (None, 1000)):
        walks_read_an_index(tes_tasks.Filters(prefix, state, tags), after)


def walks_read_an_index(filters: tes_tasks.Filters, after: int | None) -> None:
    state, tags, prefix = filters.state, filters.tags, filters.name_prefix
    for pair in tes_tasks.JOB_STATES[state] if state else (None,):
        sql, params = tes_tasks.walk_sql("haddock", pair, filters, after, 256)
        with db_session:
            plan = " | ".join(row[-1] for row in tes_tasks.job_list.execute("EXPLAIN QUERY PLAN " + sql, params))
        if state:
            index = "idx_job__portal_outcome_state_id"
        elif tags:
            index = "idx_testag__portal_key_value_job" if tags[0][1] else "idx_testag__portal_key_job"
        else:
            # NOTE: a prefix is a range of the name's index, read in name order (so its tasks are
            # sorted), unless the planner prefers the cursor's range of the portal's, in page order.
            index = "idx_testask__portal_name_job" if "portal_name_job" in plan else "idx_testask__portal_job"
            assert prefix or index == "idx_testask__portal_job", plan
        assert f"INDEX {index} (portal" in plan, plan
        assert ("TEMP B-TREE" in plan) == (index == "idx_testask__portal_name_job"), plan
        assert "SCAN" not in plan.replace("SCAN CONSTANT ROW", ""), plan
