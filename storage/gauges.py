"""The server's state as numbers, read from its database when /metrics is scraped.

Runs in the server's main process (web/metrics.py). The jobs that wait or run are few and found
by the state index, so they are counted at every scrape; the ended ones are nearly all rows (a
million take SQLite about 130 ms to count), so web/metrics.py counts them in the background.
"""
from __future__ import annotations

from pony.orm import db_session

from storage.models import db
from storage.states import ACTIVE, TERMINAL, JobState

# NOTE: constants of this code, not input: written into the SQL as they are.
_NOT_ENDED = ", ".join(f"'{s.value}'" for s in sorted(ACTIVE | {JobState.QUEUED}))
_ENDED = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL | {JobState.CLEANED}))


@db_session
def jobs_not_ended() -> list[tuple[str, str, int]]:
    """(service, state, number of jobs) for every pair that has jobs queued or under way."""
    return [tuple(row) for row in db.select(
        f"SELECT service, state, COUNT(*) FROM Job WHERE state IN ({_NOT_ENDED}) GROUP BY service, state")]


@db_session
def jobs_ended() -> list[tuple[str, str, int]]:
    """(service, state, number of jobs) for every pair that has ended jobs (Cleaned included)."""
    return [tuple(row) for row in db.select(
        f"SELECT service, state, COUNT(*) FROM Job WHERE state IN ({_ENDED}) GROUP BY service, state")]


@db_session
def users_waiting() -> list[tuple[str, int]]:
    """(service, number of distinct users with a queued job): a user is a portal's user id."""
    return [tuple(row) for row in db.select(
        "SELECT service, COUNT(*) FROM (SELECT DISTINCT service, portal, user_id FROM Job WHERE state = $queued) "
        "GROUP BY service", {"queued": JobState.QUEUED.value})]
