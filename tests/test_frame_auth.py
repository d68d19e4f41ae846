"""The actor system's frame check, without processes: forged, replayed, stale and garbled frames."""
from __future__ import annotations

import pickle
import struct

import pytest

from actors.runtime import frame_auth


@pytest.fixture
def key():
    previous = frame_auth._key
    frame_auth.use_key(frame_auth.new_key())
    yield
    frame_auth._key = previous


def test_a_frame_signed_with_the_nodes_key_round_trips_once(key):
    frame = frame_auth.dumps({"job": 42})

    assert frame_auth.loads(frame) == {"job": 42}
    with pytest.raises(frame_auth.FrameRejected, match="replayed"):
        frame_auth.loads(frame)


def test_a_plain_pickle_is_refused_before_it_is_unpickled(key):
    class Boom:
        def __reduce__(self):
            return pytest.fail, ("the pickle was loaded",)

    with pytest.raises(frame_auth.FrameRejected, match="not a signed frame"):
        frame_auth.loads(pickle.dumps(Boom()))


def test_a_frame_signed_with_another_key_or_altered_is_refused(key):
    frame = frame_auth.dumps("hello")
    altered = frame[:-1] + bytes([frame[-1] ^ 1])
    frame_auth.use_key(frame_auth.new_key())

    for forged in (frame, altered):
        with pytest.raises(frame_auth.FrameRejected, match="bad signature"):
            frame_auth.loads(forged)


def test_a_frame_older_than_the_window_is_refused(key, monkeypatch):
    frame = frame_auth.dumps("late")
    real_time = frame_auth.time.time
    monkeypatch.setattr(frame_auth.time, "time", lambda: real_time() + frame_auth.WINDOW_SECONDS + 1)

    with pytest.raises(frame_auth.FrameRejected, match="window"):
        frame_auth.loads(frame)


def test_garbage_and_truncated_frames_are_refused(key):
    frame = frame_auth.dumps("whole")
    for garbage in (b"", b"OAF1", frame[:40], struct.pack(">4sc", b"OAF1", b"Z") + bytes(200)):
        with pytest.raises(frame_auth.FrameRejected):
            frame_auth.loads(garbage)


def test_without_a_key_nothing_is_sent_or_accepted():
    previous = frame_auth._key
    frame_auth._key = None
    try:
        with pytest.raises(RuntimeError):
            frame_auth.dumps("x")
        with pytest.raises(frame_auth.FrameRejected):
            frame_auth.loads(b"OAF1" + bytes(100))
    finally:
        frame_auth._key = previous


def test_acknowledgements_are_signed_and_may_repeat(key):
    from thespian.system.transport import TCPTransport, streamBuffer

    ack = TCPTransport.ackMsg
    for _ in range(2):
        buffer = streamBuffer.ReceiveBuffer(frame_auth.loads)
        buffer.addMore(ack)
        assert buffer.completed()[0] == streamBuffer.ackPacket
