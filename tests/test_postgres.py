"""The same models on PostgreSQL: a job's whole way with `database = postgresql://...`."""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests

from tests.harness import Node, add_section, free_port, job, submit, submit_labelled, wait_for_outcome, wait_until

PG_BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
PG_BIN = os.path.dirname(PG_BIN) if PG_BIN else None


def as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture
def postgres_url():
    if PG_BIN is None:
        pytest.skip("PostgreSQL server binaries are not installed (Debian package postgresql)")
    folder = tempfile.mkdtemp(prefix="orchestrator-pg-")
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    port = free_port()
    data = os.path.join(folder, "data")
    subprocess.run(as_postgres([f"{PG_BIN}/initdb", "-D", data, "-A", "trust", "-U", "postgres"]),
                   check=True, capture_output=True, timeout=120)
    subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", data, "-l", os.path.join(folder, "log"), "-w", "-o",
                                f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(as_postgres([f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_jobs_complete_and_fail_with_the_database_on_postgresql(cluster, postgres_url):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}}, database=postgres_url)

    done = submit(server, "echo ok > out.txt")
    broken = submit(server, "exit 5", user_id=9223372036854775807)

    assert wait_for_outcome(server, done) == 200
    assert wait_for_outcome(server, broken) == 204
    assert job(server, broken)["exit_code"] == 5
    assert job(server, broken)["user_id"] == 9223372036854775807
    assert not os.path.exists(server.folder / "data" / "orchestrator.sqlite")


def test_fair_share_groups_and_the_policy_view_read_postgresql_too(cluster, postgres_url):
    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url, "policy": "fair_share", "runs_per_group": "2"},
                             "waiting": {"clients": "", "policy": "fair_share"}}, database=postgres_url)
    done = submit_labelled(server, "echo ok > out.txt", user_id=7, priority=3, group="class-a")
    assert wait_for_outcome(server, done) == 200
    waiting = submit_labelled(server, "true", user_id=7, group="class-a", service="waiting")

    listed = requests.get(f"{server.url}/jobs", params={"group": "class-a", "service": "example"}, timeout=10).json()
    assert [(j["id"], j["priority"], j["group"]) for j in listed["jobs"]] == [(done, 3, "class-a")]
    policy = job(server, waiting)["queue"]["policy"]
    assert (policy["name"], policy["rank"], policy["share"]) == ("fair_share", 1, 1)
    example = next(s for s in requests.get(f"{server.url}/services", timeout=10).json()["services"]
                   if s["name"] == "example")
    assert [(u["user_id"], u["usage"] > 0) for u in example["top_usage_users"]] == [(7, True)]


def test_a_postgresql_database_of_the_previous_version_gets_the_new_column_and_index_at_start(cluster, postgres_url):
    import psycopg2

    executor = cluster.executor("example")
    server = cluster.server({"example": {"clients": executor.url}}, database=postgres_url)
    before = submit(server, "echo before > out.txt")
    assert wait_for_outcome(server, before) == 200
    server.stop()
    # What the previous version had: no public ids, quotas indexed without the portal.
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("ALTER TABLE job DROP COLUMN public_id")
        cursor.execute("DROP INDEX idx_job__service_portal_user_id_state")

    again = Node(server.kind, server.port, server.folder, server.args, server.env)
    cluster.nodes.append(again)
    again.start()

    assert "added the columns job.public_id" in again.log_path.read_text()
    assert job(again, before)["status"] == "Completed"
    assert wait_for_outcome(again, submit(again, "echo after > out.txt")) == 200
    with psycopg2.connect(postgres_url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'job'")
        assert {"unq_job__public_id", "idx_job__service_portal_user_id_state"} <= {row[0] for row in cursor}


def test_a_job_writing_nul_to_stderr_ends_and_so_do_the_jobs_ending_beside_it(cluster, postgres_url):
    # PostgreSQL's text cannot hold NUL: the outcome is stored without it, and the outcomes written
    # in the same transaction are not held back.
    executor = cluster.executor("example", slots=11)
    server = cluster.server({"example": {"clients": executor.url, "runs_per_user": 11}}, database=postgres_url)
    together = time.time_ns() + 2_000_000_000  # every job ends at this instant, so their reports arrive together
    wait = f"while [ $(date +%s%N) -lt {together} ]; do sleep 0.01; done\n"

    nul = submit(server, wait + r"printf 'a\0b' >&2; exit 4")
    ordinary = [submit(server, wait + ("echo ok > out.txt" if n % 2 else f"echo no{n} >&2; exit 3"))
                for n in range(10)]

    assert wait_for_outcome(server, nul, 30) == 204
    assert (job(server, nul)["exit_code"], job(server, nul)["stderr_tail"]) == (4, "ab")
    for n, job_id in enumerate(ordinary):
        assert wait_for_outcome(server, job_id, 30) == (200 if n % 2 else 204)
        assert job(server, job_id)["stderr_tail"] == (None if n % 2 else f"no{n}")


def test_the_tes_list_filters_by_state_tags_and_name_prefix_on_postgresql(cluster, postgres_url):
    # NOTE: the SQL of every filter on PostgreSQL (no name range there: a collation that ignores
    # punctuation sorts "a-b" after "ab"; the test cluster's, C.UTF-8, does not, so this checks the
    # exact prefix test, not the collation).
    executor = cluster.executor("example")
    server = add_section(cluster.server({"example": {"clients": executor.url}, "idle": {}}, database=postgres_url,
                                        start=False), "tes", {"images": "alpine=example, idle=idle"}).start()
    tasks = f"{server.url}/ga4gh/tes/v1/tasks"

    def create(name: str, image: str, command: list[str], tags: dict[str, str]) -> str:
        body = {"name": name, "tags": tags, "executors": [{"image": image, "command": command}]}
        return requests.post(tasks, json=body, timeout=10).json()["id"]

    def listed(**params) -> list[str]:
        return [t["id"] for t in requests.get(tasks, params=params, timeout=10).json()["tasks"]]

    failed = create("a-b", "alpine", ["sh", "-c", "exit 3"], {"user_id": "7", "run": "r1"})
    done = create("ab", "alpine", ["true"], {"user_id": "7"})
    waiting = create("a-", "idle", ["true"], {"user_id": "8", "run": ""})
    wait_until(lambda: set(listed(state="COMPLETE") + listed(state="EXECUTOR_ERROR")) == {failed, done}, 30, 0.1,
               "the two tasks to end")

    assert listed() == [waiting, done, failed]
    assert (listed(state="EXECUTOR_ERROR"), listed(state="SYSTEM_ERROR"), listed(state="QUEUED")) == (
        [failed], [], [waiting])
    assert listed(name_prefix="a-") == [waiting, failed]
    assert listed(tag_key="run") == [waiting, failed] and listed(tag_key="run", tag_value="r1") == [failed]
    assert listed(tag_key=["user_id", "run"], tag_value=["7", ""], page_size=1) == [failed]
    # Names and tags are capped in UTF-8 bytes: a 1,024-character CJK name (3,072 bytes, varied so
    # that it does not compress) would not fit PostgreSQL's index entry (about 2,700 bytes).
    cjk = "".join(chr(0x4E00 + i * 7919 % 20000) for i in range(1024))
    too_long = {"name": cjk, "executors": [{"image": "idle", "command": ["true"]}]}
    assert requests.post(tasks, json=too_long, timeout=10).status_code == 400
    longest = create(cjk[:341], "idle", ["true"], {"user_id": "8", cjk[:42]: cjk[-133:]})
    assert listed(name_prefix=cjk[:341]) == [longest] and listed(tag_key=cjk[:42], tag_value=cjk[-133:]) == [longest]
