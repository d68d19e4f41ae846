"""Every message the actors exchange: frozen dataclasses of plain data.

Messages are doorbells: they carry ids, names and small numbers, never file contents or Pony
entities. The database is the truth; a lost message is recovered by the periodic sweeps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conf.settings import ClientConfig, ServerConfig

#: A user as quotas count them: (portal, user_id). Each portal numbers its users independently, so
#: user 7 of one portal is not user 7 of another; the portal is None on a server without tokens.
UserKey = tuple[str | None, int]


# --- set-up ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Configure:
    """run_server.py (through the node's watchdog) → supervisor, then supervisor → each server actor:
    its settings; `service` is set for a dispatcher only."""

    config: ServerConfig
    service: str = ""


@dataclass(frozen=True)
class Peers:
    """Supervisor → each server actor: the current addresses of the others (re-sent after a restart)."""

    queue: Any
    quota: Any
    retriever: Any
    janitor: Any
    #: (service name, dispatcher address) pairs.
    dispatchers: tuple[tuple[str, Any], ...]

    def dispatcher(self, service: str):
        return dict(self.dispatchers).get(service)


@dataclass(frozen=True)
class ActorStarted:
    """Each server actor → supervisor, once configured: its role and process id (for /health)."""

    role: str
    pid: int


@dataclass(frozen=True)
class Roster:
    """Web → supervisor: answer with a `Pong` whose `processes` maps each role to its pid."""


@dataclass(frozen=True)
class Batch:
    """Web → a server actor: several messages in one (what piled up while the last was sent); the
    actor handles each in turn, as if it had come alone."""

    messages: tuple


@dataclass(frozen=True)
class Forward:
    """Web → supervisor: hand `message` to the child `role` (the web layer's way to an actor whose
    address it does not know right now)."""

    role: str
    message: object


@dataclass(frozen=True)
class CancelJob:
    """Web → the job's service's dispatcher: the job is Cancelled in the database already (on its
    portal's request); end it as every ending is ended (its quota and executor slots are freed) and
    stop its task where it runs."""

    job_id: int


@dataclass(frozen=True)
class Directory:
    """Web → supervisor: answer with `Routes`, so the web layer can tell the queue and the
    retriever directly instead of through the supervisor (one Thespian hop less per upload and
    per report)."""


@dataclass(frozen=True)
class Routes:
    """Supervisor → web: (role, address, pid) of each child that has said it is running."""

    entries: tuple[tuple[str, object, int], ...]


@dataclass(frozen=True)
class Ping:
    """An executor node's web layer → its ExecutorActor: answer `Pong` if alive (its /health). Every
    server actor answers it too (the server's /health asks the supervisor for a `Roster` instead)."""


@dataclass(frozen=True)
class Pong:
    """Reply to `Ping` and `Roster`."""

    who: str
    processes: tuple[tuple[str, int], ...] = ()


# --- the job path on the server ---------------------------------------------------------------

@dataclass(frozen=True)
class JobQueued:
    """Web (an upload) or the actor that requeued a job its executor lost (ServerActor.job_lost:
    retriever, dispatcher) → queue: this job is Queued in the database. The web layer posts through
    the gateway: straight to the queue, or through the supervisor (`Forward`) until it knows where
    the queue is."""

    job_id: int
    service: str
    user_id: int
    #: The portal that submitted it (None without tokens).
    portal: str | None
    #: Orders its user's queued jobs (storage.fair_share.queue_order; None: 0).
    priority: int | None = None
    #: The portal's group label (runs_per_group caps it); None: none.
    group: str | None = None
    #: When it was queued (created), epoch seconds of the naive UTC stamp; None: now.
    queued_at: float | None = None

    @property
    def user(self) -> UserKey:
        return self.portal, self.user_id


@dataclass(frozen=True)
class AdmissionRequest:
    """Queue → quota: the next queued jobs of each waiting user of `service`, and only their data."""

    service: str
    #: (user, (job_id, ...)), each user's jobs in the order they should start (queue_order); at
    #: most runs_per_user per user.
    candidates: tuple[tuple[UserKey, tuple[int, ...]], ...]
    #: (job_id, priority, group) of the candidates that have a priority other than 0 or a group.
    labels: tuple[tuple[int, int, str | None], ...] = ()
    #: (user, epoch seconds) of each candidate user: when their next job (the first of their
    #: candidates) was queued; fair share's age credit counts from it. NOTE: not their oldest job:
    #: a low-priority job left waiting would otherwise earn its user credit without end.
    waiting_since: tuple[tuple[UserKey, float], ...] = ()


@dataclass(frozen=True)
class Admitted:
    """Quota → queue, the answer to an AdmissionRequest: these jobs are now Dispatching, and those
    were no longer Queued (`gone`: cancelled or failed meanwhile); take both out of the queue. It
    also says who cannot start more jobs until a slot frees up."""

    service: str
    job_ids: tuple[int, ...]
    #: The service is at its limit (max_runs or its executors' slots).
    full: bool = False
    #: Users of the request who are at runs_per_user.
    at_limit: tuple[UserKey, ...] = ()
    #: Jobs admitted that were no longer Queued: the slots they were given are still free.
    gone: tuple[int, ...] = ()


@dataclass(frozen=True)
class Dispatch:
    """Quota → dispatcher of `service`: send these Dispatching jobs to executors."""

    service: str
    job_ids: tuple[int, ...]


@dataclass(frozen=True)
class SlotsFreed:
    """Quota → queue: `service` has room again; ask for admission."""

    service: str


@dataclass(frozen=True)
class Capacity:
    """Dispatcher → quota: the total slots of the service's reachable executors."""

    service: str
    slots: int


@dataclass(frozen=True)
class ExecutorEvent:
    """Web (an executor's report on /internal/events, posted through the gateway) → retriever. (The
    retriever's sweep asks executors itself and acts on their answers without this message.)"""

    job_id: int
    attempt: int
    #: "started", "finished", "lost" or "cancelled" (where it ran, e.g. scancel).
    event: str
    #: The executor's own id of the task (known before the dispatcher hears the submit answer).
    task_id: str | None = None
    exit_code: int | None = None
    stderr_tail: str | None = None
    #: The executor's verdict when the job went over a limit (it fails, whatever its exit code).
    reason: str | None = None


@dataclass(frozen=True)
class ExecutorHeartbeat:
    """Web (an executor's heartbeat or registration, posted like every other message) → that
    service's dispatcher."""

    service: str
    url: str
    slots: int
    draining: bool
    #: (task_id, job_id, attempt) of every task the executor holds and has not finished.
    tasks: tuple[tuple[str, int, int], ...] = ()
    #: Its last heartbeat: it drained and stops now (it is `gone`, not lost).
    leaving: bool = False
    #: Its overflow tier ([client] tier; an executor of an earlier version sends none: 1).
    tier: int = 1


@dataclass(frozen=True)
class JobEnded:
    """Whichever server actor ended these jobs of one service (ServerActor.job_ended) → the quota and
    the service's dispatcher: they no longer hold a slot."""

    service: str
    #: (job id, URL of the executor it held a slot on, or None) of each job.
    ended: tuple[tuple[int, str | None], ...]

    @property
    def job_ids(self) -> tuple[int, ...]:
        return tuple(job_id for job_id, _ in self.ended)


# --- the executor node --------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigureExecutor:
    """run_client.py → ExecutorActor: its settings, how jobs are wrapped and where their cgroups go
    (found at start); it then recovers its task table."""

    config: ClientConfig
    wrapping: Any = None
    cgroups: Any = None
    #: The node's main process: told to stop (SIGTERM) when the server does not know the service.
    node_pid: int = 0


@dataclass(frozen=True)
class RunTask:
    """Executor web → ExecutorActor: this task is stored and accepted; run it when a slot frees."""

    task_id: int


@dataclass(frozen=True)
class KillTask:
    """Executor web (the server asked) → ExecutorActor: stop this task; its attempt is stale."""

    task_id: int


@dataclass(frozen=True)
class Drain:
    """run_client.py → ExecutorActor: take no new work; answer `Drained` with what is left."""


@dataclass(frozen=True)
class Drained:
    """Reply to `Drain`: tasks still waiting or running, final reports not yet delivered, and
    results the server has not fetched yet (for at most DRAIN_FETCH_WAIT seconds after their end),
    plus one until the node told the server it leaves."""

    remaining: int
