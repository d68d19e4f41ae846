"""Binding a Pony `Database` to SQLite (WAL, busy timeout) or to a PostgreSQL URL.

Each process binds once. SQLite gets WAL and a busy timeout on every connection, because the web
threads and several actor processes share one file.
"""
from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from pony.orm import Database

BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(db: Database, connection) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def bind(db: Database, url: str, *, create_tables: bool) -> None:
    """Bind `db` to `url` unless it is already bound in this process.

    `url` is a SQLite file path or a `postgresql://user:password@host:port/name` URL. Tables are
    created only where `create_tables` is true: in the one process that starts the system.
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
    db.generate_mapping(create_tables=create_tables)
