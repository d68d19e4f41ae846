"""Every frame of a node's actor system is authenticated before anything in it is unpickled.

Thespian's TCP transport sends pickles, and unpickling runs code: anyone who could get bytes onto
an actor's or the admin's port (they listen on 127.0.0.1, so any local user) could run code as the
node's user. This module replaces the transport's serializer with one that signs each frame with
HMAC-SHA256 under a key made at random when the node starts its actor system. The key lives only in
the memory of the node's main process and of the processes forked from it (the admin, the logger,
every actor); no file holds it, so no other user can read it. A frame whose signature is wrong
(forged or garbled), whose time stamp is outside the window, or whose nonce was seen before
(replayed) is dropped before `pickle.loads` and logged.

Runs in every process of a node: the main process imports it (through actors/runtime/system.py) before
starting the actor system, and the forked processes inherit the patched transport and the key.

Frame layout (inside Thespian's own length prefix):
    MAGIC | kind | time stamp (ms, 8 bytes) | nonce (16 bytes) | HMAC (32 bytes) | pickle
A message frame (kind M) is fresh and unique. Thespian's acknowledgements are fixed byte strings
it sends again and again, so they are signed once with kind A and not checked for replay; they
unpickle to the two ACK strings only, which the transport never takes for a message.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import struct
import threading
import time

from thespian.system.transport import TCPTransport, streamBuffer

log = logging.getLogger("orchestrator.frames")

MAGIC = b"OAF1"
KIND_MESSAGE = b"M"
KIND_ACK = b"A"
_HEADER = struct.Struct(">4sc Q 16s 32s")
#: Thespian retries a transmit for up to 5 minutes, serialized once: accept frames that old.
WINDOW_SECONDS = 330.0
#: A frame from the future (clock stepped back) by more than this is refused too.
FUTURE_SECONDS = 30.0
#: Dropped frames logged one by one before the log goes quiet (then once a minute, with a count).
LOG_BURST = 10

_key: bytes | None = None


class FrameRejected(Exception):
    """A frame that is not the node's own; Thespian closes the connection and drops it."""


class _Seen:
    """Nonces of accepted frames, remembered for at least WINDOW_SECONDS (two rotating sets)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.current: set[bytes] = set()
        self.previous: set[bytes] = set()
        self.rotated = time.monotonic()

    def first_time(self, nonce: bytes) -> bool:
        with self.lock:
            if time.monotonic() - self.rotated > WINDOW_SECONDS:
                self.previous, self.current, self.rotated = self.current, set(), time.monotonic()
            if nonce in self.current or nonce in self.previous:
                return False
            self.current.add(nonce)
            return True


class _Drops:
    """Counts dropped frames and logs them without letting a flood fill the log."""

    def __init__(self):
        self.count = 0
        self.quiet_since = 0.0
        self.unlogged = 0

    def report(self, why: str) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count <= LOG_BURST or now - self.quiet_since > 60:
            extra = f" ({self.unlogged} more since the last report)" if self.unlogged else ""
            log.warning("dropped an actor-system frame that is not this node's own: %s%s", why, extra)
            self.quiet_since, self.unlogged = now, 0
        else:
            self.unlogged += 1


_seen = _Seen()
_drops = _Drops()


def _mac(kind: bytes, stamp: int, nonce: bytes, body: bytes) -> bytes:
    return hmac.new(_key, MAGIC + kind + stamp.to_bytes(8, "big") + nonce + body, hashlib.sha256).digest()


def _sign(kind: bytes, stamp: int, nonce: bytes, body: bytes) -> bytes:
    return _HEADER.pack(MAGIC, kind, stamp, nonce, _mac(kind, stamp, nonce, body)) + body


def dumps(obj) -> bytes:
    if _key is None:
        raise RuntimeError("the actor system has no frame key: start it through actors.runtime.system.start")
    return _sign(KIND_MESSAGE, int(time.time() * 1000), os.urandom(16), pickle.dumps(obj))


def loads(frame: bytes):
    try:
        return pickle.loads(_verified(frame))
    except FrameRejected as exc:
        _drops.report(str(exc))
        raise


def _verified(frame: bytes) -> bytes:
    if _key is None:
        raise FrameRejected("this process has no frame key")
    if len(frame) < _HEADER.size or not frame.startswith(MAGIC):
        raise FrameRejected("not a signed frame")
    magic, kind, stamp, nonce, mac = _HEADER.unpack_from(frame)
    body = frame[_HEADER.size:]
    if not hmac.compare_digest(mac, _mac(kind, stamp, nonce, body)):
        raise FrameRejected("bad signature (forged or garbled)")
    if kind == KIND_ACK:
        return body
    if kind != KIND_MESSAGE:
        raise FrameRejected("unknown frame kind")
    age = time.time() - stamp / 1000
    if age > WINDOW_SECONDS or age < -FUTURE_SECONDS:
        raise FrameRejected(f"time stamp {age:.0f} s old, outside the {WINDOW_SECONDS:.0f} s window (replayed?)")
    if not _seen.first_time(nonce):
        raise FrameRejected("nonce seen before (replayed)")
    return body


class _Serializer:
    """What TCPTransport calls its `serializer`: `dumps` and `loads`."""

    dumps = staticmethod(dumps)
    loads = staticmethod(loads)


def _ack(packet: str) -> bytes:
    return streamBuffer.toSendBuffer(packet, lambda obj: _sign(KIND_ACK, 0, bytes(16), pickle.dumps(obj)))


def use_key(key: bytes) -> None:
    """Sign and check every frame of this process (and of those it forks from now on) with `key`."""
    global _key
    _key = key
    TCPTransport.ackMsg = _ack(streamBuffer.ackPacket)
    TCPTransport.ackDataErrMsg = _ack(streamBuffer.ackDataErrPacket)


def new_key() -> bytes:
    return os.urandom(32)


def _completed(self):
    """ReceiveBuffer.completed, unpickling a frame once however often it is asked.

    NOTE: Thespian asks twice for a message that arrives where it waited for an ACK; a second
    check of the same frame would take it for a replay.
    """
    if self._size is None or self._blen != self._size:
        return None
    if not hasattr(self, "_message"):
        self._message = self._deserialize(self._buf)
    return self._message, self._extra


# NOTE: from the moment this module is imported, no frame is unpickled unchecked: without a key,
# every frame is refused (and nothing can be sent).
TCPTransport.serializer = _Serializer
streamBuffer.ReceiveBuffer.completed = _completed
