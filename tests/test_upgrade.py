"""A database a previous version created keeps working: the columns added since are added at start."""
from __future__ import annotations

import sqlite3
from datetime import datetime

import pytest
from pony.orm import Database, Optional, PrimaryKey, Required, db_session
from pony.orm.core import DBSchemaError, TransactionIntegrityError

from storage import database


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
