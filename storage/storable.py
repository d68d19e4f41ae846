"""What a text column can hold: the one place where text that came from outside (a job's stderr,
an executor's reason, anything a caller or a job script controls) is made storable.

Runs in whichever process writes the server's rows (its web threads and its actors): the entities
of storage/models.py call `clean_row` from Pony's before_insert / before_update hooks, so every
row is cleaned at the last moment, whichever function wrote it.

PostgreSQL's text columns cannot hold the NUL character (psycopg2 refuses the whole statement,
and with it the transaction); SQLite can. NUL is dropped on both, so both keep the same text.
"""
from __future__ import annotations


def storable(text: str) -> str:
    """`text` without the NUL characters no PostgreSQL text column can hold."""
    return text.replace("\x00", "") if "\x00" in text else text


def clean_row(entity) -> None:
    """Make every text attribute of `entity` storable (a Pony before_insert / before_update hook).

    A primary key is left alone (changing it would change the row's identity): callers refuse keys
    that hold NUL (web/server_app.py refuses such an executor URL).
    """
    # NOTE: the values held, not getattr: reading an attribute would make Pony reload a new row, and
    # add every column read to the optimistic check of the UPDATE.
    for attr, value in list(entity._vals_.items()):
        if not attr.is_pk and isinstance(value, str) and "\x00" in value:
            setattr(entity, attr.name, storable(value))
