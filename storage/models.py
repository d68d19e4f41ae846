"""The server's Pony entities: one `Job` row per accepted upload.

`db` is bound once per process by `storage.database.bind`; actor processes forked after the bind
inherit it (Pony opens a fresh connection per process).
"""
from __future__ import annotations

import secrets
from datetime import datetime

from pony.orm import Database, LongStr, Optional, PrimaryKey, Required, Set, composite_index, composite_key

from storage.columns import iso, reader
from storage.states import TERMINAL, JobState
from storage.storable import clean_row

db = Database()


class Job(db.Entity):
    id = PrimaryKey(int, size=64, auto=True)
    user_id = Required(int, size=64)
    service = Required(str, 64)
    #: The portal (token name) that submitted it; None when the server runs without tokens.
    portal = Optional(str, 64, nullable=True)
    #: With tokens, the random id the API shows instead of `id` (storage.public_ids); None without
    #: tokens, and for jobs created before public ids existed.
    public_id = Optional(str, 32, unique=True, nullable=True)
    state = Required(str, 16, default=JobState.QUEUED.value, index=True)
    #: Folder holding the uploaded files on the server.
    dir = Required(str, 1024)
    created_at = Required(datetime, precision=6)
    updated_at = Required(datetime, precision=6)
    dispatched_at = Optional(datetime, precision=6)
    started_at = Optional(datetime, precision=6)
    finished_at = Optional(datetime, precision=6)
    cleaned_at = Optional(datetime, precision=6)
    #: Terminal state reached (kept after cleaning, so history survives).
    outcome = Optional(str, 16, nullable=True)
    #: How many times it was sent to an executor; the current value is the attempt token.
    attempts = Required(int, default=0)
    executor = Optional(str, 1024, nullable=True)
    remote_id = Optional(str, 64, nullable=True)
    exit_code = Optional(int)
    reason = Optional(str, 1024, nullable=True)
    stderr_tail = Optional(LongStr, nullable=True, lazy=False)  # read with the row: a lazy one costs a query
    #: Fetches of this attempt's results the executor answered with an error; NULL: none.
    fetch_failures = Optional(int)
    #: Path of the stored result zip, once fetched.
    result_path = Optional(str, 1024, nullable=True)
    #: Where its webhooks go (Running and its outcome); None: the portal asked for none.
    callback_url = Optional(str, 2048, nullable=True)
    #: Orders its user's queued jobs (higher first); NULL: 0 (storage.fair_share.queue_order).
    priority = Optional(int)
    #: The portal's label for a set of users (a course, a project): runs_per_group caps it.
    group = Optional(str, 64, nullable=True, column="job_group")  # NOTE: GROUP is an SQL keyword
    #: Seconds it may run once started (the upload's, else its service's, at upload); None: no limit.
    max_runtime = Optional(int)
    composite_index(service, state, id)
    composite_index(state, finished_at)
    #: A user is (portal, user_id): max_queued_per_user counts a portal's user's queued jobs.
    composite_index(service, portal, user_id, state)
    #: GET /jobs (storage/job_list.py): every filter of the list is an equality on the leading
    #: columns, and created_at gives the page order, so a page is one short walk per index.
    composite_index(portal, service, state, created_at)
    composite_index(portal, user_id, service, state, created_at)
    #: ...and the `group` filter: a group's jobs (a course's) without walking its portal's others.
    composite_index(portal, group, service, state, created_at)
    #: The groups of waiting and active jobs (the overview: storage/overview.py): `group IS NOT
    #: NULL` is a range of this index, so the jobs without a group are not read (they are in it).
    composite_index(state, group, service, portal)
    #: Each user's queued jobs of a service (a waiting job's position: storage/queue_view.py), read
    #: without walking the service's ended jobs.
    composite_index(service, state, portal, user_id)
    #: A portal's TES tasks in one TES state (storage/tes_tasks.py): every TES state is one or two
    #: (outcome, state) pairs (a cleaned task keeps its outcome), each a walk of this index in page
    #: order (newest first).
    composite_index(portal, outcome, state, id)
    # NOTE: its reason and stderr tail come from job scripts and executors (storage/storable.py).
    before_insert = before_update = clean_row

    def changed(self, state: JobState, now: datetime, held_since: datetime | None = None) -> None:
        """Record its move to `state` (storage.states.advance calls this): `record_change`, and, for
        an end of a job that held a slot since `held_since` (its admission), that slot time as its
        user's fair-share usage (the time the quota counts while it runs, too)."""
        record_change(self.id, self.portal, self.callback_url, state, now)
        if state in TERMINAL and held_since is not None:
            UsageCharge(service=self.service, portal=self.portal, user_id=self.user_id,
                        slot_seconds=max((now - held_since).total_seconds(), 0.0), at=now)

    def to_dict(self, new: bool = False) -> dict:
        """The public view of a job, as `GET /jobs/{id}` and `POST /upload` answer it (`view`).

        `new`: the job was just created in this session, so the columns it was not given are empty;
        reading one would make Pony reload the whole row (a query per upload).
        """
        return view(reader(self, new, EMPTY_WHEN_NEW))


def view(field) -> dict:
    """The public view of a job from `field(column)`, the value of each of VIEW_COLUMNS; its `id` is
    the public id when it has one.

    Job.to_dict reads an entity's; storage/job_list.py reads a page's rows straight from the
    database, without making entities (Pony's parsing of a row costs about 0.3 ms: 300 ms for a
    page of 1,000 jobs).
    """
    return {
        "id": field("public_id") or field("id"),
        "user_id": field("user_id"),
        "service": field("service"),
        "status": field("state"),
        "outcome": field("outcome"),
        **{name: iso(field(name)) for name in TIMES},
        "attempts": field("attempts"),
        "executor": field("executor"),
        "exit_code": field("exit_code"),
        "reason": field("reason"),
        "stderr_tail": field("stderr_tail"),
        "max_runtime": field("max_runtime"),
        "priority": field("priority") or 0,
        "group": field("group"),
    }


#: The times of a job, in the order the view shows them.
TIMES = ("created_at", "dispatched_at", "started_at", "finished_at", "cleaned_at")
#: The columns `view` reads.
VIEW_COLUMNS = ("id", "public_id", "user_id", "service", "state", "outcome", *TIMES, "attempts", "executor",
                "exit_code", "reason", "stderr_tail", "max_runtime", "priority", "group")

#: The columns of a job that stay empty until it is dispatched or ends.
EMPTY_WHEN_NEW = frozenset({"outcome", "dispatched_at", "started_at", "finished_at", "cleaned_at", "executor",
                            "exit_code", "reason", "stderr_tail"})


#: The moves a webhook is sent for: the job started, or it ended.
WEBHOOK_STATES = frozenset({JobState.RUNNING, *TERMINAL})


def record_change(job: int, portal: str | None, callback_url: str | None, state: JobState, now: datetime) -> None:
    """Record job `job`'s move to `state` in the change log, and queue its webhook if one is due, in
    the transaction of the move itself: a change is never stored without its entry, nor an entry
    without its change. Takes the job's columns, not the entity: a job just created has them at hand,
    and reading them back from its new row would make Pony reload it (a query per upload)."""
    change = JobChange(job=job, portal=portal, state=state.value, at=now)
    if callback_url and state in WEBHOOK_STATES:
        WebhookDelivery(change=change, job=job, portal=portal, url=callback_url, event=state.value,
                        created_at=now, next_attempt_at=now)


class JobChange(db.Entity):
    """One move of a job to a state (its creation as Queued included): the change feed's entries,
    in the order they were stored (`id` is the feed's cursor). Kept for ServerConfig.change_log_seconds."""

    id = PrimaryKey(int, size=64, auto=True)
    #: The job's number (not a relation: an entry is written with every move, and must cost little).
    job = Required(int, size=64)
    portal = Optional(str, 64, nullable=True)
    state = Required(str, 16)
    at = Required(datetime, precision=6)
    deliveries = Set("WebhookDelivery")
    #: A portal reads its own entries in order.
    composite_index(portal, id)


class WebhookDelivery(db.Entity):
    """The outbox: one webhook to send (a change of a job that gave a callback_url) and how its
    attempts went. `next_attempt_at` is None once it was delivered or given up."""

    id = PrimaryKey(int, size=64, auto=True)
    change = Required(JobChange)
    job = Required(int, size=64)
    portal = Optional(str, 64, nullable=True)
    url = Required(str, 2048)
    #: The state the job moved to (Running, Completed, Failed, Cancelled).
    event = Required(str, 16)
    created_at = Required(datetime, precision=6)
    next_attempt_at = Optional(datetime, precision=6)
    #: Its Standard Webhooks `webhook-id`, the same for every attempt: random, so that the ids a
    #: portal receives tell nothing of other portals' jobs (NULL in rows of an earlier version).
    webhook_id = Optional(str, 40, nullable=True, default=lambda: "msg_" + secrets.token_urlsafe(18))
    attempts = Required(int, default=0)
    delivered_at = Optional(datetime, precision=6)
    gave_up_at = Optional(datetime, precision=6)
    #: The receiver's last HTTP status; None when it did not answer.
    last_status = Optional(int)
    last_error = Optional(str, 1024, nullable=True)
    #: A portal's due deliveries, in the order they are due: a poll's read stops after its batch.
    composite_index(portal, next_attempt_at, id)
    #: A job's deliveries in order (those before one must be delivered or given up first).
    composite_index(job, id)
    before_insert = before_update = clean_row


class UsageCharge(db.Entity):
    """The slot time one ended job ran, written in the transaction of its end (Job.changed), until
    the quota folds it into its user's `Usage` (storage/usage.py)."""

    id = PrimaryKey(int, size=64, auto=True)
    service = Required(str, 64)
    portal = Optional(str, 64, nullable=True)
    user_id = Required(int, size=64)
    slot_seconds = Required(float)
    at = Required(datetime, precision=6)


class Usage(db.Entity):
    """A user's usage of a service for fair share: slot-seconds as of `as_of`, decaying from then
    with the service's half-life (storage/fair_share.py). Written only by the quota (storage/usage.py)."""

    id = PrimaryKey(int, size=64, auto=True)
    service = Required(str, 64)
    portal = Optional(str, 64, nullable=True)
    user_id = Required(int, size=64)
    slot_seconds = Required(float)
    as_of = Required(datetime, precision=6)
    composite_key(service, portal, user_id)


class ServerValue(db.Entity):
    """A named value every process of the server shares through the database, and that outlives
    them: the change feed's cursor key (storage/feed_cursors.py), how far the feed was pruned."""

    name = PrimaryKey(str, 64)
    value = Required(str, 256)


class Executor(db.Entity):
    """An executor node the server knows, from the configuration or from its own registration."""

    url = PrimaryKey(str, 1024)
    service = Required(str, 64, index=True)
    slots = Required(int, default=0)
    #: "unknown", "alive", "draining", "lost" or "gone" (actors/server/executor_states.py).
    state = Required(str, 16, default="unknown")
    #: True when it registered itself; False when it comes from a `clients` list.
    registered = Required(bool, default=False)
    last_seen = Optional(datetime, precision=6)
    #: Why the server last failed to reach it (kept once it answers again: the last failure's reason).
    last_error = Optional(str, 1024)
    #: How it runs jobs ("local", "slurm"), as its /health says; None until a probe asked.
    backend = Optional(str, 16, nullable=True)
    #: Its overflow tier, as its /health or heartbeat says; None until it told (1 is filled first).
    tier = Optional(int)
    before_insert = before_update = clean_row


class TesTask(db.Entity):
    """A job submitted as a GA4GH TES task (web/tes/): the task document as the client sent it
    (name, description, tags, executors, inputs, outputs, resources, as JSON), which the TES views
    give back. A table of its own rather than columns of `Job`: portal jobs carry none of it, and a
    new table needs no migration of the jobs table."""

    #: The job's number.
    job = PrimaryKey(int, size=64)
    #: The portal that sent it (None without tokens): the list reads a portal's tasks only.
    portal = Optional(str, 64, nullable=True)
    #: The task's `name` ("" when it gave none): `name_prefix` filters on it.
    name = Optional(str, 1024)
    document = Required(LongStr, lazy=False)
    #: A portal's tasks, newest (highest job number) first: the list's order and page cursor.
    composite_index(portal, job)
    #: `name_prefix`: a range of names (SQLite compares text bytewise, so a prefix is a range).
    composite_index(portal, name, job)


class TesTag(db.Entity):
    """One tag of a TES task (its document's `tags`), written with the task, so that the list's
    `tag_key`/`tag_value` filters are index walks (storage/tes_tasks.py) rather than reads of every
    task's document. Lengths are capped at create (web/tes/validate.py) so that an index entry fits
    PostgreSQL's B-tree (about 2,700 bytes)."""

    id = PrimaryKey(int, size=64, auto=True)
    #: The task's job number.
    job = Required(int, size=64)
    key = Optional(str, 128)  # NOTE: Optional: "" is a key a client may send (Required refuses it)
    value = Optional(str, 400)
    #: Its task's portal (None without tokens): a portal's tags only.
    portal = Optional(str, 64, nullable=True)
    #: A task's tag of a key (the other pairs of a filter, checked per task).
    composite_key(job, key)
    #: `tag_key` with a `tag_value`, newest first...
    composite_index(portal, key, value, job)
    #: ...and `tag_key` with any value.
    composite_index(portal, key, job)
