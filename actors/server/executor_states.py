"""What the server says of an executor (GET /executors) and which event it logs: pure functions of
what the service's dispatcher observed. Runs in each dispatcher's process.

- `unknown`: not heard from since this server started (a configured executor that never answered
  stays so, quietly: `make run` starts no prodigy executor, and that is not a fault);
- `alive`, `draining`: it answers (a draining one takes nothing new);
- `lost`: it answered since the server started, or holds jobs, and has been silent for longer than
  executor_timeout;
- `gone`: it said it leaves (the last heartbeat of a drained node); only an answer of a node that
  is not draining (started again) brings it back.
"""
from __future__ import annotations

UNKNOWN, ALIVE, DRAINING, LOST, GONE = "unknown", "alive", "draining", "lost", "gone"


def after_contact(previous: str, draining: bool, leaving: bool = False) -> tuple[str, str | None]:
    """The state once the executor answered (or sent a heartbeat), and the event to log (None: no
    change)."""
    if previous == GONE and draining and not leaving:
        # NOTE: a node that said it leaves still answers for the moment it takes to stop.
        return GONE, None
    state = GONE if leaving else DRAINING if draining else ALIVE
    return state, (None if state == previous else state)


def after_silence(previous: str, holds_jobs: bool, silent_for: float, timeout: float) -> tuple[str, str | None]:
    """The state of an executor that does not answer, silent for `silent_for` seconds, and the event
    to log. One that answered since the server started, or that holds jobs (they must run
    elsewhere), is lost after `timeout`; one never heard from (`unknown`) or that left (`gone`)
    and holding nothing stays as it is."""
    if previous == LOST or silent_for <= timeout or not (holds_jobs or previous in (ALIVE, DRAINING)):
        return previous, None
    return LOST, LOST
