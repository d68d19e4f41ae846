"""How an executor node runs a GA4GH TES task (a task whose row holds a plan, storage/node/tes_plan.py):
its sandboxed `bash run.sh` wrapped in the TES stage (actors/node/tes_stage.py), with the plan's
roots bound at their absolute paths; and the reason the stage left for a system failure.

Runs in an executor node's ExecutorActor (both backends, when they start and end a task). A task
without a plan (every portal job) never comes here.
"""
from __future__ import annotations

import hashlib
import os
import sys

from actors.node import tes_stage
from actors.node.sandbox import Wrapping
from conf.settings import ClientConfig
from storage.node import tes_plan

NO_SANDBOX = ("TES tasks need sandbox = bwrap on the executor node (absolute paths are mapped by the sandbox); "
              "this node runs jobs without one")
#: The code the node's own Python runs: the stage, found where this node's code is, in isolated mode
#: (nothing of the job's folder or environment on its import path).
_BOOT = "import sys; sys.path.insert(0, {!r}); from actors.node.tes_stage import main; sys.exit(main(sys.argv[1:]))"
_CODE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The most of the stage's reason the node keeps (the task row's column holds 1024).
MAX_REASON_CHARS = 1000


def refusal(task: dict, wrapping: Wrapping) -> str | None:
    """Why this node cannot run the task, or None."""
    return NO_SANDBOX if task.get("tes_plan") and wrapping.sandbox != "bwrap" else None


def command(config: ClientConfig, wrapping: Wrapping, task: dict, **limits) -> list[str]:
    """The task's command: as every job's (Wrapping.command) without a plan, else the stage around
    its sandboxed run.sh (the node must run a sandbox: `refusal`).

    Writes the plan into the task's folder, where the stage reads it (on Slurm, on another host),
    and gives the stage its SHA-256: the folder is the job's to write, the command line is not.
    `limits`: Wrapping.command's keywords."""
    folder, plan_text = task["dir"], task.get("tes_plan")
    if not plan_text:
        return wrapping.command(config, folder, **limits)
    folder = os.path.abspath(folder)
    plan = tes_plan.parse(plan_text)
    # NOTE: not open(): a task started again in a folder where it ran may have left links there.
    tes_stage.write_private(folder, os.path.basename(tes_plan.PLAN_FILE), plan_text)
    binds = tuple((os.path.join(folder, tes_plan.ROOT, name), f"/{name}") for name in plan.roots)
    inner = wrapping.command(config, folder, binds=binds, **limits)
    digest = hashlib.sha256(plan_text.encode("utf-8")).hexdigest()
    return [sys.executable, "-I", "-c", _BOOT.format(_CODE_ROOT), folder, digest, "--", *inner]


def stage_needs(task: dict) -> tuple[tuple[str, ...], str] | None:
    """For a TES task: the files its stage needs where it runs (this node's Python and the stage's
    code: on Slurm, the compute node must have them at the same paths) and the reason file where a
    job lacking them says so (slurm_cli.sbatch_command); None for every other job."""
    if not task.get("tes_plan"):
        return None
    return (sys.executable, os.path.join(_CODE_ROOT, "actors", "node", "tes_stage.py")), tes_plan.REASON_FILE


def reason(task: dict, stage_exited: bool) -> str | None:
    """The system failure the stage of an ended task found (tes/reason.txt), or None.

    `stage_exited`: the stage ended by itself (not killed by a signal). Only then is the file the
    stage's: it removes the file before the run and writes it after, so the one a killed stage
    leaves may be the job's."""
    if not task.get("tes_plan") or not stage_exited:
        return None
    try:
        descriptor = os.open(os.path.join(task["dir"], tes_plan.REASON_FILE), os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(descriptor, encoding="utf-8", errors="replace") as handle:
        return handle.read(MAX_REASON_CHARS).strip() or None
