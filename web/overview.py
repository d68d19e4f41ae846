"""`GET /services` and `GET /status`: each service's queue, work and executors at a glance.

Runs in the server's main process. The figures come from the database (storage/overview.py) and
the executor registry; `summary` and `throughput` are pure functions of them and of `now`.
A portal gets the same shape restricted to its own jobs, without the executors (the cluster's
shape is the operators' business): its own groups, and under fair_share its own users by usage; the
status page is an operator view (web/auth.py).
"""
from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from typing import Sequence

from conf.settings import ServerConfig, ServiceConfig
from storage import executors, overview
from storage.jobs import EVERY_PORTAL
from storage.clock import utcnow
from storage.columns import iso
from storage.overview import ServiceFigures
from web import status_page

#: The window of "recent" figures: finished counts, median wait and run time, throughput.
WINDOW = timedelta(hours=1)
#: Throughput is drawn in buckets of this width over the window.
BUCKET = timedelta(minutes=5)
OUTCOMES = ("Completed", "Failed", "Cancelled")
TOP_USERS = 5
#: Groups shown per service (those with the most jobs waiting or active; `groups_waiting` counts all).
TOP_GROUPS = 20
RECENT_FAILURES = 10


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def service_summary(service: ServiceConfig | None, name: str, figures: ServiceFigures,
                    executor_rows: list[dict] | None, usage: list[tuple[tuple[str | None, int], float]] | None) -> dict:
    """One service's entry of `GET /services`; `service` is None for a service no longer configured
    whose jobs are still in the database; `executor_rows` None hides the executors (a portal);
    `usage`: under fair_share, its users by usage, most first (None under round_robin)."""
    finished = {outcome: 0 for outcome in OUTCOMES}
    waits, runs = [], []
    for outcome, created, started, ended in figures.ended:
        finished[outcome] = finished.get(outcome, 0) + 1
        if started is not None:
            waits.append((started - created).total_seconds())
            runs.append((ended - started).total_seconds())
    shown_executors = []
    for row in executor_rows or ():
        usable = row["state"] == "alive"
        shown_executors.append({"url": row["url"], "state": row["state"], "slots": row["slots"],
                                "free_slots": max(0, row["slots"] - row["running"]) if usable else 0,
                                "running": row["running"], "tier": row["tier"], "last_seen": row["last_seen"]})
    return {
        "name": name,
        "configured": service is not None,
        "queued": figures.queued,
        "active": figures.active,
        "finished_last_hour": finished,
        "users_waiting": len(figures.waiting_users),
        "top_waiting_users": [{"portal": portal, "user_id": user_id, "queued": queued}
                              for portal, user_id, queued in figures.waiting_users[:TOP_USERS]],
        "groups_waiting": len(figures.groups),
        "groups": [{"portal": portal, "group": group, "queued": queued, "active": active}
                   for portal, group, queued, active in figures.groups[:TOP_GROUPS]],
        "policy": None if service is None else service.policy,
        "top_usage_users": None if usage is None else
        [{"portal": portal, "user_id": user_id, "usage": round(used, 3)} for (portal, user_id), used in usage[:TOP_USERS]],
        "limits": None if service is None else {"runs_per_user": service.runs_per_user, "max_runs": service.max_runs,
                                                "max_queued_per_user": service.max_queued_per_user,
                                                "max_runtime": service.max_runtime,
                                                "runs_per_group": service.runs_per_group},
        "executors": shown_executors,
        "median_wait_seconds": _median(waits),
        "median_run_seconds": _median(runs),
    }


def summary(services: Sequence[ServiceConfig], figures: dict[str, ServiceFigures], executor_rows: list[dict] | None,
            now: datetime, usage: dict[str, list] | None = None) -> dict:
    """`GET /services`: every configured service (and any other that still has jobs), in the
    configuration's order; `usage`: per fair_share service, its users by usage (`usage_of`)."""
    configured = {service.name: service for service in services}
    names = [service.name for service in services] + sorted(set(figures) - set(configured))
    return {
        "generated_at": iso(now),
        "window_seconds": int(WINDOW.total_seconds()),
        "services": [service_summary(configured.get(name), name, figures.get(name, ServiceFigures()),
                                     None if executor_rows is None else
                                     [row for row in executor_rows if row["service"] == name],
                                     (usage or {}).get(name))
                     for name in names],
    }


def throughput(figures: dict[str, ServiceFigures], now: datetime) -> list[dict[str, int]]:
    """Jobs ended per BUCKET over the window, oldest bucket first, by outcome (all services)."""
    buckets = int(WINDOW / BUCKET)
    counts = [{outcome: 0 for outcome in OUTCOMES} for _ in range(buckets)]
    start = now - WINDOW
    for service_figures in figures.values():
        for outcome, _, _, ended in service_figures.ended:
            index = int((ended - start) / BUCKET)
            if 0 <= index < buckets:
                counts[index][outcome] = counts[index].get(outcome, 0) + 1
    return counts


def usage_of(services: Sequence[ServiceConfig], now: datetime, portal: str | None = None,
             restrict: bool = False) -> dict[str, list]:
    """Per fair_share service, its users by usage (`restrict`: `portal`'s users only)."""
    return {service.name: overview.usage_ranking(service.name, service.half_life_seconds, now, portal, restrict)
            for service in services if service.policy == "fair_share"}


class Services:
    """`GET /services`: per service, queued, active and last-hour counts, users waiting, limits,
    executors and median wait and run times. A portal sees only its own jobs, and no executors."""

    def __init__(self, config: ServerConfig):
        self.config = config

    def on_get(self, req, resp):
        now = utcnow()
        restrict = req.context.portal not in (None, EVERY_PORTAL)
        figures = overview.figures(now - WINDOW, req.context.portal, restrict)
        resp.media = summary(self.config.services, figures, None if restrict else executors.listing(), now,
                             usage_of(self.config.services, now, req.context.portal, restrict))


class StatusPage:
    """`GET /status`: the HTML page an operator keeps open (web/status_page.py draws it)."""

    def __init__(self, config: ServerConfig):
        self.config = config

    def on_get(self, req, resp):
        now = utcnow()
        figures = overview.figures(now - WINDOW, None)
        resp.content_type = "text/html; charset=utf-8"
        resp.text = status_page.render(summary(self.config.services, figures, executors.listing(), now,
                                               usage_of(self.config.services, now)),
                                       overview.recent_failures(RECENT_FAILURES), throughput(figures, now),
                                       int(BUCKET.total_seconds()), now)
