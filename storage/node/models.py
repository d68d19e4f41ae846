"""The executor node's own Pony entities: one `Task` row per job the server handed it.

Kept in the node's own SQLite file, so a restarted executor still knows every task it holds.
"""
from __future__ import annotations

from datetime import datetime

from pony.orm import Database, LongStr, Optional, PrimaryKey, Required, composite_key

from storage.columns import iso, reader
from storage.node.states import TaskState

db = Database()


class Task(db.Entity):
    id = PrimaryKey(int, auto=True)
    job_id = Required(int, size=64)
    #: The server's unique name for the job; with `attempt` it identifies a submission.
    job_uid = Required(str, 64)
    attempt = Required(int)
    callback_url = Optional(str, 1024, nullable=True)
    dir = Required(str, 1024)
    state = Required(str, 16, default=TaskState.ACCEPTED.value, index=True)
    created_at = Required(datetime, precision=6)
    started_at = Optional(datetime, precision=6)
    finished_at = Optional(datetime, precision=6)
    exit_code = Optional(int)
    #: Process group of the running `bash run.sh`, to stop it if the node restarts.
    pid = Optional(int)
    #: Start time of that process (clock ticks after boot), so a reused pid is never killed.
    pid_start = Optional(int, size=64)
    #: backend = slurm: the Slurm job id, recorded as soon as sbatch returned it.
    slurm_id = Optional(str, 64, nullable=True)
    stderr_tail = Optional(LongStr, nullable=True, lazy=False)  # read with the row: a lazy one costs a query
    #: Why it failed although its script may have exited 0: the limit it went over, in words.
    reason = Optional(str, 1024, nullable=True)
    #: Seconds its script may run once started (the server's job's max_runtime); None: no limit.
    max_runtime = Optional(int)
    #: False until the server acknowledged the final report.
    reported = Required(bool, default=False)
    #: When the server first downloaded the result zip; a draining node waits for it (bounded).
    retrieved_at = Optional(datetime, precision=6)
    #: A GA4GH TES task's plan, as the server sent it (storage/node/tes_plan.py); None for every other job.
    #: NOTE: read with the row (not lazy): a lazy column costs every task's start a query.
    tes_plan = Optional(LongStr, nullable=True, lazy=False)
    composite_key(job_uid, attempt)

    def to_dict(self, new: bool = False) -> dict:
        """`new`: created in this session, so the columns it was not given are empty; reading one
        would make Pony reload the whole row (a query per submit)."""
        field = reader(self, new, EMPTY_WHEN_NEW)
        return {
            "id": str(self.id),
            "job_id": self.job_id,
            "attempt": self.attempt,
            "state": self.state,
            "created_at": iso(field("created_at")),
            "started_at": iso(field("started_at")),
            "finished_at": iso(field("finished_at")),
            "exit_code": field("exit_code"),
            "stderr_tail": field("stderr_tail"),
            "reason": field("reason"),
            "slurm_id": field("slurm_id"),
            "max_runtime": field("max_runtime"),
        }


#: The columns of a task that stay empty until it runs.
EMPTY_WHEN_NEW = frozenset({"started_at", "finished_at", "exit_code", "stderr_tail", "reason", "slurm_id",
                            "retrieved_at"})
