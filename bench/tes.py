"""Figure 13: the GA4GH TES list, `GET /ga4gh/tes/v1/tasks`, with 100,000 tasks in the database: a
page within 50 ms whatever the filter, however deep; and the rate of `POST /tasks`.

Set-up: a server with ten portals (workflow engines), whose database holds 100,000 TES tasks, 10,000
each, over 30 days (created one after another): each portal's 500 newest queued, 20 running, the
ended ones one in ten Failed (half a command's exit, EXECUTOR_ERROR; half a system error) and one in
1,000 Cancelled, the rest Completed, Cleaned after a day; names `<rule>-<n>` of 20 rules; tags
`user_id` (100 users), `run` (a workflow run of 500 tasks) and, on one task in 1,000, `rare`. The
rows (Job, TesTask, TesTag) are written with sqlite3 while the server is stopped; then each page is
asked for over HTTP, warm, by the first portal. Then tasks are created one after another (POST).
"""
from __future__ import annotations

import json
import sqlite3
import statistics
import time
from datetime import timedelta

import requests

from bench.common import Row, cluster, main, percentile
from bench.job_list import standing
from bench.million_jobs import STAMP, answer_times
from tests.harness import add_section, bearer

PORTALS = 10
PER_PORTAL = 10_000
QUEUED = 500
RUNNING = 20
USERS = 100
RULES = ("align", "sort", "index", "call", "filter", "merge", "annotate", "qc", "trim", "count",
         "dedup", "bam2fq", "stats", "plot", "report", "split", "gather", "fetch", "pack", "check")
DAYS = 30
TARGET_MS = 50.0
#: The figure of the largest page, which has no target (`pages`).
LARGEST = "13i"
POSTS = 300
TOKENS = {f"engine{n}": f"engine{n}-bench-token-0123456789abcdef" for n in range(PORTALS)}
LIST = "/ga4gh/tes/v1/tasks"


def document(n: int) -> dict:
    """The task document of a portal's task `n` (about 600 bytes, as an engine sends one)."""
    rule = RULES[n % len(RULES)]
    tags = {"user_id": str(1 + n % USERS), "run": f"run-{n // 500}", **({"rare": "yes"} if n % 1000 == 7 else {})}
    return {"name": f"{rule}-{n}", "tags": tags,
            "inputs": [{"path": f"/data/{rule}/in-{n}.txt", "url": f"https://files.example.org/{rule}/{n}.txt",
                        "type": "FILE"}],
            "outputs": [{"path": f"/out/{rule}-{n}.txt", "url": f"file:///results/{rule}-{n}.txt", "type": "FILE"}],
            "executors": [{"image": "alpine", "command": ["sh", "-c", f"{rule} /data/{rule}/in-{n}.txt > /out/x"],
                           "workdir": "/data"}],
            "resources": {"cpu_cores": 1}}


def fill(database: str, per_portal: int) -> list[str]:
    """The tasks described above, oldest first (portals interleaved); returns the first portal's
    public ids in that order."""
    from storage import public_ids
    from storage.clock import utcnow
    now, total = utcnow(), PORTALS * per_portal
    step = DAYS * 86400 / total
    connection = sqlite3.connect(database)
    first = []
    with connection:
        for number in range(1, total + 1):
            portal, n = f"engine{number % PORTALS}", number // PORTALS
            created = now - timedelta(seconds=(total - number) * step)
            age, stamp = per_portal - n, created.strftime(STAMP)
            state, outcome = standing(n, age, created, now, QUEUED, RUNNING)
            exit_code = reason = None
            if outcome == "Failed":
                exit_code, reason = ((2, "run.sh exited with code 2") if n % 20 == 0
                                     else (None, "TES input /data/x: HTTP 404 from https://files.example.org"))
            public_id = public_ids.new()
            if portal == "engine0":
                first.append(public_id)
            task = document(n)
            connection.execute(
                "INSERT INTO Job (id, user_id, service, portal, public_id, state, dir, created_at, updated_at, outcome, "
                "attempts, exit_code, reason) VALUES (?, ?, 'example', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, int(task["tags"]["user_id"]), portal, public_id, state, f"/none/{number}", stamp, stamp,
                 outcome, int(state != "Queued"), exit_code, reason))
            connection.execute("INSERT INTO TesTask (job, portal, name, document) VALUES (?, ?, ?, ?)",
                               (number, portal, task["name"], json.dumps(task)))
            connection.executemany("INSERT INTO TesTag (job, key, value, portal) VALUES (?, ?, ?, ?)",
                                   [(number, key, value, portal) for key, value in task["tags"].items()])
    connection.close()
    return first


def pages(first: list[str]) -> list[tuple[str, str, str]]:
    """(figure, what, query) of each page measured; the last, of the largest page, has no target
    (its time grows with its size: the views and JSON of 2,048 tasks)."""
    from web.job_list import encode_cursor
    middle = encode_cursor(first[len(first) // 2])
    return [
        ("13a", "first page (256), MINIMAL", "view=MINIMAL"),
        ("13b", "first page (256), BASIC", "view=BASIC"),
        ("13c", "name_prefix (one rule in 20)", "name_prefix=align-"),
        ("13d", "state=SYSTEM_ERROR (one in 20)", "state=SYSTEM_ERROR"),
        ("13e", "state=RUNNING (20 tasks)", "state=RUNNING"),
        ("13f", "a tag key and value (one user in 100)", "tag_key=user_id&tag_value=17"),
        ("13g", "a rare tag key, any value (10 tasks)", "tag_key=rare"),
        ("13h", "a page half way down (page_token), BASIC", f"view=BASIC&page_token={middle}"),
        ("13i", "2,048 a page, BASIC", "view=BASIC&page_size=2048"),
    ]


def post_times(server, posts: int) -> list[float]:
    session = requests.Session()
    session.headers.update(bearer(TOKENS["engine0"]))
    # NOTE: a content input: the figure is the create itself, with no url to check.
    body = {**document(0), "name": "posted", "inputs": [{"path": "/data/in.txt", "content": "x\n"}], "outputs": []}
    times = []
    for n in range(posts):
        body["tags"] = {"user_id": str(1 + n % USERS)}
        began = time.perf_counter()
        answer = session.post(f"{server.url}{LIST}", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        times.append((time.perf_counter() - began) * 1000)
    return times


def figure(times: list[float]) -> str:
    return (f"{statistics.median(times):.1f} ms median, p95 {percentile(times, 0.95):.1f} ms "
            f"(max {max(times):.1f}, n={len(times)})")


def run(quick: bool) -> list[Row]:
    per_portal, runs, posts = (600, 3, 10) if quick else (PER_PORTAL, 20, POSTS)
    with cluster() as nodes:
        server = nodes.server({"example": {"max_queued_per_user": 100_000}}, tokens=TOKENS,
                              cluster_secret="cluster-bench-secret-0123456789abcdef", start=False)
        server = add_section(server, "tes", {"images": "alpine=example"}).start()
        server.stop()  # it made the tables and their indexes; now fill them while nobody else writes
        first = fill(str(server.folder / "data" / "orchestrator.sqlite"), per_portal)
        server = server.restart()
        measured = [(fig, what, answer_times(f"{server.url}{LIST}?{query}", runs, bearer(TOKENS["engine0"])))
                    for fig, what, query in pages(first)]
        created = post_times(server, posts)
    total = PORTALS * per_portal
    rows = [Row(f"{fig}. `GET /tasks`: {what}, {total:,} tasks of {PORTALS} portals", figure(times),
                "-" if fig == LARGEST else f"<= {TARGET_MS:.0f} ms", "-",
                None if quick or fig == LARGEST else statistics.median(times) <= TARGET_MS)
            for fig, what, times in measured]
    rate = 1000 / statistics.median(created)
    rows.append(Row(f"13j. `POST /tasks`, one after another, {total:,} tasks in the database",
                    f"{figure(created)}: {rate:.0f} tasks/s", "-", "-", None))
    return rows


if __name__ == "__main__":
    main(run)
