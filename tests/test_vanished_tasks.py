"""actors.node.executor.vanished: which tasks whose row says running have no process, recognised by pid
and process start time, on real processes. No server or executor processes."""
from __future__ import annotations

import os
import subprocess

import pytest

from actors.node.executor import vanished
from actors.runtime.processes import start_time


@pytest.mark.processes
def test_a_task_is_vanished_when_its_pid_is_gone_or_now_another_process(tmp_path):
    ended = subprocess.Popen(["true"])
    ended.wait()
    me, born = os.getpid(), start_time(os.getpid())
    rows = [(1, me, born),            # its process runs
            (2, ended.pid, 12345),    # its process is gone
            (3, me, born + 1),        # its pid now belongs to another process
            (4, None, None),          # no process was ever recorded
            (5, ended.pid, 12345)]    # gone, but the backend still holds it (or its end awaits saving)

    assert vanished(rows, kept=lambda task_id: task_id == 5) == [2, 3, 4]
