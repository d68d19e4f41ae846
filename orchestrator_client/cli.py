"""The `orchestrator` command: submit a job (with a progress bar, then a live status line while it
waits), see one or all jobs, follow a log, download, cancel, watch the queue.

Runs in the user's shell (`orchestrator ...` or `python -m orchestrator_client ...`), built on
client.Client; display.py draws. Exit codes: 0 done (a job that completed), 1 a job that failed or
was cancelled, 2 a usage error, a refusal of the server or no server to reach; errors are one
sentence on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from rich.live import Live

from orchestrator_client.client import ENDED, Client, OrchestratorError
from orchestrator_client.display import Display, describe

DEFAULT_URL = "http://localhost:5000"
OK, JOB_DID_NOT_COMPLETE, USAGE = 0, 1, 2
#: The statuses `watch` shows: every job that has not ended.
NOT_ENDED = ("Queued", "Dispatching", "Submitted", "Running")
#: The statuses of a job that has not started: its own view says why it waits (`queue`).
NOT_STARTED = ("Queued", "Dispatching")
#: `watch` shows the newest jobs not ended: one page of this many, one request per refresh.
WATCH_JOBS = 100
#: ... and asks why they wait (GET /jobs/{id}, one request each) for this many, no more.
WATCH_EXPLAINED = 10


def exit_code(view: dict) -> int:
    """0 for a job that completed (or has not ended yet), 1 for one that failed or was cancelled
    (Cleaned: by the outcome it had)."""
    outcome = view.get("outcome") or view["status"]
    return JOB_DID_NOT_COMPLETE if outcome in ("Failed", "Cancelled") else OK


class Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (no usage block) and exit code 2."""

    def error(self, message: str):
        self.exit(USAGE, f"{self.prog}: {message} (see {self.prog} --help).\n")


def parser() -> argparse.ArgumentParser:
    top = Parser(prog="orchestrator", description="Submit jobs to an orchestrator server and follow them.")
    top.add_argument("--url", default=os.environ.get("ORCHESTRATOR_URL", DEFAULT_URL),
                     help=f"the server (default: $ORCHESTRATOR_URL, else {DEFAULT_URL})")
    top.add_argument("--token", default=os.environ.get("ORCHESTRATOR_TOKEN"),
                     help="the portal's token (default: $ORCHESTRATOR_TOKEN)")
    top.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each answer (default 30)")
    commands = top.add_subparsers(dest="command", required=True, parser_class=Parser)

    submit = commands.add_parser("submit", help="upload a job: run.sh and its input files")
    submit.add_argument("files", nargs="+", metavar="FILE")
    submit.add_argument("--service", required=True)
    submit.add_argument("--user", required=True, type=int, help="the portal's user id (a positive integer)")
    submit.add_argument("--callback-url", help="where the server POSTs the job when it runs and when it ends")
    submit.add_argument("--priority", type=int, help="-10 to 10 (default 0): orders this user's own queued jobs")
    submit.add_argument("--group", help="the set of users it counts for (a course, a project: runs_per_group)")
    submit.add_argument("--max-runtime", type=int, metavar="SECONDS", help="stop the job after this many seconds")
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    submit.add_argument("-o", "--output", metavar="DIR", help="with --wait: download the results into DIR")
    submit.add_argument("--poll", type=float, default=1.0, help="seconds between looks at the job (default 1)")
    submit.add_argument("--json", action="store_true", help="print the job as JSON (with --wait: once it ended)")

    status = commands.add_parser("status", help="a job's state (and why it waits)")
    status.add_argument("id")
    status.add_argument("--json", action="store_true", help="print the job as JSON")

    listing = commands.add_parser("list", help="jobs, newest first")
    listing.add_argument("--user", type=int, dest="user_id")
    listing.add_argument("--service")
    listing.add_argument("--status", action="append", help="repeatable")
    listing.add_argument("--created-after", metavar="ISO")
    listing.add_argument("--created-before", metavar="ISO")
    listing.add_argument("--portal", help="an operator's: only this portal's jobs")
    listing.add_argument("--group", help="only the jobs of this group")
    listing.add_argument("--limit", type=int, help="at most this many jobs")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    logs = commands.add_parser("logs", help="a job's stdout or stderr")
    logs.add_argument("id")
    logs.add_argument("--stream", choices=("stdout", "stderr"), default="stdout")
    logs.add_argument("--tail", type=int, metavar="N", help="only the last N lines (else all of it)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    logs.add_argument("--poll", type=float, default=1.0, help="seconds between reads with -f (default 1)")

    download = commands.add_parser("download", help="a completed job's results")
    download.add_argument("id")
    download.add_argument("-o", "--output", metavar="DIR", default=".", help="the folder (default: here)")

    cancel = commands.add_parser("cancel", help="end a job that has not ended")
    cancel.add_argument("id")

    watch = commands.add_parser("watch", help="a live table of the services and the jobs not ended")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    watch.add_argument("--once", action="store_true", help="show it once and exit")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client = Client(args.url, args.token, timeout=args.timeout)
    display = Display(sys.stdout)
    try:
        return COMMANDS[args.command](client, display, args)
    except OrchestratorError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("orchestrator: interrupted.", file=sys.stderr)
        return 130


def run_submit(client: Client, display: Display, args) -> int:
    with display.upload_progress(f"uploading {len(args.files)} file(s)") as progress:
        view = client.submit(args.files, args.service, args.user, args.callback_url, progress, priority=args.priority,
                             group=args.group, max_runtime=args.max_runtime)
    if not args.wait:
        show_job(display, view, args.json)
        return OK
    if args.json:  # NOTE: stdout is the one JSON document, the ended view: no status lines
        view = client.wait(view["id"], poll=args.poll)
    else:
        with display.status_line() as show:
            show(view)
            view = client.wait(view["id"], poll=args.poll, on_change=show)
    if args.output and view["status"] == "Completed":
        folder = client.download(view["id"], args.output)
        if not args.json:
            display.line(f"results of job {view['id']} in {folder}")
    if args.json:
        show_job(display, view, True)
    return exit_code(view)


def run_status(client: Client, display: Display, args) -> int:
    view = client.status(args.id)
    show_job(display, view, args.json)
    return exit_code(view)


def show_job(display: Display, view: dict, as_json: bool) -> None:
    """The job as one line of JSON (printed as is: rich would wrap it on a terminal), or described."""
    if as_json:
        print(json.dumps(view), flush=True)
    else:
        display.line(describe(view))


def run_list(client: Client, display: Display, args) -> int:
    filters = {key: getattr(args, key) for key in ("user_id", "service", "status", "created_after", "created_before",
                                                   "portal", "group")}
    if args.limit:
        filters["limit"] = min(args.limit, 1000)
    for count, view in enumerate(client.list(**filters), 1):
        show_job(display, view, args.json)
        if args.limit and count >= args.limit:
            break
    return OK


def run_logs(client: Client, display: Display, args) -> int:
    out = sys.stdout.buffer

    def print_to_end(offset: int) -> int:
        """The log from `offset` to its end now (an answer holds at most 1 MiB); where it ended."""
        for chunk in client.log_to_end(args.id, args.stream, offset):
            out.write(chunk.data)
            out.flush()
            offset += len(chunk.data)
        return offset

    if args.tail:
        chunk = client.log(args.id, args.stream, tail=args.tail)
        out.write(chunk.data)
        out.flush()
        offset = chunk.size  # NOTE: a tail's X-Log-Size is the log's size: on from there
    else:
        offset = print_to_end(0)
    if not args.follow:
        return OK
    while True:
        # NOTE: the job's state first, then the log to its end: a job seen ended has written its
        # last byte, so once it is printed there is no more.
        view = client.status(args.id)
        offset = print_to_end(offset)
        if view["status"] in ENDED:
            return exit_code(view)
        time.sleep(args.poll)


def run_download(client: Client, display: Display, args) -> int:
    folder = client.download(args.id, args.output)
    display.line(f"results of job {args.id} in {folder}")
    return OK


def run_cancel(client: Client, display: Display, args) -> int:
    display.line(describe(client.cancel(args.id)))
    return OK


def run_watch(client: Client, display: Display, args) -> int:
    def snapshot():
        jobs = list(client.list(pages=1, status=list(NOT_ENDED), limit=WATCH_JOBS))
        # NOTE: a listed job carries no `queue`; the oldest shown are the nearest to starting, and
        # what holds them mostly holds the jobs behind them too.
        waiting = [view for view in jobs if view["status"] in NOT_STARTED][-WATCH_EXPLAINED:]
        for view in waiting:
            view["queue"] = client.status(view["id"]).get("queue")
        return display.queue(client.services(), jobs, complete=len(jobs) < WATCH_JOBS)

    if args.once or not display.live:
        while True:
            display.line(snapshot())
            if args.once:
                return OK
            time.sleep(args.interval)
    with Live(snapshot(), console=display.console, auto_refresh=False) as live:
        while True:
            time.sleep(args.interval)
            live.update(snapshot(), refresh=True)


COMMANDS = {"submit": run_submit, "status": run_status, "list": run_list, "logs": run_logs,
            "download": run_download, "cancel": run_cancel, "watch": run_watch}
