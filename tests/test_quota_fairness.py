"""Quotas and fairness, checked from the jobs' own start and end stamps."""
from __future__ import annotations

from tests.harness import job, results, script, submit, upload, wait_for_outcome, wait_until

STAMPED = 'echo "$(date +%s.%N)" > start\nsleep {seconds}\necho "$(date +%s.%N)" > end'
PORTAL_A = "portal-a-token-0123456789abcdef"
PORTAL_B = "portal-b-token-0123456789abcdef"
SECRET = "cluster-secret-0123456789abcdef"


def stamps(server, job_id, token: str | None = None) -> tuple[float, float]:
    archive = results(server, job_id, token)
    return float(archive.read("start")), float(archive.read("end"))


def most_at_once(intervals) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def run_all(server, jobs_by_user: dict[int, int], seconds: float) -> dict[int, list[tuple[float, float]]]:
    ids = {user: [submit(server, STAMPED.format(seconds=seconds), user_id=user) for _ in range(count)]
           for user, count in jobs_by_user.items()}
    result = {}
    for user, job_ids in ids.items():
        assert all(wait_for_outcome(server, j, 60) == 200 for j in job_ids)
        result[user] = [stamps(server, j) for j in job_ids]
    return result


def test_runs_per_user_is_never_exceeded_and_is_used(cluster):
    executor = cluster.executor("example", slots=8)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 2}})

    spans = run_all(server, {1: 6, 2: 4}, 0.4)

    assert most_at_once(spans[1]) == 2
    assert most_at_once(spans[2]) == 2
    assert most_at_once(spans[1] + spans[2]) == 4


def test_max_runs_caps_the_whole_service(cluster):
    executor = cluster.executor("example", slots=8)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 5, "max_runs": 3}})

    spans = run_all(server, {1: 3, 2: 3, 3: 3}, 0.4)

    assert most_at_once([s for user in spans.values() for s in user]) == 3


def test_max_runs_defaults_to_the_executors_total_slots(cluster):
    executor = cluster.executor("example", slots=2)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 5}})

    spans = run_all(server, {1: 3, 2: 3}, 0.3)

    assert most_at_once([s for user in spans.values() for s in user]) == 2


def test_users_are_served_round_robin_and_first_in_first_out_within_a_user(cluster):
    executor = cluster.executor("example", slots=4)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 5, "max_runs": 1}})

    # Given: user 1 queues six jobs, then user 2 queues two while user 1's first one runs
    first = [submit(server, STAMPED.format(seconds=0.6) + "\necho 1 > who", user_id=1) for _ in range(6)]
    second = [submit(server, STAMPED.format(seconds=0.6) + "\necho 2 > who", user_id=2) for _ in range(2)]

    # Then: they run one at a time, alternating users while both wait, each user's in upload order
    for job_id in first + second:
        assert wait_for_outcome(server, job_id, 60) == 200
    starts = sorted((stamps(server, j)[0], user, j) for user, ids in ((1, first), (2, second)) for j in ids)
    assert [user for _, user, _ in starts] == [1, 2, 1, 2, 1, 1, 1, 1]
    assert [j for _, user, j in starts if user == 1] == first
    assert [j for _, user, j in starts if user == 2] == second


def test_two_portals_user_7_are_two_users_for_queue_limits_and_runs_per_user(cluster):
    executor = cluster.executor("example", slots=4, cluster_secret=SECRET)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 1, "max_queued_per_user": 1}},
                            tokens={"a": PORTAL_A, "b": PORTAL_B}, cluster_secret=SECRET)

    # Given: portal a's user 7 runs one job and has a second one queued behind it (runs_per_user = 1)
    a_first = submit(server, STAMPED.format(seconds=2), user_id=7, token=PORTAL_A)
    wait_until(lambda: job(server, a_first, PORTAL_A)["status"] != "Queued", 10, 0.02, "a's first job to start")
    a_second = submit(server, STAMPED.format(seconds=0.2), user_id=7, token=PORTAL_A)
    assert job(server, a_second, PORTAL_A)["status"] == "Queued"

    # When: portal b's user 7 uploads
    b_only = upload(server, {"run.sh": script(STAMPED.format(seconds=1))}, user_id=7, token=PORTAL_B)

    # Then: a's queue is not b's, while a's own limit holds
    assert b_only.status_code == 200, b_only.text
    refused = upload(server, {"run.sh": script("true")}, user_id=7, token=PORTAL_A)
    assert refused.status_code == 429 and "user 7 of portal a" in refused.json()["description"]
    b_job = b_only.json()["id"]
    for job_id, token in ((a_first, PORTAL_A), (a_second, PORTAL_A), (b_job, PORTAL_B)):
        assert wait_for_outcome(server, job_id, 60, token) == 200
    a1, a2, b1 = stamps(server, a_first, PORTAL_A), stamps(server, a_second, PORTAL_A), stamps(server, b_job, PORTAL_B)
    assert max(a1[0], b1[0]) < min(a1[1], b1[1]), "a's and b's user 7 ran at the same time"
    assert a2[0] >= a1[1], "a's second job waited for a's first"
