"""The scheduling simulation of bench/fairness.py on hand-made traces with known answers: the
measures it reports (Jain's index, max-min fair shares) and that each policy is the one it names
(the run through bench.all is in test_bench_smoke.py)."""
from __future__ import annotations

import pytest

from bench.fairness import SimJob, jain, max_min_shares, simulate, trace

A, B = (None, 1), (None, 2)


def test_jain_is_one_for_equal_shares_and_one_over_n_when_one_has_all():
    assert jain([2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert jain([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert jain([1.0, 3.0]) == pytest.approx(16 / 20)


def test_max_min_shares_give_the_unused_part_of_a_small_want_to_the_others():
    assert max_min_shares({A: 5, B: 1, (None, 3): 5}, 8) == pytest.approx({A: 3.5, B: 1, (None, 3): 3.5})
    assert max_min_shares({A: 2, B: 1}, 8) == {A: 2, B: 1}
    assert max_min_shares({}, 8) == {}


def heavy_then_light():
    """2 slots, runs_per_user 2: user A uploads 4 jobs of 10 s at 0, user B one at 1."""
    return [SimJob(n, A, 0.0, 10.0, True) for n in range(1, 5)] + [SimJob(5, B, 1.0, 10.0, False)]


@pytest.mark.parametrize("policy, light_start, last_heavy_start", [
    ("fifo", 20.0, 10.0),         # B's job waits behind A's older ones
    ("round_robin", 10.0, 20.0),  # B was never served: first when slots free up
    ("fair_share", 10.0, 20.0),   # B has no usage, A has 20 slot-seconds
])
def test_a_light_user_waits_behind_a_heavy_one_only_under_fifo(policy, light_start, last_heavy_start):
    outcome = simulate(heavy_then_light(), policy, slots=2, runs_per_user=2)
    assert outcome.starts[5] == light_start
    assert max(outcome.starts[n] for n in range(1, 5)) == last_heavy_start
    assert outcome.waits["light"] == [light_start - 1.0]


def served_long_ago_with_much():
    """1 slot, runs_per_user 1: A ran 100 s first, B then ran 1 s; both wait at 100.5."""
    return [SimJob(1, A, 0.0, 100.0, True), SimJob(2, B, 100.0, 1.0, False),
            SimJob(3, A, 100.5, 10.0, True), SimJob(4, B, 100.5, 10.0, False)]


@pytest.mark.parametrize("policy, first", [("round_robin", 3), ("fair_share", 4)])
def test_round_robin_serves_who_was_served_longest_ago_and_fair_share_who_used_least(policy, first):
    outcome = simulate(served_long_ago_with_much(), policy, slots=1, runs_per_user=1)
    assert outcome.starts[first] == 101.0
    assert outcome.starts[7 - first] == 111.0


def test_fair_share_evens_out_the_service_received_on_a_busy_trace():
    jobs = trace(600, 10, 5)
    fifo, fair = simulate(jobs, "fifo"), simulate(jobs, "fair_share")
    assert fair.jain > fifo.jain
    assert sorted(fair.starts) == sorted(job.id for job in jobs) and None not in fair.starts.values()
