"""The change feed's cursors: an entry number sealed so that portals can neither read nor forge it.

Runs in the server's main process (GET /events, storage/changes.py). The numbers count every
portal's changes, so a readable one would tell a portal how many changes the others had between two
of its reads; a forged one could skip about. A cursor is a random nonce, the number XORed with a
pad drawn from the nonce, and a tag over both (HMAC-SHA256 as the pseudo-random function for pad
and tag: encrypt-then-MAC), so two cursors of the same position differ and one not made here fails.

The key is drawn once, on first use, and stored in the database (`ServerValue`), so it survives
restarts and every process and thread of the server reads the same one.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from pony.orm import TransactionIntegrityError, db_session

from storage.models import ServerValue

#: The ServerValue that holds the key (hex).
KEY_NAME = "feed_cursor_key"
#: What a cursor looks like (38 base64url characters), for the OpenAPI document.
PATTERN = r"^[A-Za-z0-9_-]{38}$"
_NONCE, _SEQ, _TAG = 8, 8, 12

_key: bytes | None = None


def key() -> bytes:
    """The server's cursor key, drawn and stored on first use (cached for the process)."""
    global _key
    if _key is None:
        _key = _stored_key()
    return _key


def _stored_key() -> bytes:
    for _ in range(2):
        try:
            with db_session:
                row = ServerValue.get(name=KEY_NAME) or ServerValue(name=KEY_NAME, value=secrets.token_hex(32))
                return bytes.fromhex(row.value)
        except TransactionIntegrityError:
            continue  # another thread or process stored its own first: read that one
    raise RuntimeError("the change feed's cursor key could not be stored")


def _mac(purpose: bytes, data: bytes) -> bytes:
    return hmac.new(key(), purpose + data, hashlib.sha256).digest()


def seal(seq: int) -> str:
    """The cursor of the change feed's position just after entry `seq` (0: its start)."""
    nonce = secrets.token_bytes(_NONCE)
    hidden = bytes(a ^ b for a, b in zip(seq.to_bytes(_SEQ, "big"), _mac(b"pad", nonce)))
    sealed = nonce + hidden
    return base64.urlsafe_b64encode(sealed + _mac(b"tag", sealed)[:_TAG]).decode().rstrip("=")


def unseal(cursor: str) -> int:
    """The entry number of a cursor `seal` made; ValueError for any other string."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"==")
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError(cursor) from None
    sealed, tag = raw[:-_TAG], raw[-_TAG:]
    if len(raw) != _NONCE + _SEQ + _TAG or base64.urlsafe_b64encode(raw).decode().rstrip("=") != cursor \
            or not hmac.compare_digest(tag, _mac(b"tag", sealed)[:_TAG]):
        raise ValueError(cursor)
    nonce, hidden = sealed[:_NONCE], sealed[_NONCE:]
    return int.from_bytes(bytes(a ^ b for a, b in zip(hidden, _mac(b"pad", nonce))), "big")
