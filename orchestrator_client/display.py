"""What the `orchestrator` command shows: one line per job state, the upload's progress bar, the
live status line while it waits, the queue table of `watch`.

Runs in the command's process. In a terminal it draws with rich (a bar, a spinner line, a table
redrawn in place); when stdout is not a terminal (a pipe, a log file, a test) it prints plain lines
instead, one per change, so the output stays readable and parseable.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

#: The job columns of `watch`: a title and how to read it from a job's view.
JOB_COLUMNS: tuple[tuple[str, Callable[[dict], object]], ...] = (
    ("job", lambda view: view["id"]),
    ("service", lambda view: view["service"]),
    ("user", lambda view: view["user_id"]),
    ("status", lambda view: view["status"]),
    ("position", lambda view: (view.get("queue") or {}).get("position", "")),
    ("waiting for", lambda view: (view.get("queue") or {}).get("waiting_for") or ""),
    ("created", lambda view: view["created_at"]),
)
SERVICE_COLUMNS = ("service", "queued", "active", "executors", "free slots", "median wait s", "median run s")


def describe(view: dict) -> str:
    """A job's state in one line: `job 12: Queued, 3rd in line, waiting for runs_per_user (user 7
    has 5 of 5 jobs active)`, `job 12: Running on http://...`, `job 12: Failed: <reason>`."""
    text = f"job {view['id']}: {view['status']}"
    queue = view.get("queue")
    if queue:
        text += f", position {queue['position']} in {view['service']}"
        if queue.get("waiting_for"):
            text += f", waiting for {queue['waiting_for']}"
            if queue.get("detail"):
                text += f" ({queue['detail'].rstrip('.')})"
        if queue.get("estimated_start"):
            text += f", expected to start about {queue['estimated_start']}"
    elif view["status"] in ("Submitted", "Running") and view.get("executor"):
        text += f" on {view['executor']}"
    if view.get("reason"):
        text += f": {view['reason']}"
    if view["status"] == "Failed" and view.get("exit_code") is not None:
        text += f" (exit code {view['exit_code']})"
    return text


class Display:
    """The command's output: live (rich) on a terminal, plain lines otherwise."""

    def __init__(self, out: TextIO, live: bool | None = None):
        self.out = out
        self.live = out.isatty() if live is None else live
        self.console = Console(file=out, force_terminal=self.live, highlight=False)

    def line(self, text: str) -> None:
        if self.live:
            self.console.print(text, markup=False)
        else:
            print(text, file=self.out, flush=True)

    @contextmanager
    def upload_progress(self, label: str) -> Iterator[Callable[[int, int], None] | None]:
        """A progress callback (sent, total) drawing a bar; None (nothing drawn) off a terminal."""
        if not self.live:
            yield None
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=self.console, transient=False) as bar:
            task = bar.add_task(label, total=None)

            def advance(sent: int, total: int) -> None:
                bar.update(task, completed=sent, total=total)
            yield advance

    @contextmanager
    def status_line(self) -> Iterator[Callable[[dict], None]]:
        """A callback taking each view of a job (the same view twice shows once): a spinner line
        redrawn in place on a terminal, with a lasting line for each new status and the last one;
        one printed line per change otherwise."""
        shown: dict = {}
        if not self.live:
            def show(view: dict) -> None:
                if view != shown.get("view"):
                    self.line(describe(view))
                shown["view"] = view
            yield show
            return
        with self.console.status("") as spinner:
            def show(view: dict) -> None:
                before = shown.get("view", {}).get("status")
                if before not in (None, view["status"]):
                    self.line(f"job {view['id']}: {before} → {view['status']}")
                shown["view"] = view
                spinner.update(describe(view))
            yield show
        if shown:  # NOTE: the spinner line goes with the spinner: the last state stays on screen
            self.line(describe(shown["view"]))

    def queue(self, services: dict, jobs: list[dict], complete: bool = True) -> Table | str:
        """The `watch` snapshot: services with their counts, then the jobs not ended (not
        `complete`: the newest of them); a table to draw live, or plain lines. A job's position and
        what it waits for show where its view has `queue`."""
        rows = [(s["name"], s["queued"], s["active"], len(s["executors"]),
                 sum(e["free_slots"] for e in s["executors"]), s["median_wait_seconds"] or "",
                 s["median_run_seconds"] or "") for s in services["services"]]
        job_rows = [tuple(read(view) for _, read in JOB_COLUMNS) for view in jobs]
        if not self.live:
            lines = ["\t".join(SERVICE_COLUMNS)] + ["\t".join(map(str, row)) for row in rows]
            lines += [""] + ["\t".join(title for title, _ in JOB_COLUMNS)] + ["\t".join(map(str, r)) for r in job_rows]
            return "\n".join(lines)
        table = Table(title=f"services at {services['generated_at']}", expand=True)
        for title in SERVICE_COLUMNS:
            table.add_column(title)
        for row in rows:
            table.add_row(*map(str, row))
        jobs_table = Table(title=f"{len(jobs)} jobs not ended" if complete else
                           f"the newest {len(jobs)} jobs not ended (the counts above are all of them)", expand=True)
        for title, _ in JOB_COLUMNS:
            jobs_table.add_column(title)
        for row in job_rows:
            jobs_table.add_row(*map(str, row))
        grid = Table.grid(expand=True)
        grid.add_row(table)
        grid.add_row(jobs_table)
        return grid
