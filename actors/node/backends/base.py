"""What an executor's backend tells its ExecutorActor, and the choice of backend from the config.

A backend runs the node's tasks somewhere: `LocalBackend` (actors/node/backends/local.py) as processes
of this host, `SlurmBackend` (actors/node/backends/slurm.py) as jobs of a Slurm cluster. The actor owns
the task queue, the slots and the reports to the server; a backend owns starting, polling,
killing and recovering its tasks, and says what happened as `Started` and `Ended` events.
"""
from __future__ import annotations

from dataclasses import dataclass

from actors.node.job_cgroups import JobCgroups
from actors.node.sandbox import Wrapping
from conf.settings import ClientConfig
from storage.node.states import TaskState


@dataclass(frozen=True)
class Started:
    """The task's script began to run (for Slurm: its job left the queue)."""

    task_id: int


@dataclass(frozen=True)
class Ended:
    """The task is over: FINISHED (with its exit code), CANCELLED or LOST."""

    task_id: int
    state: TaskState
    exit_code: int | None = None
    stderr_tail: str | None = None
    #: Why it failed although its script may have exited 0 (a limit it went over), in words.
    reason: str | None = None


#: The event an ended task's report carries to the server.
REPORT_OF = {TaskState.FINISHED.value: "finished", TaskState.LOST.value: "lost",
             TaskState.CANCELLED.value: "cancelled"}


def make_backend(config: ClientConfig, wrapping: Wrapping, cgroups: JobCgroups | None):
    if config.backend == "slurm":
        from actors.node.backends.slurm import SlurmBackend
        return SlurmBackend(config, wrapping)
    from actors.node.backends.local import LocalBackend
    return LocalBackend(config, wrapping, cgroups)
