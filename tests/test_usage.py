"""storage.usage: fair-share usage written at each job's end, folded by the quota, read decayed."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pony.orm import db_session, select

from storage import jobs, usage
from storage.models import Usage, UsageCharge
from storage.states import JobState

T0 = datetime(2026, 11, 30, 8, 0)
HOUR = 3600.0
HALF_LIFE = 24 * HOUR
EXECUTOR = "http://e:1"


def ended(user_id: int, ran: timedelta, ends: datetime, *, portal: str | None = None, service: str = "example",
          outcome: JobState = JobState.COMPLETED) -> int:
    """A job of `user_id` that ran for `ran` and ended at `ends`."""
    job_id = jobs.create_job(user_id, service, f"/jobs/{user_id}", ends - ran, portal)[0]
    jobs.claim_for_dispatch([job_id], ends - ran)
    attempt = jobs.begin_attempts([(job_id, EXECUTOR)], ends - ran)[job_id]
    jobs.mark_running([(job_id, attempt)], ends - ran)
    jobs.finish(job_id, attempt, outcome, ends)
    return job_id


def test_each_run_that_ends_charges_its_slot_time_to_its_user(clean_database):
    ended(7, timedelta(minutes=10), T0, portal="haddock")
    ended(7, timedelta(minutes=5), T0, portal="haddock", outcome=JobState.FAILED)

    assert usage.usage_by_user("example", HALF_LIFE, T0) == {("haddock", 7): pytest.approx(900.0)}


def test_a_job_that_never_ran_charges_nothing(clean_database):
    job_id = jobs.create_job(7, "example", "/jobs/7", T0, None)[0]
    jobs.cancel(job_id, None, T0)

    assert usage.usage_by_user("example", HALF_LIFE, T0) == {}


def test_usage_is_per_service_and_per_portal_user(clean_database):
    ended(7, timedelta(seconds=100), T0, portal="a")
    ended(7, timedelta(seconds=200), T0, portal="b")
    ended(7, timedelta(seconds=400), T0, portal="a", service="prodigy")

    assert usage.usage_by_user("example", HALF_LIFE, T0) == {("a", 7): 100.0, ("b", 7): 200.0}


def test_folding_keeps_the_decayed_total_and_deletes_the_charges(clean_database):
    ended(1, timedelta(seconds=1000), T0)
    ended(1, timedelta(seconds=1000), T0 + timedelta(days=1))
    before = usage.usage_by_user("example", HALF_LIFE, T0 + timedelta(days=2))

    assert usage.fold(lambda service: HALF_LIFE, T0 + timedelta(days=2)) == 2

    after = usage.usage_by_user("example", HALF_LIFE, T0 + timedelta(days=2))
    assert after == {(None, 1): pytest.approx(250.0 + 500.0)} == pytest.approx(before)
    with db_session:
        assert select(c for c in UsageCharge).count() == 0
        assert select(u for u in Usage).count() == 1
    assert usage.fold(lambda service: HALF_LIFE, T0 + timedelta(days=2)) == 0


def test_usage_forgotten_after_twenty_half_lives_is_deleted(clean_database):
    ended(1, timedelta(seconds=1000), T0)
    ended(2, timedelta(seconds=1000), T0 + timedelta(days=19))
    usage.fold(lambda service: HALF_LIFE, T0 + timedelta(days=19))

    usage.fold(lambda service: HALF_LIFE, T0 + timedelta(days=20, seconds=1))

    assert set(usage.usage_by_user("example", HALF_LIFE, T0 + timedelta(days=20))) == {(None, 2)}


def test_a_job_that_held_a_slot_is_charged_from_its_admission_even_if_it_never_started(clean_database):
    job_id = jobs.create_job(7, "example", "/jobs/7", T0, None)[0]
    jobs.claim_for_dispatch([job_id], T0)  # admitted: its slot is taken from here
    jobs.finish(job_id, None, JobState.FAILED, T0 + timedelta(seconds=90))

    assert usage.usage_by_user("example", HALF_LIFE, T0 + timedelta(seconds=90)) == {(None, 7): 90.0}
