"""storage.fair_share and actors.server.scheduling.admit: priorities, fair share with decayed usage, and group caps, as pure functions."""
from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from actors.server.scheduling import admit
from storage.fair_share import AGE_CREDIT, accrue, current_usage, decayed, fair_share_score, queue_order, user_order

DAY = 86_400.0


def random_queues(seed: int, rounds: int, most_users: int):
    """`rounds` random draws: (rng, users, candidates), each user with 1 to 5 queued jobs of fresh ids."""
    rng, ids = random.Random(seed), itertools.count(1)
    for _ in range(rounds):
        users = rng.sample(range(1, 12), rng.randint(1, most_users))
        yield rng, users, [(user, tuple(next(ids) for _ in range(rng.randint(1, 5)))) for user in users]


def run_admit(candidates, active_by_user=None, runs_per_user=5, limit=100, last_turn=None, **policy):
    active_by_user = active_by_user or {}
    return admit(candidates, active_by_user, sum(active_by_user.values()), runs_per_user, limit, last_turn or {},
                 **policy)


# --- priority ---------------------------------------------------------------------------------------

def test_a_users_jobs_go_by_priority_then_first_in_first_out():
    queued = [(1, 0), (2, 5), (3, None), (4, 5), (5, -10), (6, 10)]

    order = [job for job, priority in sorted(queued, key=lambda item: queue_order(item[1], item[0]))]

    assert order == [6, 2, 4, 1, 3, 5]


def test_priority_never_lets_a_user_pass_another():
    # User 1's jobs were sorted by the queue with their priority 10 first; user 2 has only priority -10 jobs.
    granted = run_admit([(1, (9, 1)), (2, (2,))], limit=2, last_turn={1: 1})

    assert granted == [(2, 2), (1, 9)]


# --- usage and its decay ----------------------------------------------------------------------------

def test_usage_halves_every_half_life():
    assert decayed(1000.0, DAY, DAY) == pytest.approx(500.0)
    assert decayed(1000.0, 3 * DAY, DAY) == pytest.approx(125.0)
    assert decayed(1000.0, 0.0, DAY) == 1000.0


def test_usage_never_grows_by_waiting_nor_goes_negative():
    assert decayed(1000.0, -5.0, DAY) == 1000.0
    assert decayed(0.0, DAY, DAY) == 0.0
    assert decayed(-3.0, DAY, DAY) == 0.0


def test_an_ended_job_adds_its_slot_seconds_to_the_decayed_usage():
    assert accrue(800.0, as_of=0.0, slot_seconds=300.0, now=DAY, half_life=DAY) == pytest.approx(700.0)
    assert accrue(0.0, as_of=0.0, slot_seconds=-1.0, now=10.0, half_life=DAY) == 0.0


def test_current_usage_counts_what_active_jobs_have_run_so_far():
    usage = current_usage(stored=400.0, stored_at=0.0, running_since=[DAY - 60, DAY - 40, DAY + 5], now=DAY,
                          half_life=DAY)

    assert usage == pytest.approx(200.0 + 60 + 40)


# --- fair share ---------------------------------------------------------------------------------

def test_the_score_is_usage_per_share_less_the_age_credit():
    assert fair_share_score(usage=1000.0, share=4, waited=0) == 250.0
    assert fair_share_score(usage=1000.0, share=1, waited=100) == 1000.0 - 100 * AGE_CREDIT
    assert fair_share_score(usage=0.0, share=1, waited=-5) == 0.0


def test_fair_share_serves_the_user_with_less_usage_first_whoever_was_served_last():
    heavy, light = ("p", 1), ("p", 2)
    scores = {heavy: fair_share_score(50_000, 1, 0), light: fair_share_score(10, 1, 0)}

    granted = run_admit([(heavy, (1, 2)), (light, (3, 4))], limit=1, last_turn={light: 9}, scores=scores)

    assert granted == [(light, 3)]


def test_a_larger_share_divides_the_usage():
    big_portal, small_portal = ("big", 1), ("small", 1)
    scores = {big_portal: fair_share_score(3000, 4, 0), small_portal: fair_share_score(1000, 1, 0)}

    assert [user for user, _ in user_order([(small_portal, (1,)), (big_portal, (2,))], {}, scores)] == \
        [big_portal, small_portal]


def test_with_no_usage_equal_shares_and_no_age_fair_share_is_round_robin():
    for rng, users, candidates in random_queues(15, 200, most_users=6):
        last_turn = {user: rng.randint(0, 50) for user in users if rng.random() < 0.5}
        scores = {user: fair_share_score(0.0, 1, 0.0) for user in users}
        limit, runs_per_user = rng.randint(0, 20), rng.randint(1, 4)

        assert run_admit(candidates, runs_per_user=runs_per_user, limit=limit, last_turn=last_turn, scores=scores) \
            == run_admit(candidates, runs_per_user=runs_per_user, limit=limit, last_turn=last_turn)


def test_a_job_waiting_long_enough_passes_newcomers_with_less_usage():
    veteran, newcomer = ("p", 1), ("p", 2)
    usage = 3600.0  # an hour of slot time

    def first_after(waited):
        scores = {veteran: fair_share_score(usage, 1, waited), newcomer: fair_share_score(0.0, 1, 0.0)}
        return run_admit([(veteran, (1,)), (newcomer, (2,))], limit=1, scores=scores)[0][0]

    assert first_after(waited=3000) == newcomer
    assert first_after(waited=3601) == veteran


def test_fair_share_still_goes_one_job_per_user_per_round():
    heavy, light = 1, 2
    scores = {heavy: 900.0, light: 1.0}

    granted = run_admit([(heavy, (1, 2, 3)), (light, (4, 5, 6))], limit=4, scores=scores)

    assert granted == [(light, 4), (heavy, 1), (light, 5), (heavy, 2)]


# --- groups -------------------------------------------------------------------------------------

def test_a_group_shares_its_cap_across_its_users():
    students = [(user, (user * 10, user * 10 + 1)) for user in range(1, 6)]
    group_of = {job: ("edu", "class-a") for _, jobs in students for job in jobs}

    granted = run_admit(students, group_of=group_of, runs_per_group=3, limit=100)

    assert granted == [(1, 10), (2, 20), (3, 30)]


def test_users_outside_the_group_keep_their_own_quota():
    group_of = {1: ("edu", "class"), 2: ("edu", "class"), 3: ("edu", "class")}

    granted = run_admit([(1, (1,)), (2, (2,)), (9, (7, 8))], group_of=group_of, runs_per_group=1,
                        active_by_group={("edu", "class"): 1}, limit=100)

    assert granted == [(9, 7), (9, 8)]


def test_a_job_of_a_full_group_is_passed_over_for_the_users_next_job():
    group_of = {1: "full", 2: "open"}

    granted = run_admit([(1, (1, 2))], group_of=group_of, active_by_group={"full": 2}, runs_per_group=2, limit=100)

    assert granted == [(1, 2)]


def test_no_runs_per_group_means_groups_have_no_cap():
    group_of = {job: "g" for job in range(1, 7)}

    granted = run_admit([(1, (1, 2, 3)), (2, (4, 5, 6))], group_of=group_of, active_by_group={"g": 50}, limit=100)

    assert len(granted) == 6


def test_admit_respects_every_cap_on_random_inputs():
    for rng, users, candidates in random_queues(1515, 300, most_users=8):
        group_of = {job: rng.choice("abc") for _, jobs in candidates for job in jobs if rng.random() < 0.7}
        runs_per_group, runs_per_user, limit = rng.randint(1, 4), rng.randint(1, 4), rng.randint(0, 20)
        active_by_group = {group: rng.randint(0, runs_per_group) for group in "abc" if rng.random() < 0.5}
        scores = {user: rng.uniform(-100, 100) for user in users if rng.random() < 0.5}

        granted = run_admit(candidates, runs_per_user=runs_per_user, limit=limit, scores=scores, group_of=group_of,
                            active_by_group=active_by_group, runs_per_group=runs_per_group)

        assert len(granted) <= limit
        assert len({job for _, job in granted}) == len(granted)
        assert all(count <= runs_per_user for count in Counter(user for user, _ in granted).values())
        for group, count in Counter(group_of[job] for _, job in granted if job in group_of).items():
            assert active_by_group.get(group, 0) + count <= runs_per_group
