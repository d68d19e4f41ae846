"""Slurm's command-line tools (sbatch, squeue, scontrol, scancel), called and parsed.

No actor code and no database here: each call runs one CLI process and returns plain data, and
every parser is a pure function of the text Slurm printed (tests/test_slurm_cli.py checks them
without Slurm). pyslurm is not used: it must match the cluster's Slurm version exactly, and the
CLI tools are what every cluster's login node has.

Checked against Debian's Slurm 22.05. Two kinds of failure are kept apart:
- `SlurmRefused`: sbatch rejected this job (bad partition, impossible request); the job fails.
- `SlurmUnavailable`: a tool is missing or the controller does not answer; nothing is known,
  try again later.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass

from conf import metrics

#: Seconds a CLI call may take; a hung controller must not hang the executor's actor forever.
CALL_TIMEOUT = 30.0
#: What the tools print when they cannot reach slurmctld (as opposed to an error about a job).
_CONTROLLER_DOWN = ("unable to contact slurm controller", "socket timed out", "connection refused",
                    "temporarily unable", "communication connection failure", "zero bytes were transmitted")
#: squeue's and scontrol's answer for ids it does not know (never submitted, or purged after MinJobAge).
_UNKNOWN_ID = "invalid job id specified"

#: Slurm job states, by what they mean for the orchestrator's task.
PENDING = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                     "SUSPENDED", "STOPPED", "RESIZING"})
RUNNING = frozenset({"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"})
COMPLETED = frozenset({"COMPLETED"})
FAILED = frozenset({"FAILED", "OUT_OF_MEMORY", "TIMEOUT", "DEADLINE"})
CANCELLED = frozenset({"CANCELLED"})
#: The job did not fail by itself: its node or its allocation went away. It may run again.
LOST = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})


class SlurmUnavailable(Exception):
    """A Slurm tool is missing or the controller did not answer: the state of the jobs is unknown."""


class SlurmRefused(Exception):
    """sbatch rejected the job; the message is Slurm's own."""


@dataclass(frozen=True)
class SlurmJob:
    """What Slurm says of one job (squeue, scontrol or the jobcomp log)."""

    job_id: str
    state: str
    reason: str = ""
    #: From Slurm's "ExitCode=<status>:<signal>" (None while it is not known).
    exit_status: int | None = None
    signal: int | None = None


def phase(state: str) -> str:
    """Where a Slurm state leaves the task: pending, running, completed, failed, cancelled or lost.

    An unknown state (a newer Slurm's) counts as pending: the job is not given an outcome that
    Slurm did not state, and is asked about again at the next poll.
    """
    state = state.split()[0].rstrip("+") if state.strip() else ""  # "CANCELLED by 0" (sacct), "COMPLETING+"
    for name, states in (("pending", PENDING), ("running", RUNNING), ("completed", COMPLETED), ("failed", FAILED),
                         ("cancelled", CANCELLED), ("lost", LOST)):
        if state in states:
            return name
    return "pending"


def exit_code(status: SlurmJob) -> int:
    """The exit code the server records, as a shell reports it: a signal N gives 128+N.

    A failed job always gets a non-zero code, so it ends Failed on the server even when Slurm
    says 0:0 (e.g. OUT_OF_MEMORY) and a completed job always 0.
    """
    if phase(status.state) == "completed":
        return 0
    if status.exit_status:
        return status.exit_status
    if status.signal:
        return 128 + status.signal
    return 1


def describe(status: SlurmJob) -> str:
    """One line for the job's stderr_tail: Slurm's verdict, e.g. "slurm: TIMEOUT (TimeLimit), ExitCode 0:15"."""
    text = f"slurm: job {status.job_id} {status.state}"
    if status.reason and status.reason != "None":
        text += f" ({status.reason})"
    if status.exit_status is not None:
        text += f", ExitCode {status.exit_status}:{status.signal or 0}"
    return text


# --- parsers ------------------------------------------------------------------------------------

def parse_sbatch(stdout: str) -> str:
    """`sbatch --parsable` prints "<jobid>" or "<jobid>;<cluster>"."""
    job_id = stdout.strip().splitlines()[-1].split(";")[0].strip() if stdout.strip() else ""
    if not re.fullmatch(r"\d+", job_id):
        raise SlurmUnavailable(f"sbatch printed no job id: {stdout.strip()[:200]!r}")
    return job_id


def parse_exit_code(text: str) -> tuple[int | None, int | None]:
    """"3:0" → (3, 0): scontrol's and jobcomp's <exit status>:<signal>."""
    match = re.fullmatch(r"\s*(\d+):(\d+)\s*", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else (None, None)


#: The squeue output format the parser below reads: id, state, raw wait status, reason (last,
#: because it may hold spaces; padded to its width, so stripped).
SQUEUE_FORMAT = "JobID:|,State:|,exit_code:|,Reason:300"


def parse_squeue(text: str) -> dict[str, SlurmJob]:
    """Lines of `squeue -h -O SQUEUE_FORMAT`; exit_code there is the raw wait status (768 = exit 3)."""
    found = {}
    for line in text.splitlines():
        parts = line.split("|", 3)
        if len(parts) != 4 or not parts[0].strip():
            continue
        job_id, state, raw, reason = (p.strip() for p in parts)
        exit_status = signal = None
        if raw.isdigit() and phase(state) not in ("pending", "running"):
            wait = int(raw)
            exit_status, signal = wait >> 8, wait & 0x7F
        found[job_id] = SlurmJob(job_id, state, reason, exit_status, signal)
    return found


_KEY_VALUE = re.compile(r"(\S+?)=(.*?)(?= \S+?=|$)")


def parse_key_values(line: str) -> dict[str, str]:
    """One line of `scontrol show job -o` or of the jobcomp log: Key=Value pairs, values may hold spaces."""
    return dict(_KEY_VALUE.findall(line.strip()))


def status_from_record(record: dict[str, str]) -> SlurmJob | None:
    """A SlurmJob from scontrol's or jobcomp's fields (JobId, JobState, ExitCode, Reason)."""
    if "JobId" not in record or "JobState" not in record:
        return None
    exit_status, signal = parse_exit_code(record.get("ExitCode", ""))
    return SlurmJob(record["JobId"], record["JobState"].split()[0], record.get("Reason", ""), exit_status, signal)


def parse_jobcomp(lines, job_ids: set[str]) -> dict[str, SlurmJob]:
    """The final status of `job_ids` from a jobcomp/filetxt log (the last line of an id wins:
    job ids restart at 1 when a cluster's state is wiped)."""
    found = {}
    for line in lines:
        match = re.match(r"JobId=(\S+)", line)
        if match and match.group(1) in job_ids:
            status = status_from_record(parse_key_values(line))
            if status is not None:
                found[status.job_id] = status
    return found


def parse_jobcomp_names(lines, names: set[str]) -> dict[str, str]:
    """{job name: job id} of the jobs in a jobcomp log with one of `names` (the last one of a name wins)."""
    found = {}
    for line in lines:
        if "Name=" not in line:
            continue
        record = parse_key_values(line)
        if record.get("Name") in names and record.get("JobId", "").isdigit():
            found[record["Name"]] = record["JobId"]
    return found


# --- calls --------------------------------------------------------------------------------------

def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=CALL_TIMEOUT, stdin=subprocess.DEVNULL,
                              env=env)
    except FileNotFoundError:
        metrics.backend_error("slurm", args[0])
        raise SlurmUnavailable(f"{args[0]} is not installed on this host (not on PATH)") from None
    except subprocess.TimeoutExpired:
        metrics.backend_error("slurm", args[0])
        raise SlurmUnavailable(f"{args[0]} did not answer within {CALL_TIMEOUT:.0f} s") from None


def _message(result: subprocess.CompletedProcess) -> str:
    return (result.stderr.strip() or result.stdout.strip() or f"exit status {result.returncode}")[-1000:]


def _controller_down(message: str) -> bool:
    lowered = message.lower()
    return any(text in lowered for text in _CONTROLLER_DOWN)


def sbatch_command(folder: str, name: str, command: list[str], partition: str = "", extra: tuple[str, ...] = (),
                   export: tuple[str, ...] = (), needs: str | None = None,
                   stage: tuple[tuple[str, ...], str] | None = None) -> list[str]:
    """The sbatch call for one job folder: `command` (the job's wrapped `bash run.sh`) in it, stdout and
    stderr into the folder under the local backend's names.

    `export`: the environment variables the job gets (besides Slurm's own SLURM_*), with their values
    in sbatch's environment; `needs`: a program the command needs on the compute node (bubblewrap):
    where it is missing, the job fails saying so instead of running without it. `stage`: the files
    a TES task's stage needs there (the executor's Python and code, tes_wrap.stage_needs) and its
    reason file: where one is missing, the job writes why into that file and fails (a system failure,
    not its command's).
    """
    # NOTE: Slurm expands %x, %j, ... in --output and --error; "%%" is a literal "%".
    escaped = folder.replace("%", "%%")
    # NOTE: --no-requeue: Slurm would start a job again (by default, on a node failure) in the folder
    # its first run wrote to; the orchestrator re-sends a lost job itself, to a fresh folder.
    args = ["sbatch", "--parsable", "--no-requeue", f"--chdir={folder}", f"--job-name={name}",
            f"--output={escaped}/stdout.log", f"--error={escaped}/stderr.log"]
    if partition:
        args.append(f"--partition={partition}")
    if export:
        args.append(f"--export={','.join(export)}")
    script = f"exec {shlex.join(command)}"
    if stage:
        paths, reason_file = stage
        said = shlex.quote(f"orchestrator: TES tasks on Slurm need the executor's Python and code at the same paths on "
                           f"the compute nodes: one of {', '.join(paths)} is missing on ") + '"$(hostname)"'
        script = (f"{{ {' && '.join(f'[ -e {shlex.quote(path)} ]' for path in paths)}; }} || "
                  f"{{ mkdir -p {shlex.quote(os.path.dirname(reason_file))} && echo {said} > {shlex.quote(reason_file)}; "
                  f"echo {said} >&2; exit 126; }}; {script}")
    if needs:
        script = (f"[ -x {shlex.quote(needs)} ] || {{ echo \"orchestrator: {needs} is missing on $(hostname); "
                  f"this executor runs jobs only in its sandbox\" >&2; exit 126; }}; {script}")
    return [*args, *extra, f"--wrap={script}"]


def slurm_seconds(text: str) -> int | None:
    """A Slurm time ("M", "M:S", "H:M:S", "D-H", "D-H:M", "D-H:M:S") in seconds; None for no limit
    (INFINITE, UNLIMITED, and 0, which Slurm reads as no limit too) or for text Slurm would not take."""
    days, dash, clock = text.strip().partition("-") if "-" in text else ("0", "", text.strip())
    if clock.upper() in ("INFINITE", "UNLIMITED"):
        return None
    parts = clock.split(":")
    if not (days.isdigit() and all(p.isdigit() for p in parts)) or len(parts) > 3:
        return None
    numbers = [int(p) for p in parts]
    if dash:  # "D-H", "D-H:M", "D-H:M:S"
        hours, minutes, seconds = numbers + [0] * (3 - len(numbers))
    else:  # "M", "M:S", "H:M:S"
        hours, minutes, seconds = {1: [0, numbers[0], 0], 2: [0, *numbers], 3: numbers}[len(numbers)]
    total = ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    return total or None


def _time_option(extra: tuple[str, ...]) -> tuple[tuple[str, ...], str | None]:
    """`extra` without its --time (-t) option, and that option's value (None: it has none)."""
    rest, value, args = [], None, iter(extra)
    for arg in args:
        if arg in ("--time", "-t"):
            value = next(args, "")
        elif arg.startswith("--time="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-t") and len(arg) > 2:
            value = arg[2:]
        else:
            rest.append(arg)
    return tuple(rest), value


def time_limit_args(extra: tuple[str, ...], max_runtime: int | None) -> tuple[tuple[str, ...], int | None]:
    """The operator's sbatch options `extra` for a job with a time limit of `max_runtime` seconds, and
    the limit in seconds that Slurm's TIMEOUT of the job then means (None: the job set none).

    Slurm counts time limits in whole minutes: the job gets --time=ceil(max_runtime / 60), so it runs
    up to 59 s longer than asked. The smaller of the job's and the operator's --time wins: the
    operator's is the cluster's rule (a partition may refuse longer jobs), and the job asked to be
    stopped at its own; either way no job runs longer than both allow.
    """
    if not max_runtime:
        return extra, None
    rest, theirs = _time_option(extra)
    operator = slurm_seconds(theirs) if theirs is not None else None
    minutes = -(-max_runtime // 60)
    if operator is not None and operator < minutes * 60:
        return extra, operator
    return (*rest, f"--time={minutes}"), max_runtime


def submit(folder: str, name: str, command: list[str], partition: str = "", extra: tuple[str, ...] = (),
           env: dict[str, str] | None = None, needs: str | None = None,
           stage: tuple[tuple[str, ...], str] | None = None) -> str:
    """Submit the job, with exactly the environment `env` (and Slurm's own); returns its Slurm job id.

    Raises:
        SlurmRefused: sbatch rejected the job (its message says why).
        SlurmUnavailable: sbatch is missing or the controller did not answer.
    """
    env = env or {}
    result = _run(sbatch_command(folder, name, command, partition, extra, tuple(env), needs, stage),
                  {**os.environ, **env})
    if result.returncode != 0:
        metrics.backend_error("slurm", "sbatch")
        message = _message(result)
        if _controller_down(message):
            raise SlurmUnavailable(message)
        raise SlurmRefused(message)
    return parse_sbatch(result.stdout)


def squeue(job_ids: list[str]) -> dict[str, SlurmJob]:
    """The status of every id squeue still knows, in one call; ids it forgot are left out."""
    if not job_ids:
        return {}
    began = time.monotonic()
    result = _run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-O", SQUEUE_FORMAT])
    metrics.slurm_poll(time.monotonic() - began)
    if result.returncode != 0:
        message = _message(result)
        if _UNKNOWN_ID in message.lower():
            return {}  # none of them is known any more: each is looked up elsewhere
        metrics.backend_error("slurm", "squeue")
        raise SlurmUnavailable(f"squeue: {message}")
    return parse_squeue(result.stdout)


def find_by_names(names: list[str]) -> dict[str, str]:
    """{job name: job id} of this user's jobs with those names that Slurm still knows, newest id last."""
    if not names:
        return {}
    result = _run(["squeue", "-h", "-t", "all", "--me", "-n", ",".join(names), "-o", "%i|%j"])
    if result.returncode != 0:
        raise SlurmUnavailable(f"squeue: {_message(result)}")
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        job_id, _, name = line.strip().partition("|")
        if name in names and job_id.isdigit() and (name not in found or int(job_id) > int(found[name])):
            found[name] = job_id
    return found


def scontrol_job(job_id: str) -> SlurmJob | None:
    """`scontrol show job -o ID`: the job's status, or None once slurmctld purged it (MinJobAge)."""
    result = _run(["scontrol", "show", "job", "-o", job_id])
    if result.returncode != 0:
        message = _message(result)
        if _UNKNOWN_ID in message.lower():
            return None
        raise SlurmUnavailable(f"scontrol: {message}")
    for line in result.stdout.splitlines():
        status = status_from_record(parse_key_values(line))
        if status is not None and status.job_id == job_id:
            return status
    return None


def jobcomp(path: str, job_ids: set[str]) -> dict[str, SlurmJob]:
    """Final statuses from the jobcomp/filetxt log at `path` ({} if there is none)."""
    return _read_jobcomp(path, job_ids, parse_jobcomp)


def jobcomp_names(path: str, names: set[str]) -> dict[str, str]:
    """{job name: job id} from the jobcomp/filetxt log at `path` ({} if there is none)."""
    return _read_jobcomp(path, names, parse_jobcomp_names)


def _read_jobcomp(path: str, wanted: set[str], parse) -> dict:
    if not path or not wanted:
        return {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return parse(handle, wanted)
    except OSError:
        return {}


def cancel(job_id: str) -> None:
    """scancel; Slurm answers 0 even for ids it does not know, so a non-zero status is a failure of scancel itself."""
    if _run(["scancel", job_id]).returncode != 0:
        metrics.backend_error("slurm", "scancel")


def check() -> str | None:
    """None when Slurm can take jobs; else why not (sbatch missing, controller down)."""
    if shutil.which("sbatch") is None:
        return "sbatch is not installed on this host (not on PATH)"
    try:
        result = _run(["scontrol", "ping"])
    except SlurmUnavailable as exc:
        return str(exc)
    # "Slurmctld(primary) at HOST is UP"; a backup controller that is up is enough (the exit
    # status is then non-zero for the primary that is down).
    if " is UP" not in result.stdout:
        return f"the Slurm controller does not answer: {_message(result)}"
    return None
