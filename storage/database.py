"""Binding a Pony `Database` to SQLite (WAL, busy timeout) or to a PostgreSQL URL, and bringing the
tables a previous version created up to date.

Each process binds once. SQLite gets WAL and a busy timeout on every connection, because the web
threads and several actor processes share one file. The process that creates the tables (the
server's or an executor's main process) also adds the columns a newer version introduced.
"""
from __future__ import annotations

import logging
import os
import sqlite3
from urllib.parse import unquote, urlsplit

from pony.orm import Database, db_session
from pony.orm.core import DBSchemaError

BUSY_TIMEOUT_MS = 10_000
#: How long /health waits for SQLite's write lock before it says the database is locked.
WRITE_PROBE_SECONDS = 1.0


def _sqlite_pragmas(db: Database, connection) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def bind(db: Database, url: str, *, create_tables: bool) -> None:
    """Bind `db` to `url` unless it is already bound in this process.

    `url` is a SQLite file path or a `postgresql://user:password@host:port/name` URL. Tables are
    created, and those of a previous version completed (`add_missing_columns`), only where
    `create_tables` is true: in the one process that starts the system.
    """
    if db.provider is not None:
        return
    if url.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(url)
        db.bind(provider="postgres", user=unquote(parts.username or ""), password=unquote(parts.password or ""),
                host=parts.hostname or "localhost", port=parts.port or 5432, database=parts.path.lstrip("/"))
    else:
        path = os.path.abspath(url)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        db.on_connect(provider="sqlite")(_sqlite_pragmas)
        db.bind(provider="sqlite", filename=path, create_db=True, timeout=BUSY_TIMEOUT_MS / 1000)
    if not create_tables:
        db.generate_mapping()
        return
    db.generate_mapping(check_tables=False)
    added = add_missing_columns(db)
    if added:
        logging.getLogger("orchestrator.database").warning("the database was created by an earlier version; "
                                                           "added the columns %s", ", ".join(added))
    # NOTE: Pony creates missing tables, and the missing (non-unique) indexes of existing ones.
    db.create_tables(check_tables=True)


def is_locked(error: BaseException) -> bool:
    """The error is SQLite's "database is locked" (another connection holds the write lock too long)."""
    return "database is locked" in str(error) or "database is busy" in str(error)


def write_lock_free(db: Database, wait: float = WRITE_PROBE_SECONDS) -> bool:
    """Whether a write could start within `wait` seconds (SQLite: another process may hold its write
    lock, e.g. an outside `BEGIN EXCLUSIVE`, which readers do not notice in WAL mode). Always true on
    PostgreSQL, whose row locks do not stop other writes."""
    if db.provider is None or db.provider.dialect != "SQLite":
        return True
    probe = sqlite3.connect(db.provider.pool.filename, timeout=wait)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.rollback()
        return True
    except sqlite3.OperationalError as exc:
        if is_locked(exc):
            return False
        raise
    finally:
        probe.close()


@db_session(ddl=True)
def add_missing_columns(db: Database) -> list[str]:
    """Add to the existing tables of `db` the columns of its entities they lack (ALTER TABLE ... ADD
    COLUMN, on SQLite and PostgreSQL), each with its unique index if it is unique.

    Pony creates tables but never alters one, so a column a newer version added to an entity would
    be missing from a database the previous version created. Only nullable columns can be added
    (the rows already there get NULL); a missing NOT NULL column is an error that names it. Runs
    between `generate_mapping(check_tables=False)` and `create_tables()`, as `bind` calls it.

    Returns:
        the added columns, as "table.column".
    """
    provider = db.provider
    quote = provider.quote_name
    connection = db.get_connection()
    cursor = connection.cursor()
    added = []
    for table in db.schema.tables.values():
        if not provider.table_exists(connection, table.name):
            continue  # create_tables makes it whole
        cursor.execute(f"SELECT * FROM {quote(table.name)} WHERE 0 = 1")
        present = {description[0] for description in cursor.description}
        for column in table.column_list:
            if column.name in present:
                continue
            if column.is_not_null or column.is_pk:
                raise DBSchemaError(f"table {table.name} lacks column {column.name}, which is NOT NULL and cannot be "
                                    f"added to existing rows automatically; add it by hand with a value for them.")
            default = f" DEFAULT {column.sql_default}" if column.sql_default not in (None, True, False) else ""
            cursor.execute(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {column.sql_type}{default}")
            if column.is_unique:
                index = provider.get_default_index_name(table.name, (column.name,), is_unique=True)
                cursor.execute(f"CREATE UNIQUE INDEX {quote(index)} ON {quote(table.name)} ({quote(column.name)})")
            added.append(f"{table.name}.{column.name}")
    return added
