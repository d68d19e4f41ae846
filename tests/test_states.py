"""storage.states: the transitions table and `advance`, on a plain stand-in for a Job row."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest

from storage.states import ACTIVE, TERMINAL, TRANSITIONS, InvalidTransition, JobState, advance, can_advance

T0 = datetime(2024, 5, 1, 8, 0, 0)
NOW = datetime(2024, 5, 1, 9, 30, 15, 123456)

ALL_PAIRS = [(a, b) for a in JobState for b in JobState]
ALLOWED = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
FORBIDDEN = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]


@dataclass
class FakeJob:
    """Exactly the attributes `advance` reads and writes."""

    id: int = 42
    state: str = JobState.QUEUED.value
    updated_at: datetime = T0
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cleaned_at: datetime | None = None
    outcome: str | None = None
    #: The moves `advance` recorded (Job.changed), as (state, time).
    changes: list = field(default_factory=list)
    #: When the slot of each move that ended a job was taken (None: it held none).
    held: list = field(default_factory=list)

    def changed(self, state: JobState, now: datetime, held_since: datetime | None = None) -> None:
        self.changes.append((state, now))
        self.held.append(held_since)


def pair_id(pair):
    return f"{pair[0].value}->{pair[1].value}"


# --- the table ---------------------------------------------------------------------------------

def test_the_table_names_every_state_and_only_states():
    assert set(TRANSITIONS) == set(JobState)
    for targets in TRANSITIONS.values():
        assert targets <= set(JobState)


def test_the_table_is_exactly_the_documented_life_cycle():
    Q, D, S, R = JobState.QUEUED, JobState.DISPATCHING, JobState.SUBMITTED, JobState.RUNNING
    C, F, X, K = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.CLEANED
    assert {(a, b) for a, b in ALLOWED} == {
        (Q, D), (Q, F), (Q, X),
        (D, S), (D, R), (D, C), (D, Q), (D, F), (D, X),
        (S, R), (S, C), (S, F), (S, Q), (S, X),
        (R, C), (R, F), (R, Q), (R, X),
        (C, K), (F, K), (X, K),
    }


def test_no_state_moves_to_itself():
    for state in JobState:
        assert not can_advance(state, state)


def test_terminal_states_only_go_to_cleaned():
    assert TERMINAL == {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}
    for state in TERMINAL:
        assert TRANSITIONS[state] == {JobState.CLEANED}


def test_cleaned_goes_nowhere():
    assert TRANSITIONS[JobState.CLEANED] == frozenset()
    for target in JobState:
        job = FakeJob(state=JobState.CLEANED.value)
        with pytest.raises(InvalidTransition):
            advance(job, target, NOW)


def test_only_a_job_that_is_not_yet_finished_can_be_cancelled_or_failed():
    for state in JobState:
        live = state not in TERMINAL and state is not JobState.CLEANED
        assert can_advance(state, JobState.CANCELLED) is live
        assert can_advance(state, JobState.FAILED) is live


def test_every_active_state_can_return_to_the_queue():
    assert ACTIVE == {JobState.DISPATCHING, JobState.SUBMITTED, JobState.RUNNING}
    for state in ACTIVE:
        assert can_advance(state, JobState.QUEUED)


def test_states_are_stored_by_their_capitalised_names():
    assert [s.value for s in JobState] == ["Queued", "Dispatching", "Submitted", "Running", "Completed",
                                           "Failed", "Cancelled", "Cleaned"]


# --- advance -----------------------------------------------------------------------------------

@pytest.mark.parametrize("pair", ALLOWED, ids=pair_id)
def test_every_allowed_transition_is_accepted_and_stored(pair):
    current, new = pair
    job = FakeJob(state=current.value)

    advance(job, new, NOW)

    assert job.state == new.value
    assert job.updated_at == NOW
    assert job.changes == [(new, NOW)]  # recorded once: the change feed and the webhooks' outbox


@pytest.mark.parametrize("pair", FORBIDDEN, ids=pair_id)
def test_every_other_transition_is_rejected_and_leaves_the_job_alone(pair):
    current, new = pair
    job = FakeJob(state=current.value)
    before = FakeJob(**vars(job))

    with pytest.raises(InvalidTransition) as raised:
        advance(job, new, NOW)

    assert job == before
    error = raised.value
    assert (error.job_id, error.from_state, error.to_state) == (42, current, new)
    assert str(error) == f"job 42: {current.value} -> {new.value} is not allowed"


def test_advance_accepts_the_state_as_stored_by_the_database():
    job = FakeJob(state="Submitted")
    advance(job, JobState.RUNNING, NOW)
    assert job.state == "Running" and type(job.state) is str


def test_dispatching_stamps_dispatched_at():
    job = FakeJob()
    advance(job, JobState.DISPATCHING, NOW)
    assert job.dispatched_at == NOW and job.updated_at == NOW
    assert job.started_at is job.finished_at is job.cleaned_at is job.outcome is None


def test_dispatching_again_after_a_return_to_the_queue_stamps_the_new_time():
    job = FakeJob()
    advance(job, JobState.DISPATCHING, T0)
    advance(job, JobState.QUEUED, T0 + timedelta(minutes=1))
    advance(job, JobState.DISPATCHING, NOW)
    assert job.dispatched_at == NOW and job.state == "Dispatching"


def test_submitted_and_queued_only_stamp_updated_at():
    job = FakeJob(state=JobState.DISPATCHING.value, dispatched_at=T0)
    advance(job, JobState.SUBMITTED, NOW)
    assert (job.updated_at, job.dispatched_at, job.started_at, job.finished_at) == (NOW, T0, None, None)

    later = NOW + timedelta(seconds=5)
    advance(job, JobState.QUEUED, later)
    assert (job.updated_at, job.dispatched_at, job.started_at, job.finished_at) == (later, T0, None, None)


def test_started_at_belongs_to_the_attempt_that_runs():
    job = FakeJob(state=JobState.SUBMITTED.value)
    advance(job, JobState.RUNNING, NOW)
    assert job.started_at == NOW and job.updated_at == NOW

    advance(job, JobState.QUEUED, NOW + timedelta(seconds=1))
    assert job.started_at is None
    advance(job, JobState.DISPATCHING, NOW + timedelta(seconds=2))
    advance(job, JobState.SUBMITTED, NOW + timedelta(seconds=3))
    advance(job, JobState.RUNNING, NOW + timedelta(seconds=4))
    assert job.started_at == NOW + timedelta(seconds=4)
    assert job.updated_at == NOW + timedelta(seconds=4)


@pytest.mark.parametrize("outcome", sorted(TERMINAL, key=lambda s: s.value), ids=lambda s: s.value)
@pytest.mark.parametrize("source", [JobState.SUBMITTED, JobState.RUNNING], ids=lambda s: s.value)
def test_an_outcome_stamps_finished_at_and_records_itself(source, outcome):
    job = FakeJob(state=source.value, started_at=T0)
    advance(job, outcome, NOW)
    assert job.finished_at == NOW and job.updated_at == NOW
    assert job.outcome == outcome.value
    assert job.started_at == T0 and job.cleaned_at is None


def test_a_queued_job_can_be_cancelled_without_ever_starting():
    job = FakeJob()
    advance(job, JobState.CANCELLED, NOW)
    assert (job.state, job.outcome, job.finished_at, job.dispatched_at, job.started_at) == (
        "Cancelled", "Cancelled", NOW, None, None)


@pytest.mark.parametrize("outcome", sorted(TERMINAL, key=lambda s: s.value), ids=lambda s: s.value)
def test_cleaning_stamps_cleaned_at_and_keeps_the_outcome_and_finish_time(outcome):
    job = FakeJob(state=outcome.value, finished_at=T0, outcome=outcome.value)
    advance(job, JobState.CLEANED, NOW)
    assert job.state == "Cleaned" and job.cleaned_at == NOW and job.updated_at == NOW
    assert job.outcome == outcome.value and job.finished_at == T0


def test_a_whole_successful_life_leaves_ordered_stamps():
    job = FakeJob(updated_at=T0)
    times = [T0 + timedelta(seconds=n) for n in range(1, 6)]
    for state, when in zip([JobState.DISPATCHING, JobState.SUBMITTED, JobState.RUNNING, JobState.COMPLETED,
                            JobState.CLEANED], times):
        advance(job, state, when)
    assert (job.dispatched_at, job.started_at, job.finished_at, job.cleaned_at) == (
        times[0], times[2], times[3], times[4])
    assert job.updated_at == times[4] and job.outcome == "Completed" and job.state == "Cleaned"
    # fair share: each move out of a slot-holding state says since when the slot was held
    assert job.held == [None, times[0], times[0], times[0], None]


def test_a_job_that_never_held_a_slot_is_told_so_when_it_ends():
    job = FakeJob()
    advance(job, JobState.CANCELLED, T0)
    assert job.held == [None]
