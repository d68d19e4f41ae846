"""storage.jobs on a temp SQLite file: the writers of many rows, when the database refuses one row,
still write the others; and text from outside is stored without NUL (storage/storable.py).

The same on real nodes with PostgreSQL is in tests/test_postgres.py.
"""
from __future__ import annotations

from datetime import datetime

import pytest

from storage import jobs
from storage.states import JobState

NOW = datetime(2024, 5, 1, 9, 30)


@pytest.fixture
def running_jobs(clean_database):
    """Five jobs of a fresh table, each Running as attempt 1 on executor "http://e:1"."""
    ids = [jobs.create_job(7, "example", f"/jobs/{n}", NOW)[0] for n in range(5)]
    claimed, _ = jobs.claim_for_dispatch(ids, NOW)
    assert jobs.begin_attempts([(job_id, "http://e:1") for job_id in claimed], NOW) == {i: 1 for i in ids}
    jobs.mark_submitted([(job_id, 1, str(job_id)) for job_id in ids], NOW)
    jobs.mark_running([(job_id, 1) for job_id in ids], NOW)
    assert {jobs.get_ref(job_id).state for job_id in ids} == {JobState.RUNNING}
    return ids


def test_an_outcome_the_database_refuses_ends_its_job_plainly_and_the_others_are_written(running_jobs):
    refused = running_jobs[2]
    outcomes = [(job_id, 1, JobState.FAILED, {"exit_code": 3, "reason": "run.sh exited with code 3",
                                              "stderr_tail": f"oops {job_id}"}) for job_id in running_jobs]
    # NOTE: a reason longer than its column (1024): Pony refuses that row, and so the transaction.
    outcomes[2] = (refused, 1, JobState.FAILED, {"exit_code": 3, "reason": "x" * 2000, "stderr_tail": "long"})

    ended = jobs.finish_many(outcomes, NOW)

    assert all(ended) and all(held for _, held in ended)
    for job_id in running_jobs:
        view = jobs.job_view(job_id)
        assert view["status"] == "Failed" and view["exit_code"] == 3
        if job_id == refused:
            assert view["reason"].startswith("its executor's report could not be stored (ValueError"), view
            assert view["stderr_tail"] is None
        else:
            assert (view["reason"], view["stderr_tail"]) == ("run.sh exited with code 3", f"oops {job_id}")


def test_a_completed_job_whose_details_are_refused_stays_completed(running_jobs):
    result = "/results/1.zip"
    ok = (running_jobs[0], 1, JobState.COMPLETED, {"exit_code": 0, "stderr_tail": "fine", "result_path": result})
    odd = (running_jobs[1], 1, JobState.COMPLETED, {"exit_code": 0, "reason": "y" * 2000, "result_path": result})

    jobs.finish_many([ok, odd], NOW)

    assert jobs.job_view(running_jobs[0])["stderr_tail"] == "fine"
    view = jobs.job_view(running_jobs[1])
    assert (view["status"], view["reason"]) == ("Completed", None)
    assert jobs.download_info(running_jobs[1]) == (JobState.COMPLETED, result)


def test_a_task_id_that_cannot_be_stored_leaves_the_other_submissions_recorded(running_jobs):
    ids = [jobs.create_job(8, "example", f"/jobs/new{n}", NOW)[0] for n in range(3)]
    jobs.claim_for_dispatch(ids, NOW)
    jobs.begin_attempts([(job_id, "http://e:1") for job_id in ids], NOW)

    jobs.mark_submitted([(ids[0], 1, "a"), (ids[1], 1, "b" * 100), (ids[2], 1, "c")], NOW)  # remote_id: 64 at most

    refs = [jobs.get_ref(job_id) for job_id in ids]
    assert [(r.state, r.remote_id) for r in refs] == [
        (JobState.SUBMITTED, "a"), (JobState.DISPATCHING, None), (JobState.SUBMITTED, "c")]


def test_text_from_outside_is_stored_without_nul(running_jobs):
    jobs.finish(running_jobs[0], 1, JobState.FAILED, NOW, exit_code=1, reason="bad\x00 reason",
                stderr_tail="a\x00b")

    view = jobs.job_view(running_jobs[0])
    assert (view["reason"], view["stderr_tail"]) == ("bad reason", "ab")


def test_when_no_row_can_be_written_the_error_is_raised(running_jobs):
    outcomes = [(job_id, 1, JobState.FAILED, {"exit_code": "not a number"}) for job_id in running_jobs]

    with pytest.raises(Exception):
        jobs.finish_many(outcomes, NOW)
    assert {jobs.get_ref(job_id).state for job_id in running_jobs} == {JobState.RUNNING}
