"""A database a previous version created keeps working: the columns added since are added at start."""
from __future__ import annotations

import re
import sqlite3
from datetime import datetime

import pytest
import requests
from pony.orm import Database, Optional, PrimaryKey, Required, db_session
from pony.orm.core import DBSchemaError, TransactionIntegrityError

from storage import database
from tests.harness import bearer, job, script, submit, wait_for_outcome

TOKEN = "haddock-token-0123456789abcdef"
SECRET = "cluster-secret-0123456789abcdef"
#: The job table as the previous version (before public ids and per-portal quotas) created it.
PREVIOUS_SCHEMA = """
CREATE TABLE "Job" (
  "id" INTEGER PRIMARY KEY AUTOINCREMENT,
  "user_id" BIGINT NOT NULL,
  "service" VARCHAR(64) NOT NULL,
  "portal" VARCHAR(64),
  "state" VARCHAR(16) NOT NULL,
  "dir" VARCHAR(1024) NOT NULL,
  "created_at" DATETIME NOT NULL,
  "updated_at" DATETIME NOT NULL,
  "dispatched_at" DATETIME,
  "started_at" DATETIME,
  "finished_at" DATETIME,
  "cleaned_at" DATETIME,
  "outcome" VARCHAR(16),
  "attempts" INTEGER NOT NULL,
  "executor" VARCHAR(1024),
  "remote_id" VARCHAR(64),
  "exit_code" INTEGER,
  "reason" VARCHAR(1024),
  "stderr_tail" TEXT,
  "result_path" VARCHAR(1024)
);
CREATE INDEX "idx_job__service_state_id" ON "Job" ("service", "state", "id");
CREATE INDEX "idx_job__service_user_id_state" ON "Job" ("service", "user_id", "state");
CREATE INDEX "idx_job__state" ON "Job" ("state");
CREATE INDEX "idx_job__state_finished_at" ON "Job" ("state", "finished_at");
"""


def things(*extra: str) -> Database:
    """A fresh Pony database with a `Thing` entity: a name, plus the named columns of a newer version."""
    db = Database()
    columns = {
        "note": Optional(str, 200, nullable=True),
        "code": Optional(str, 32, unique=True, nullable=True),
        "count": Optional(int),
        "seen": Optional(datetime, precision=6),
        "size": Required(int, default=0),
    }
    type("Thing", (db.Entity,), {"id": PrimaryKey(int, auto=True), "name": Required(str, 64),
                                 **{name: columns[name] for name in extra}})
    return db


def test_nullable_columns_a_newer_version_added_are_added_to_an_existing_table(tmp_path):
    path = str(tmp_path / "old.sqlite")
    old = things()
    database.bind(old, path, create_tables=True)
    with db_session:
        old.Thing(name="from the old version")
    old.disconnect()

    new = things("note", "code", "count", "seen")
    database.bind(new, path, create_tables=True)

    with db_session:
        before = new.Thing.get(name="from the old version")
        assert (before.note, before.code, before.count, before.seen) == (None, None, None, None)
        new.Thing(name="new", note="n", code="abc", count=3, seen=datetime(2026, 1, 2, 3, 4, 5, 6))
    with db_session:
        assert new.Thing.get(code="abc").seen == datetime(2026, 1, 2, 3, 4, 5, 6)
    with pytest.raises(TransactionIntegrityError), db_session:
        new.Thing(name="twin", code="abc")  # the added column is still unique
    assert database.add_missing_columns(new) == []  # the next start finds nothing to add


def test_a_missing_not_null_column_is_an_error_that_names_it(tmp_path):
    path = str(tmp_path / "old.sqlite")
    database.bind(things(), path, create_tables=True)

    with pytest.raises(DBSchemaError, match="lacks column size, which is NOT NULL"):
        database.bind(things("size"), path, create_tables=True)
    assert [row[1] for row in sqlite3.connect(path).execute('PRAGMA table_info("Thing")')] == ["id", "name"]


def test_a_server_upgrades_a_database_of_the_previous_version_and_its_queued_job_still_runs(cluster):
    executor = cluster.executor("example", cluster_secret=SECRET)
    server = cluster.server({"example": {"clients": executor.url}}, tokens={"haddock": TOKEN},
                            cluster_secret=SECRET, start=False)
    folder = server.folder / "data" / "jobs" / "accepted-before-the-upgrade"
    folder.mkdir(parents=True)
    (folder / "run.sh").write_bytes(script("echo old > out.txt"))
    with sqlite3.connect(server.folder / "data" / "orchestrator.sqlite") as previous:
        previous.executescript(PREVIOUS_SCHEMA)
        previous.execute('INSERT INTO "Job" ("user_id", "service", "portal", "state", "dir", "created_at", '
                         '"updated_at", "attempts") VALUES (7, \'example\', \'haddock\', \'Queued\', ?, '
                         '\'2026-01-02 03:04:05.000006\', \'2026-01-02 03:04:05.000006\', 0)', (str(folder),))

    server.start()

    assert "created by an earlier version; added the columns Job.public_id" in server.log_path.read_text()
    # The job the previous version accepted runs, and its portal still reaches it by its number.
    assert wait_for_outcome(server, 1, 30, TOKEN) == 200
    assert job(server, 1, TOKEN)["id"] == 1 and job(server, 1, TOKEN)["status"] == "Completed"
    new = submit(server, "echo new > out.txt", token=TOKEN)
    assert re.fullmatch("j[a-z2-7]{24}", new)
    assert wait_for_outcome(server, new, 30, TOKEN) == 200
    indexes = {row[1] for row in sqlite3.connect(server.folder / "data" / "orchestrator.sqlite")
               .execute('PRAGMA index_list("Job")')}
    assert {"unq_job__public_id", "idx_job__service_portal_user_id_state", "idx_job__service_state_portal_user_id",
            "idx_job__portal_service_state_created_at",
            "idx_job__portal_user_id_service_state_created_at"} <= indexes
    # The list reads the old job and the new one alike.
    listed = requests.get(f"{server.url}/jobs", headers=bearer(TOKEN), timeout=10).json()["jobs"]
    assert [entry["id"] for entry in listed] == [new, 1]
