"""Generative testing of the HTTP API against its own OpenAPI document (schemathesis).

Thousands of generated requests, valid and invalid, checked for: no server error, only documented
status codes, content types, headers and bodies that match the document, invalid data rejected and
valid data accepted.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.harness import script, upload

TOKEN = "contract-token-0123456789abcdef"
SECRET = "contract-secret-0123456789abcdef"
ST = os.path.join(os.path.dirname(sys.executable), "st")


#: What executors and operators call, with the cluster secret; everything else is a portal's.
CLUSTER_OPERATIONS = [option for name in ("executorEvent", "executorHeartbeat", "executors", "metrics", "health")
                      for option in ("--include-operation-id", name)]


def schemathesis(server, *options: str, token: str = TOKEN) -> tuple[int, int, str]:
    # NOTE: 40 examples an operation (not 120): the coverage phase's cases do not depend on it, and the
    # four runs still generate about 1,900 requests (4,000 with 120) in half the time.
    # NOTE: one worker: with two threads, Python 3.11's ast module (used by schemathesis to compile
    # schemas) can fail with "AST constructor recursion depth mismatch" (CPython gh-106905).
    result = subprocess.run(
        [ST, "run", f"{server.url}/api-docs/openapi.json", "-H", f"Authorization: Bearer {token}",
         "--checks", "all", "--max-examples", "40", "--seed", "20261128", "--workers", "1", *options],
        capture_output=True, text=True, timeout=600, env={**os.environ, "NO_COLOR": "1"},
        # NOTE: schemathesis keeps a cache of the failures it found in its working directory and
        # replays them on the next run; in the server's temporary folder every run starts afresh.
        cwd=server.folder)
    generated = re.search(r"(\d+) generated", result.stdout)
    assert generated, result.stdout[-3000:]
    return result.returncode, int(generated.group(1)), result.stdout


@pytest.mark.skipif(not os.path.exists(ST), reason="schemathesis is not installed (requirements-test.txt)")
def test_a_thousand_generated_requests_find_no_server_error_and_no_contract_violation(cluster):
    # No executor answers: generated jobs stay queued and never run generated scripts.
    server = cluster.server({"example": {"clients": "http://127.0.0.1:9"}}, tokens={"portal": TOKEN}, max_files=20,
                            cluster_secret=SECRET)

    for n in range(3):  # jobs for the read operations to find
        assert upload(server, {"run.sh": script("true")}, user_id=n + 1, token=TOKEN).status_code == 200

    code, portals, report = schemathesis(server, "--exclude-operation-id", "upload", "--exclude-operation-id",
                                         "listJobs", "--exclude-operation-id", "events",
                                         *[o.replace("include", "exclude") for o in CLUSTER_OPERATIONS])
    assert code == 0 and f"{portals} passed" in report, report[-6000:]
    # A cursor is one the server gave (any other is refused), which a schema cannot say; every other check holds.
    code, lists, report = schemathesis(server, "--include-operation-id", "listJobs", "--include-operation-id",
                                       "events", "--exclude-checks", "positive_data_acceptance")
    assert code == 0 and f"{lists} passed" in report, report[-6000:]
    # No links between these operations: the stateful phase has nothing to follow.
    code, cluster_calls, report = schemathesis(server, *CLUSTER_OPERATIONS, "--phases", "examples,coverage,fuzzing",
                                               token=SECRET)
    assert code == 0 and f"{cluster_calls} passed" in report, report[-6000:]
    # An upload may not hold two files of one name, which a schema cannot say; every other check holds.
    code, uploads, report = schemathesis(server, "--include-operation-id", "upload", "--phases",
                                         "examples,coverage,fuzzing", "--exclude-checks", "positive_data_acceptance")
    assert code == 0 and f"{uploads} passed" in report, report[-6000:]
    assert portals + lists + cluster_calls + uploads >= 1000
