"""actors.server.scheduling: admission, executor choice and the janitor's timing, as pure functions."""
from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import datetime

import pytest

from actors.server.scheduling import KnownExecutor, admit, choose_executor, expiry_cutoffs
from conf.settings import sweep_interval


def run_admit(candidates, active_by_user=None, active_total=None, runs_per_user=5, limit=100, last_turn=None):
    active_by_user = active_by_user or {}
    if active_total is None:
        active_total = sum(active_by_user.values())
    return admit(candidates, active_by_user, active_total, runs_per_user, limit, last_turn or {})


# --- admit --------------------------------------------------------------------------------------

def test_a_user_with_one_job_is_not_held_back_by_a_user_with_many():
    many = (1, tuple(range(1, 1001)))
    one = (2, (5000,))

    granted = run_admit([many, one], runs_per_user=1000, limit=2)

    assert granted == [(1, 1), (2, 5000)]


def test_a_user_with_one_job_is_served_in_the_first_round_even_when_queued_last():
    granted = run_admit([(1, tuple(range(1, 1001))), (2, (5000,))], runs_per_user=1000, limit=10)

    assert granted[:2] == [(1, 1), (2, 5000)]
    assert granted[2:] == [(1, job) for job in range(2, 10)]


def test_admission_goes_round_robin_one_job_per_user_per_round():
    granted = run_admit([(1, (1, 2, 3)), (2, (4, 5, 6)), (3, (7,))], limit=100)

    assert granted == [(1, 1), (2, 4), (3, 7), (1, 2), (2, 5), (1, 3), (2, 6)]


def test_the_user_served_longest_ago_goes_first():
    candidates = [(1, (1,)), (2, (2,)), (3, (3,))]

    granted = run_admit(candidates, limit=2, last_turn={1: 10, 2: 5})

    assert granted == [(3, 3), (2, 2)]


def test_a_user_never_served_goes_before_one_served_at_turn_zero():
    granted = run_admit([(1, (1,)), (2, (2,))], limit=1, last_turn={1: 0})

    assert granted == [(2, 2)]


def test_users_never_served_go_in_order_of_their_oldest_job():
    granted = run_admit([(1, (30, 31)), (2, (10, 11)), (3, (20,))], limit=3)

    assert granted == [(2, 10), (3, 20), (1, 30)]


def test_jobs_of_one_user_are_admitted_first_in_first_out():
    granted = run_admit([(7, (3, 8, 9, 12))], limit=3)

    assert granted == [(7, 3), (7, 8), (7, 9)]


def test_runs_per_user_is_never_exceeded_counting_active_jobs():
    granted = run_admit([(1, (1, 2, 3, 4)), (2, (5, 6, 7))], active_by_user={1: 1}, runs_per_user=2, limit=100)

    assert Counter(user for user, _ in granted) == {1: 1, 2: 2}
    assert granted == [(1, 1), (2, 5), (2, 6)]


def test_users_are_any_hashable_keys_so_two_portals_user_7_are_two_users():
    a7, b7, anonymous7 = ("a", 7), ("b", 7), (None, 7)

    granted = run_admit([(a7, (1, 2)), (b7, (3, 4)), (anonymous7, (5,))], active_by_user={a7: 1}, runs_per_user=1,
                        limit=100, last_turn={b7: 4})

    assert granted == [(anonymous7, 5), (b7, 3)]


def test_a_user_already_at_runs_per_user_gets_nothing():
    granted = run_admit([(1, (1, 2)), (2, (3,))], active_by_user={1: 3}, runs_per_user=3, limit=100)

    assert granted == [(2, 3)]


def test_the_limit_is_never_exceeded_counting_active_jobs():
    granted = run_admit([(1, (1, 2, 3)), (2, (4, 5, 6))], active_by_user={3: 4}, runs_per_user=5, limit=6)

    assert granted == [(1, 1), (2, 4)]


def test_a_zero_limit_admits_nothing():
    assert run_admit([(1, (1, 2)), (2, (3,))], limit=0) == []


def test_a_service_already_over_its_limit_admits_nothing():
    assert run_admit([(1, (1,))], active_by_user={2: 5}, limit=3) == []


def test_no_candidates_admits_nothing():
    assert run_admit([], limit=10) == []


def test_admit_respects_both_bounds_and_fifo_on_random_inputs():
    rng = random.Random(1234)
    ids = itertools.count(1)
    for _ in range(300):
        # Users as the quota names them: (portal, user_id), the same user_id under several portals.
        users = rng.sample([(portal, n) for portal in ("a", "b", None) for n in range(1, 7)], rng.randint(1, 6))
        candidates = [(user, tuple(next(ids) for _ in range(rng.randint(1, 8)))) for user in users]
        runs_per_user = rng.randint(1, 4)
        active_by_user = {user: rng.randint(0, runs_per_user) for user in users if rng.random() < 0.5}
        limit = rng.randint(0, 15)
        last_turn = {user: rng.randint(0, 50) for user in users if rng.random() < 0.5}

        granted = run_admit(candidates, active_by_user, None, runs_per_user, limit, last_turn)

        total = sum(active_by_user.values())
        assert len(granted) <= max(0, limit - total)
        per_user = Counter(user for user, _ in granted)
        jobs_of = dict(candidates)
        for user, count in per_user.items():
            assert active_by_user.get(user, 0) + count <= runs_per_user
            assert [job for u, job in granted if u == user] == list(jobs_of[user][:count])
        # Work-conserving: stop only when the service is full or nobody else may start.
        if len(granted) < limit - total:
            for user, jobs in candidates:
                assert per_user[user] == len(jobs) or active_by_user.get(user, 0) + per_user[user] == runs_per_user


# --- choose_executor ------------------------------------------------------------------------------

def test_the_executor_with_the_most_free_slots_wins():
    a = KnownExecutor("http://a", slots=4, in_flight=3, reachable=True)
    b = KnownExecutor("http://b", slots=8, in_flight=5, reachable=True)
    c = KnownExecutor("http://c", slots=2, in_flight=0, reachable=True)

    assert choose_executor([a, b, c]) is b


def test_an_unreachable_executor_is_never_chosen():
    down = KnownExecutor("http://down", slots=100, in_flight=0, reachable=False)
    up = KnownExecutor("http://up", slots=1, in_flight=0, reachable=True)

    assert down.free == 0
    assert choose_executor([down, up]) is up
    assert choose_executor([down]) is None


def test_among_equally_free_executors_the_one_used_longest_ago_wins():
    recent = KnownExecutor("http://recent", slots=4, in_flight=1, reachable=True, last_used=9)
    old = KnownExecutor("http://old", slots=4, in_flight=1, reachable=True, last_used=2)
    newer = KnownExecutor("http://newer", slots=4, in_flight=1, reachable=True, last_used=5)

    assert choose_executor([recent, old, newer]) is old
    assert choose_executor([newer, recent]) is newer


def test_no_executor_is_chosen_when_all_are_full():
    full = [KnownExecutor("http://a", slots=2, in_flight=2, reachable=True),
            KnownExecutor("http://b", slots=1, in_flight=3, reachable=True)]

    assert choose_executor(full) is None
    assert choose_executor([]) is None


# --- choose_executor: overflow tiers --------------------------------------------------------------

def test_tier_one_with_a_free_slot_wins_over_a_freer_tier_two():
    local = KnownExecutor("http://local", slots=2, in_flight=1, reachable=True, tier=1, last_used=9)
    cluster = KnownExecutor("http://cluster", slots=64, in_flight=0, reachable=True, tier=2, last_used=1)

    assert choose_executor([cluster, local]) is local


def test_a_full_tier_one_overflows_to_tier_two():
    local = KnownExecutor("http://local", slots=2, in_flight=2, reachable=True, tier=1)
    cluster = KnownExecutor("http://cluster", slots=64, in_flight=5, reachable=True, tier=2)

    assert choose_executor([local, cluster]) is cluster


@pytest.mark.parametrize("why", ["full", "draining", "unreachable"])
def test_tier_two_is_used_only_while_no_usable_tier_one_has_a_free_slot(why):
    tier_one = KnownExecutor("http://t1", slots=4, in_flight=4 if why == "full" else 0, reachable=why != "unreachable",
                             draining=why == "draining", tier=1)
    tier_two = KnownExecutor("http://t2", slots=2, in_flight=1, reachable=True, tier=2)

    assert choose_executor([tier_one, tier_two]) is tier_two


def test_tiers_are_filled_in_order_and_ties_within_a_tier_as_before():
    """Three tiers: the lowest with room wins; inside it, most free slots, then used longest ago."""
    t1 = KnownExecutor("http://t1", slots=1, in_flight=1, reachable=True, tier=1)
    t2_busy = KnownExecutor("http://t2-busy", slots=4, in_flight=3, reachable=True, tier=2)
    t2_recent = KnownExecutor("http://t2-recent", slots=4, in_flight=2, reachable=True, tier=2, last_used=7)
    t2_old = KnownExecutor("http://t2-old", slots=4, in_flight=2, reachable=True, tier=2, last_used=3)
    t3 = KnownExecutor("http://t3", slots=100, in_flight=0, reachable=True, tier=3)

    assert choose_executor([t3, t2_busy, t2_recent, t2_old, t1]) is t2_old
    t2_busy.in_flight = t2_recent.in_flight = t2_old.in_flight = 4
    assert choose_executor([t3, t2_busy, t2_recent, t2_old, t1]) is t3


def test_dispatching_a_backlog_fills_tier_one_then_two_and_returns_to_one_when_it_frees():
    """As the dispatcher does for a batch: each choice takes a slot (in_flight += 1)."""
    local = KnownExecutor("http://local", slots=1, reachable=True, tier=1)
    cluster = KnownExecutor("http://cluster", slots=2, reachable=True, tier=2)
    chosen = []
    for _ in range(4):
        executor = choose_executor([cluster, local])
        if executor is not None:
            executor.in_flight += 1
        chosen.append(executor and executor.url)

    assert chosen == ["http://local", "http://cluster", "http://cluster", None]
    local.in_flight -= 1  # the tier-1 job ended
    assert choose_executor([cluster, local]) is local


# --- janitor timing -----------------------------------------------------------------------------

@pytest.mark.parametrize("retentions, expected", [
    ([], 60.0),
    ([0.5], 1.0),
    ([5.0], 1.0),
    ([10.0], 1.0),
    ([50.0, 300.0], 5.0),
    ([172800.0, 120.0], 12.0),
    ([600.0], 60.0),
    ([3600.0 * 48], 60.0),
])
def test_the_sweep_interval_is_a_tenth_of_the_shortest_retention_between_1_and_60_seconds(retentions, expected):
    assert sweep_interval(retentions) == expected


def test_the_sweep_interval_accepts_a_generator():
    assert sweep_interval(x for x in (200.0, 100.0)) == 10.0


def test_expiry_cutoffs_subtract_each_services_retention_from_now():
    now = datetime(2024, 3, 1, 12, 0, 0)
    retention = {"fast": 60.0, "slow": 2 * 86400.0}

    cutoffs = expiry_cutoffs(["fast", "slow"], retention.__getitem__, now)

    assert cutoffs == {"fast": datetime(2024, 3, 1, 11, 59, 0), "slow": datetime(2024, 2, 28, 12, 0, 0)}


def test_expiry_cutoffs_of_no_services_is_empty():
    assert expiry_cutoffs([], lambda name: 1.0, datetime(2024, 1, 1)) == {}
