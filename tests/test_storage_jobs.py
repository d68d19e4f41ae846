"""storage.jobs on a temp SQLite file (the conftest's `clean_database`), each call at a fixed `now`:
how a job's attempts are numbered and which reports count (a report of an older attempt changes
nothing), requeue-or-fail on a lost executor, the first outcome standing, failed fetches, expiry and
cleaning, and cancelling.

Covered elsewhere, not repeated here: batches the database partly refuses (test_batch_writes.py),
the loss of a job of a service no longer configured (test_services_gone.py), the state table itself
(test_states.py).
"""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pony.orm import db_session

from storage import jobs
from storage.models import Job, JobChange
from storage.states import JobState

NOW = datetime(2024, 5, 1, 9, 30)
LATER = NOW + timedelta(minutes=5)
EXECUTOR = "http://e:1"
OTHER = "http://e:2"
SERVICES = {"example"}


# --- making jobs of each state ---------------------------------------------------------------------

def queued(user_id: int = 7, service: str = "example", portal: str | None = None) -> int:
    return jobs.create_job(user_id, service, f"/jobs/{user_id}-{service}", NOW, portal)[0]


def dispatching(executor: str = EXECUTOR, **kwargs) -> tuple[int, int]:
    """A job sent to `executor` (not yet accepted); (its id, its attempt)."""
    job_id = queued(**kwargs)
    assert jobs.claim_for_dispatch([job_id], NOW) == ([job_id], [])
    attempt = jobs.begin_attempts([(job_id, executor)], NOW)[job_id]
    return job_id, attempt


def running(executor: str = EXECUTOR, **kwargs) -> tuple[int, int]:
    """A job whose script runs on `executor`; (its id, its attempt)."""
    job_id, attempt = dispatching(executor, **kwargs)
    jobs.mark_submitted([(job_id, attempt, f"task-{job_id}")], NOW)
    jobs.mark_running([(job_id, attempt)], NOW)
    assert jobs.get_ref(job_id).state is JobState.RUNNING
    return job_id, attempt


def lost_and_sent_again(job_id: int, attempt: int, executor: str = OTHER) -> int:
    """Attempt `attempt` lost and the job sent again to `executor`; the new attempt's number."""
    assert jobs.requeue_or_fail(job_id, attempt, "lost", 3, NOW, SERVICES)[1] is JobState.QUEUED
    jobs.claim_for_dispatch([job_id], NOW)
    return jobs.begin_attempts([(job_id, executor)], NOW)[job_id]


def column(job_id: int, name: str):
    """A column the API does not show (fetch_failures, remote_id, result_path)."""
    with db_session:
        return getattr(Job[job_id], name)


# --- requeue_or_fail: an executor lost the job's attempt --------------------------------------------

def test_a_lost_job_goes_back_to_the_queue_until_its_last_attempt_then_fails_saying_attempt_n_of_n(clean_database):
    job_id, attempt = running()
    reason = f"executor {EXECUTOR} was lost"

    for expected in (1, 2):
        assert attempt == expected
        before, state, _ = jobs.requeue_or_fail(job_id, attempt, reason, 3, LATER, SERVICES)
        # The caller learns where the lost attempt was (to stop it there), and that it waits again.
        assert (before.attempts, before.executor, state) == (attempt, EXECUTOR, JobState.QUEUED)
        view = jobs.job_view(job_id)
        assert (view["status"], view["reason"], view["executor"], view["started_at"]) == ("Queued", reason, None, None)
        assert view["outcome"] is None and view["finished_at"] is None
        assert column(job_id, "remote_id") is None
        jobs.claim_for_dispatch([job_id], NOW)
        attempt = jobs.begin_attempts([(job_id, EXECUTOR)], NOW)[job_id]
        jobs.mark_submitted([(job_id, attempt, "t")], NOW)

    before, state, _ = jobs.requeue_or_fail(job_id, 3, reason, 3, LATER, SERVICES)

    assert (before.state, state) == (JobState.SUBMITTED, JobState.FAILED)
    view = jobs.job_view(job_id)
    assert (view["status"], view["outcome"], view["attempts"]) == ("Failed", "Failed", 3)
    assert view["reason"] == f"{reason} (attempt 3 of 3)"
    assert view["finished_at"] == LATER.isoformat() + "Z"


def test_a_loss_reported_for_an_older_attempt_changes_nothing(clean_database):
    job_id, first = running()
    second = lost_and_sent_again(job_id, first)
    jobs.mark_submitted([(job_id, second, "t2")], NOW)
    view = jobs.job_view(job_id)

    assert jobs.requeue_or_fail(job_id, first, "late news of the first executor", 3, LATER, SERVICES) is None

    assert jobs.job_view(job_id) == view
    assert (view["status"], view["attempts"], view["executor"]) == ("Submitted", 2, OTHER)


def test_a_loss_of_a_job_that_ended_or_waits_in_the_queue_changes_nothing(clean_database):
    ended, attempt = running()
    jobs.finish(ended, attempt, JobState.COMPLETED, NOW, exit_code=0)
    waiting = queued(user_id=8)

    assert jobs.requeue_or_fail(ended, attempt, "lost", 3, LATER, SERVICES) is None
    assert jobs.requeue_or_fail(waiting, 0, "lost", 3, LATER, SERVICES) is None

    assert jobs.job_view(ended)["status"] == "Completed" and jobs.job_view(ended)["reason"] is None
    assert jobs.job_view(waiting)["status"] == "Queued"


# --- attempts: claim, number, take back, accepted, started ------------------------------------------

def test_only_queued_jobs_are_claimed_for_dispatch_and_the_others_are_named_gone(clean_database):
    waiting = queued(user_id=1)
    taken, _ = dispatching(user_id=2)
    cancelled = queued(user_id=3)
    jobs.finish(cancelled, None, JobState.CANCELLED, NOW)

    claimed, gone = jobs.claim_for_dispatch([waiting, taken, cancelled, 999_999], LATER)

    assert (claimed, gone) == ([waiting], [taken, cancelled, 999_999])
    view = jobs.job_view(waiting)
    assert (view["status"], view["dispatched_at"]) == ("Dispatching", LATER.isoformat() + "Z")
    assert jobs.get_ref(taken).state is JobState.DISPATCHING and jobs.get_ref(cancelled).state is JobState.CANCELLED


def test_each_attempt_gets_the_next_number_and_a_clean_slate(clean_database):
    job_id, first = running()
    jobs.fetch_failed(job_id, first, "HTTP 500", 5, NOW)  # counted against the first attempt only

    second = lost_and_sent_again(job_id, first, OTHER)

    assert (first, second) == (1, 2)
    ref = jobs.get_ref(job_id)
    assert (ref.state, ref.attempts, ref.executor, ref.remote_id) == (JobState.DISPATCHING, 2, OTHER, None)
    assert column(job_id, "fetch_failures") is None


def test_an_attempt_begins_only_for_a_job_still_dispatching(clean_database):
    sent, _ = dispatching(user_id=1)
    waiting = queued(user_id=2)
    cancelled, _ = dispatching(user_id=3)
    jobs.finish(cancelled, None, JobState.CANCELLED, NOW)

    numbers = jobs.begin_attempts([(sent, OTHER), (waiting, OTHER), (cancelled, OTHER), (999_999, OTHER)], LATER)

    assert numbers == {sent: 2}
    assert jobs.get_ref(waiting).attempts == 0 and jobs.get_ref(waiting).executor is None
    assert jobs.get_ref(cancelled).attempts == 1 and jobs.get_ref(cancelled).executor == EXECUTOR


def test_an_attempt_that_never_reached_its_executor_is_taken_back_as_if_never_made(clean_database):
    job_id, attempt = dispatching()

    jobs.unassign(job_id, attempt)

    ref = jobs.get_ref(job_id)
    assert (ref.state, ref.attempts, ref.executor) == (JobState.DISPATCHING, 0, None)
    # The next send is attempt 1 again, so max_attempts counts only sends that may have run.
    assert jobs.begin_attempts([(job_id, OTHER)], NOW) == {job_id: 1}


def test_an_attempt_is_not_taken_back_once_accepted_or_superseded(clean_database):
    accepted, attempt = dispatching(user_id=1)
    jobs.mark_submitted([(accepted, attempt, "t")], NOW)
    superseded, _ = dispatching(user_id=2)
    jobs.begin_attempts([(superseded, OTHER)], NOW)  # attempt 2 of a job still dispatching

    jobs.unassign(accepted, attempt)
    jobs.unassign(superseded, 1)

    assert (jobs.get_ref(accepted).attempts, jobs.get_ref(accepted).executor) == (1, EXECUTOR)
    assert (jobs.get_ref(superseded).attempts, jobs.get_ref(superseded).executor) == (2, OTHER)


def test_an_acceptance_of_an_older_attempt_is_ignored(clean_database):
    job_id, first = dispatching()
    second = jobs.begin_attempts([(job_id, OTHER)], NOW)[job_id]  # sent again; the first answers late

    jobs.mark_submitted([(job_id, first, "late")], LATER)

    ref = jobs.get_ref(job_id)
    assert (ref.state, ref.remote_id) == (JobState.DISPATCHING, None)
    jobs.mark_submitted([(job_id, second, "current")], LATER)
    ref = jobs.get_ref(job_id)
    assert (ref.state, ref.remote_id) == (JobState.SUBMITTED, "current")


def test_an_acceptance_after_the_start_report_records_the_task_and_keeps_the_job_running(clean_database):
    job_id, attempt = dispatching()
    jobs.mark_running([(job_id, attempt)], NOW)  # the executor's report overtook its answer

    jobs.mark_submitted([(job_id, attempt, "t1")], LATER)

    ref = jobs.get_ref(job_id)
    assert (ref.state, ref.remote_id) == (JobState.RUNNING, "t1")
    assert jobs.job_view(job_id)["started_at"] == NOW.isoformat() + "Z"


def test_a_start_report_of_an_older_attempt_or_of_an_ended_job_is_ignored(clean_database):
    requeued, first = running(user_id=1)
    second = lost_and_sent_again(requeued, first)
    ended, attempt = running(user_id=2)
    jobs.finish(ended, attempt, JobState.FAILED, NOW, exit_code=1)

    jobs.mark_running([(requeued, first), (ended, attempt)], LATER)

    assert jobs.get_ref(requeued).state is JobState.DISPATCHING and jobs.job_view(requeued)["started_at"] is None
    assert jobs.get_ref(ended).state is JobState.FAILED
    jobs.mark_running([(requeued, second)], LATER)
    assert jobs.job_view(requeued)["started_at"] == LATER.isoformat() + "Z"


# --- finish, finish_many: outcomes -----------------------------------------------------------------

def test_the_first_outcome_stands(clean_database):
    job_id, attempt = running()
    jobs.finish(job_id, attempt, JobState.COMPLETED, NOW, exit_code=0, result_path="/results/1.zip")

    assert jobs.finish(job_id, attempt, JobState.FAILED, LATER, exit_code=2, reason="late") is None
    assert jobs.finish(job_id, None, JobState.CANCELLED, LATER) is None

    view = jobs.job_view(job_id)
    assert (view["status"], view["exit_code"], view["reason"]) == ("Completed", 0, None)
    assert view["finished_at"] == NOW.isoformat() + "Z"
    assert jobs.download_info(job_id) == (JobState.COMPLETED, "/results/1.zip")


def test_an_outcome_of_an_older_attempt_is_ignored(clean_database):
    job_id, first = running()
    lost_and_sent_again(job_id, first)

    assert jobs.finish(job_id, first, JobState.COMPLETED, NOW, exit_code=0) is None
    assert jobs.get_ref(job_id).state is JobState.DISPATCHING


def test_an_outcome_frees_a_slot_only_for_a_job_that_held_one(clean_database):
    active, attempt = running(user_id=1)
    waiting = queued(user_id=2)

    ref, held = jobs.finish(active, attempt, JobState.FAILED, NOW, exit_code=3, reason="run.sh exited with code 3",
                            stderr_tail="boom")
    assert held is True and ref.state is JobState.FAILED
    view = jobs.job_view(active)
    assert (view["exit_code"], view["reason"], view["stderr_tail"]) == (3, "run.sh exited with code 3", "boom")

    ref, held = jobs.finish(waiting, None, JobState.CANCELLED, NOW)
    assert held is False and ref.state is JobState.CANCELLED


def test_in_one_batch_each_job_gets_its_first_outcome_and_each_row_says_whether_it_held_a_slot(clean_database):
    active, attempt = running(user_id=1)
    waiting = queued(user_id=2)
    outcomes = [(active, attempt, JobState.COMPLETED, {"exit_code": 0}),
                (waiting, None, JobState.CANCELLED, {"reason": "cancelled on request"}),
                (active, attempt, JobState.FAILED, {"exit_code": 9}),   # a second outcome of the same job
                (active, attempt + 1, JobState.FAILED, {}),             # an attempt never made
                (999_999, None, JobState.FAILED, {})]                   # no such job

    results = jobs.finish_many(outcomes, NOW)

    assert [(r[0].id, r[0].state, r[1]) if r else None for r in results] == [
        (active, JobState.COMPLETED, True), (waiting, JobState.CANCELLED, False), None, None, None]
    assert jobs.job_view(active)["exit_code"] == 0


# --- fetch_failed --------------------------------------------------------------------------------

def test_failed_fetches_are_counted_and_the_last_allowed_one_fails_the_job(clean_database):
    job_id, attempt = running()

    assert jobs.fetch_failed(job_id, attempt, "HTTP 500", 3, NOW) is None
    assert jobs.fetch_failed(job_id, attempt, "HTTP 500", 3, NOW) is None
    assert jobs.get_ref(job_id).state is JobState.RUNNING and column(job_id, "fetch_failures") == 2
    ref, held = jobs.fetch_failed(job_id, attempt, "HTTP 502", 3, LATER)

    assert held is True and ref.state is JobState.FAILED
    view = jobs.job_view(job_id)
    assert view["reason"] == f"its results could not be fetched from {EXECUTOR} after 3 tries: HTTP 502"
    assert (view["exit_code"], view["finished_at"]) == (0, LATER.isoformat() + "Z")


def test_a_failed_fetch_of_an_older_attempt_or_an_ended_job_is_not_counted(clean_database):
    job_id, first = running(user_id=1)
    second = lost_and_sent_again(job_id, first)
    ended, attempt = running(user_id=2)
    jobs.finish(ended, attempt, JobState.COMPLETED, NOW, exit_code=0)

    assert jobs.fetch_failed(job_id, first, "HTTP 500", 1, NOW) is None
    assert jobs.fetch_failed(ended, attempt, "HTTP 500", 1, NOW) is None

    assert jobs.get_ref(job_id).state is JobState.DISPATCHING and column(job_id, "fetch_failures") is None
    assert jobs.get_ref(ended).state is JobState.COMPLETED and column(ended, "fetch_failures") is None
    assert jobs.fetch_failed(job_id, second, "HTTP 500", 1, NOW)[0].state is JobState.FAILED


# --- expiry and cleaning ---------------------------------------------------------------------------

def ended_at(when: datetime, service: str = "example", user_id: int = 7) -> int:
    job_id, attempt = running(service=service, user_id=user_id)
    jobs.finish(job_id, attempt, JobState.COMPLETED, when, exit_code=0, result_path=f"/results/{job_id}.zip")
    return job_id


def test_only_ended_jobs_finished_before_their_services_cutoff_are_expired_oldest_first(clean_database):
    hour = timedelta(hours=1)
    # "short" keeps jobs one hour, "long" three; "example" the default of two.
    cutoffs = {"short": NOW - hour, "long": NOW - 3 * hour}
    default = NOW - 2 * hour
    short_old = ended_at(NOW - 90 * timedelta(minutes=1), "short")
    short_new = ended_at(NOW - 30 * timedelta(minutes=1), "short")
    long_kept = ended_at(NOW - 150 * timedelta(minutes=1), "long")
    long_old = ended_at(NOW - 200 * timedelta(minutes=1), "long")
    default_old = ended_at(NOW - 150 * timedelta(minutes=1), "example", user_id=1)
    default_kept = ended_at(NOW - 90 * timedelta(minutes=1), "example", user_id=2)
    cancelled = queued(user_id=3)
    jobs.finish(cancelled, None, JobState.CANCELLED, NOW - 5 * hour)
    still_running, _ = running(user_id=4)  # not ended: never expired, however old

    found = [ref.id for ref in jobs.expired(cutoffs, default, 100)]

    assert found == [cancelled, long_old, default_old, short_old]
    assert not {short_new, long_kept, default_kept, still_running} & set(found)


def test_expired_jobs_come_in_batches_and_a_cleaned_one_is_not_found_again(clean_database):
    ids = [ended_at(NOW - timedelta(hours=5, minutes=n), user_id=n) for n in range(5)]  # the last is the oldest
    default = NOW - timedelta(hours=1)

    first = [ref.id for ref in jobs.expired({}, default, 2)]
    assert first == [ids[4], ids[3]]
    for job_id in first:
        jobs.mark_cleaned(job_id, NOW)
    second = [ref.id for ref in jobs.expired({}, default, 2)]
    assert second == [ids[2], ids[1]]
    for job_id in second:
        jobs.mark_cleaned(job_id, NOW)
    assert [ref.id for ref in jobs.expired({}, default, 2)] == [ids[0]]


def test_a_cleaned_job_keeps_its_row_and_history_without_its_result(clean_database):
    finished = NOW - timedelta(hours=3)
    job_id = ended_at(finished)

    jobs.mark_cleaned(job_id, NOW)
    jobs.mark_cleaned(job_id, LATER)  # a second sweep changes nothing

    view = jobs.job_view(job_id)
    assert (view["status"], view["outcome"], view["exit_code"]) == ("Cleaned", "Completed", 0)
    assert (view["finished_at"], view["cleaned_at"]) == (finished.isoformat() + "Z", NOW.isoformat() + "Z")
    assert jobs.download_info(job_id) == (JobState.CLEANED, None)


def test_a_job_that_has_not_ended_is_never_cleaned(clean_database):
    job_id, _ = running()

    jobs.mark_cleaned(job_id, NOW)

    assert jobs.get_ref(job_id).state is JobState.RUNNING and jobs.job_view(job_id)["cleaned_at"] is None


# --- cancel --------------------------------------------------------------------------------------

def test_a_cancel_ends_the_job_and_hands_back_where_it_ran_and_a_second_cancel_hands_back_nothing(clean_database):
    job_id, _ = running()

    view, ended = jobs.cancel(job_id, None, NOW)

    assert (view["status"], view["outcome"], view["reason"]) == ("Cancelled", "Cancelled", "cancelled on request")
    assert view["finished_at"] == NOW.isoformat() + "Z"
    # The caller stops the script on its executor with these, and frees the slot.
    assert (ended.id, ended.state, ended.executor, ended.remote_id) == (
        job_id, JobState.CANCELLED, EXECUTOR, f"task-{job_id}")
    again, none = jobs.cancel(job_id, None, LATER)
    assert none is None and again == view


def test_a_cancel_of_an_ended_job_hands_back_its_view_and_nothing_to_stop(clean_database):
    job_id = ended_at(NOW)

    view, ended = jobs.cancel(job_id, None, LATER)

    assert ended is None
    assert (view["status"], view["exit_code"], view["reason"]) == ("Completed", 0, None)


@pytest.mark.parametrize("asker", ["other-portal", None])
def test_a_portal_cannot_cancel_or_see_another_portals_job(clean_database, asker):
    job_id, view = jobs.create_job(7, "example", "/jobs/a", NOW, portal="portal-a")
    public_id = view["id"]
    assert public_id != job_id

    assert jobs.cancel(public_id, asker, NOW) is None
    assert jobs.cancel(job_id, "portal-a", NOW) is None  # a number does not name a job with a public id

    assert jobs.get_ref(job_id).state is JobState.QUEUED
    view, ended = jobs.cancel(public_id, "portal-a", NOW)
    assert view["status"] == "Cancelled" and ended is not None


def test_a_job_created_failed_is_never_queued_nor_active_and_its_change_log_has_its_creation_and_end(clean_database):
    written = []
    ended, view = jobs.create_failed(7, "example", "/jobs/never", NOW, "TES input /data/x: scheme s3 is not supported",
                                     "portal-a", jobs.Labels(priority=2), written.append)

    assert (ended.state, ended.reason, ended.finished_at, ended.portal) == \
        (JobState.FAILED, "TES input /data/x: scheme s3 is not supported", NOW, "portal-a")
    assert written == [ended.id] and view["status"] == "Failed" and view["id"] != ended.id  # a public id
    assert list(jobs.queued_jobs("example")) == [] and jobs.count_queued("example") == 0
    assert jobs.active_jobs() == []
    with db_session:
        assert [c.state for c in JobChange.select(lambda c: c.job == ended.id).order_by(JobChange.id)] == \
            ["Queued", "Failed"]
    assert jobs.cancel(view["id"], "portal-a", LATER)[1] is None  # it has ended
