"""Overflow between executor tiers, on real processes: a service fills its tier-1 executor first,
sends jobs to tier 2 only while tier 1 is full, and comes back to tier 1 as soon as it frees.

One server and two executors of `example` for the module: tier 1 with 1 slot (configured in the
server's `clients`, so its tier comes from its /health) and tier 2 with 2 slots (registered by
heartbeat). Jobs wait on a flag file (`waiting_for_flag`) so the test decides when slots free.
"""
from __future__ import annotations

import pytest
import requests

from tests.harness import job, let_go, listing, log_lines, submit, wait_for_outcome, wait_until, waiting_for_flag


@pytest.fixture(scope="module")
def tiers(module_cluster):
    first = module_cluster.executor("example", slots=1, tier=1)
    server = module_cluster.server({"example": {"clients": first.url, "runs_per_user": 10}})
    second = module_cluster.executor("example", server_port=server.port, slots=2, tier=2)
    wait_until(lambda: {url: (e["state"], e["tier"]) for url, e in listing(server).items()}
               == {first.url: ("alive", 1), second.url: ("alive", 2)}, 15, 0.05, "both executors alive with tiers")
    return server, first, second


def placed(server, job_id: int) -> str:
    """The executor the job was sent to, once it was."""
    return wait_until(lambda: job(server, job_id)["executor"], 15, 0.02, f"job {job_id} to be sent")


def test_tier_two_takes_jobs_only_while_tier_one_is_full_and_tier_one_takes_the_next_once_free(tiers):
    server, first, second = tiers
    tokens = ["tier-a", "tier-b", "tier-c"]
    held = [submit(server, waiting_for_flag(token, after="echo ok > out.txt")) for token in tokens]

    assert [placed(server, job_id) for job_id in held] == [first.url, second.url, second.url]

    for token, executor in zip(tokens, (first, second, second)):
        let_go(executor.folder, token)
    assert [wait_for_outcome(server, job_id) for job_id in held] == [200, 200, 200]
    # Tier 2 now has more free slots (2) than tier 1 (1): the tier decides, not the free slots.
    after = submit(server, "echo ok > out.txt")
    assert placed(server, after) == first.url
    assert wait_for_outcome(server, after) == 200


def test_each_node_tells_its_tier_and_the_dispatched_event_names_it(tiers):
    server, first, second = tiers
    assert requests.get(f"{second.url}/health", timeout=5).json()["tier"] == 2
    assert requests.get(f"{first.url}/health", timeout=5).json()["tier"] == 1
    quick = submit(server, "echo ok > out.txt")
    assert placed(server, quick) == first.url  # nothing else runs: tier 1 is free

    line = wait_until(lambda: next((line for line in log_lines(server) if f"dispatched job={quick} " in line), None),
                      10, 0.05, "the dispatched event in the server's log")
    assert f"executor={first.url} " in line and line.endswith("tier=1")
    assert wait_for_outcome(server, quick) == 200
