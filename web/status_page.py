"""The status page's HTML: one self-contained page (no script, no CDN), redrawn by the browser every
REFRESH_SECONDS. Runs in the server's main process; `render` is a pure function of the figures
web/overview.py gathers.
"""
from __future__ import annotations

from datetime import datetime
from html import escape

REFRESH_SECONDS = 10
COLOURS = {"Completed": "#2e7d32", "Failed": "#c62828", "Cancelled": "#9e9e9e"}
STATE_CLASSES = {"alive": "ok", "draining": "warn", "unknown": "muted", "gone": "muted", "lost": "bad"}

STYLE = """
body { font: 15px/1.4 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 1.5rem;
       color: #212121; background: #fafafa; }
h1 { font-size: 1.4rem; margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
.when { color: #616161; margin-bottom: 1rem; }
table { border-collapse: collapse; background: #fff; min-width: 40rem; }
th, td { text-align: left; padding: .3rem .7rem; border-bottom: 1px solid #e0e0e0; vertical-align: top; }
th { background: #eeeeee; font-weight: 600; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #2e7d32; font-weight: 600; } .warn { color: #ef6c00; font-weight: 600; }
.bad { color: #c62828; font-weight: 600; } .muted { color: #757575; }
.reason { max-width: 40rem; word-break: break-word; }
.legend span { margin-right: 1rem; } svg { background: #fff; border: 1px solid #e0e0e0; }
"""


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} s"


def _time(value: str | datetime | None) -> str:
    if value is None:
        return "never"
    text = value if isinstance(value, str) else value.isoformat() + "Z"
    return text.replace("T", " ")[:19]


def _services(services: list[dict]) -> str:
    rows = []
    for service in services:
        limits = service["limits"] or {}
        waiting = ", ".join(f"{escape(str(user['portal'] or '-'))}/{user['user_id']} ({user['queued']})"
                            for user in service["top_waiting_users"]) or "–"
        groups = ", ".join(f"{escape(str(g['portal'] or '-'))}/{escape(g['group'])} ({g['queued']}/{g['active']})"
                           for g in service["groups"]) or "–"
        usage = ", ".join(f"{escape(str(user['portal'] or '-'))}/{user['user_id']} ({user['usage']:.0f} s)"
                          for user in service["top_usage_users"] or ()) or "–"
        per_group = f", {limits['runs_per_group']} per group" if limits.get("runs_per_group") else ""
        per_group += f", {limits['max_runtime']} s at most" if limits.get("max_runtime") else ""
        # NOTE: policy, usage and groups share one cell: the table stays within a laptop's width.
        scheduling = escape(service["policy"] or "–") + "".join(
            f"<br><span class=muted>{label}: {text}</span>" for label, text in (("most usage", usage), ("groups", groups))
            if text != "–")
        done = service["finished_last_hour"]
        rows.append(
            f"<tr><td>{escape(service['name'])}{'' if service['configured'] else ' <span class=muted>(not configured)</span>'}</td>"
            f"<td class=n>{service['queued']}</td><td class=n>{service['active']}</td>"
            f"<td class=n>{service['users_waiting']}</td><td>{waiting}</td>"
            f"<td class=n>{done.get('Completed', 0)}</td><td class=n>{done.get('Failed', 0)}</td>"
            f"<td class=n>{done.get('Cancelled', 0)}</td>"
            f"<td class=n>{_seconds(service['median_wait_seconds'])}</td>"
            f"<td class=n>{_seconds(service['median_run_seconds'])}</td>"
            f"<td>{limits.get('runs_per_user', '–')} per user, {limits.get('max_runs') or 'all slots'} in all"
            f"{per_group}</td><td>{scheduling}</td></tr>")
    return ("<table id=services><tr><th>service</th><th>queued</th><th>active</th><th>users waiting</th>"
            "<th>top waiting users (portal/user)</th><th>completed</th><th>failed</th><th>cancelled</th>"
            "<th>median wait</th><th>median run</th><th>limits</th>"
            "<th>policy · most usage (slot-s) · groups (queued/active)</th></tr>"
            + "".join(rows) + "</table>")


def _executors(services: list[dict]) -> str:
    rows = [f"<tr><td>{escape(service['name'])}</td><td>{escape(executor['url'])}</td>"
            f"<td class={STATE_CLASSES.get(executor['state'], 'muted')}>{escape(executor['state'])}</td>"
            f"<td class=n>{executor['slots']}</td><td class=n>{executor['running']}</td>"
            f"<td class=n>{executor['free_slots']}</td><td class=n>{_tier(executor['tier'])}</td>"
            f"<td>{escape(_time(executor['last_seen']))}</td></tr>"
            for service in services for executor in service["executors"]]
    if not rows:
        return "<p class=muted id=executors>No executor is known yet.</p>"
    return ("<table id=executors><tr><th>service</th><th>executor</th><th>state</th><th>slots</th>"
            "<th>running</th><th>free</th><th>tier</th><th>last seen</th></tr>" + "".join(rows) + "</table>")


def _tier(tier: int | None) -> str:
    return "–" if tier is None else str(tier)


def _failures(failures: list[dict]) -> str:
    if not failures:
        return "<p class=muted id=failures>No job has failed.</p>"
    rows = [f"<tr><td>{escape(_time(failure['finished_at']))}</td><td>{escape(str(failure['id']))}</td>"
            f"<td>{escape(failure['service'])}</td><td class=n>{failure['user_id']}</td>"
            f"<td class=n>{'' if failure['exit_code'] is None else failure['exit_code']}</td>"
            f"<td class=reason>{escape(failure['reason'] or '')}"
            f"{'<br><span class=muted>' + escape(failure['stderr_last']) + '</span>' if failure['stderr_last'] else ''}"
            "</td></tr>" for failure in failures]
    return ("<table id=failures><tr><th>ended</th><th>job</th><th>service</th><th>user</th><th>exit</th>"
            "<th>reason · last line of stderr</th></tr>" + "".join(rows) + "</table>")


def _chart(buckets: list[dict[str, int]], bucket_seconds: int) -> str:
    """Stacked bars of the jobs ended per bucket, oldest on the left."""
    width, height, gap = 600, 150, 4
    floor = height - 16  # the bars stand on it; the time axis' labels go below
    bar = width / max(1, len(buckets))
    top = max([sum(bucket.values()) for bucket in buckets] + [1])
    shapes = []
    for index, bucket in enumerate(buckets):
        y = floor
        for outcome, colour in COLOURS.items():
            size = bucket.get(outcome, 0) * (floor - 20) / top
            if size:
                y -= size
                shapes.append(f'<rect x="{index * bar + gap / 2:.1f}" y="{y:.1f}" width="{bar - gap:.1f}" '
                              f'height="{size:.1f}" fill="{colour}"><title>{bucket.get(outcome, 0)} {outcome.lower()}'
                              f'</title></rect>')
    shapes.append(f'<text x="6" y="{height - 4}" font-size="11" fill="#616161">'
                  f'{len(buckets) * bucket_seconds // 60} min ago</text>'
                  f'<text x="{width - 6}" y="{height - 4}" font-size="11" fill="#616161" text-anchor="end">now</text>')
    total = sum(sum(bucket.values()) for bucket in buckets)
    legend = "".join(f'<span style="color:{colour}">■ {outcome.lower()}</span>' for outcome, colour in COLOURS.items())
    return (f'<svg id=throughput width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{total} jobs ended in the last hour">'
            f'<text x="6" y="14" font-size="12" fill="#616161">most: {top} per {bucket_seconds // 60} min</text>'
            + "".join(shapes) + f"</svg><div class=legend>{legend}</div>")


def render(summary: dict, failures: list[dict], buckets: list[dict[str, int]], bucket_seconds: int,
           now: datetime) -> str:
    services = summary["services"]
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>orchestrator status</title><style>{STYLE}</style></head><body>"
        "<h1>orchestrator</h1>"
        f"<div class=when>{escape(_time(now))} UTC · refreshes every {REFRESH_SECONDS} s · "
        f"{sum(s['queued'] for s in services)} queued, {sum(s['active'] for s in services)} active</div>"
        f"<h2>Services</h2>{_services(services)}"
        f"<h2>Executors</h2>{_executors(services)}"
        f"<h2>Jobs ended in the last hour</h2>{_chart(buckets, bucket_seconds)}"
        f"<h2>Recent failures</h2>{_failures(failures)}"
        "</body></html>")
