"""actors/runtime/serving.py's stop signals when Python drops their KeyboardInterrupt: a signal that
lands while Python runs a weakref callback or a `__del__` raises there, and Python prints and drops
the exception ("Exception ignored in"). Under `make run`, Ctrl-C while a node started was lost that way
now and then: the node served on, and make waited for ever. Fast: no signal is sent, no handler is
installed in this process."""
from __future__ import annotations

import gc
import signal
import sys
import weakref

from actors.runtime import serving


class _Thing:
    pass


def test_a_stop_whose_keyboardinterrupt_python_drops_is_kept_and_not_printed(capsys):
    serving._stop_asked.clear()
    hook, sys.unraisablehook = sys.unraisablehook, serving._unraisable
    try:
        thing = _Thing()
        watcher = weakref.ref(thing, lambda ref: serving._interrupt(signal.SIGINT, None))
        del thing  # the callback runs here, its KeyboardInterrupt is dropped by Python
        gc.collect()
        assert watcher() is None
    finally:
        sys.unraisablehook = hook
    assert serving._stop_asked.is_set()  # run_node stops before serving
    assert "KeyboardInterrupt" not in capsys.readouterr().err
    serving._stop_asked.clear()


def test_other_dropped_exceptions_are_still_reported(capsys):
    hook, sys.unraisablehook = sys.unraisablehook, serving._unraisable
    try:
        thing = _Thing()
        watcher = weakref.ref(thing, lambda ref: 1 / 0)
        del thing
        gc.collect()
        assert watcher() is None
    finally:
        sys.unraisablehook = hook
    assert "ZeroDivisionError" in capsys.readouterr().err
