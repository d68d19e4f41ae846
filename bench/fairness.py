"""Figure 12: the scheduling policies on a simulated clock: how fairly each shares a busy service,
how long light and heavy users wait, and what one admission costs with 100,000 jobs queued.

No process is started: a seeded synthetic trace (10,000 jobs from 50 users: 5 heavy ones with 80%
of the jobs, uploaded in bursts of 50 to 300, and 45 light ones uploading 1 to 5 at a time; run
times log-normal, median 90 s, from 2 s to an hour) goes through the server's own decisions, event
by event (arrivals and ends), on a service of SLOTS slots with the default runs_per_user:

- fifo: the baseline, written here: the oldest queued job of a user under runs_per_user first;
- round_robin: `admit` over the queue's heads (actors.server.queue.ServiceQueue), with the quota's
  last_turn bookkeeping (actors/server/quota.py);
- fair_share: the same, with the quota's `user_score` (storage.fair_share): usage accrued at each end (`accrue`),
  running jobs counted as they run (`current_usage`), half-life 24 h, shares 1, and the age credit
  of each user's next queued job.

Fairness is Jain's index over users of x = (slot-seconds received) / (slot-seconds of their max-min
fair share): at every moment the service's slots are water-filled among the users with work, each
wanting min(runs_per_user, queued + running), and that share is integrated over the trace
(docs/scheduling.md says why this and not received / demanded). A full run also draws the waits
into docs/images/scheduling-waits.png (with matplotlib: requirements-bench.txt; skipped without).
"""
from __future__ import annotations

import heapq
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from actors.messages import AdmissionRequest
from actors.server.queue import ServiceQueue
from actors.server.scheduling import admit
from bench.common import Row, main, percentile
from conf.settings import DEFAULT_RUNS_PER_USER
from storage.fair_share import accrue, user_score

JOBS = 10_000
USERS = 50
HEAVY_USERS = 5
HEAVY_FRACTION = 0.8
BURST = (50, 300)
LIGHT_BURST = (1, 5)
#: Seconds between two uploads of one burst (a portal's loop).
UPLOAD_GAP = 0.1
RUN_MEDIAN = 90.0
RUN_SIGMA = 1.3
RUN_RANGE = (2.0, 3600.0)
SLOTS = 16
#: Hours the 10,000 jobs arrive over: with SLOTS this loads the service about 75% on average, and
#: each heavy burst keeps it busy for hours, so the policies have queues to order.
SPAN_HOURS = 48.0
HALF_LIFE = 24 * 3600.0
SEED = 15
#: The decision-cost set-up: queued jobs over this many users, the service full but for one slot.
COST_QUEUED = 100_000
COST_USERS = 1_000
COST_REPEATS = 50
POLICIES = ("fifo", "round_robin", "fair_share")
CHART = Path(__file__).resolve().parent.parent / "docs" / "images" / "scheduling-waits.png"


@dataclass
class SimJob:
    id: int
    user: tuple[None, int]
    arrival: float
    runtime: float
    heavy: bool
    start: float | None = None


def trace(jobs: int = JOBS, users: int = USERS, heavy_users: int = HEAVY_USERS, seed: int = SEED) -> list[SimJob]:
    """The synthetic uploads, numbered in arrival order as the database numbers them. Users are
    (portal, user_id) keys as the quota's, without a portal; users 1..heavy_users are the heavy ones."""
    rng = random.Random(seed)
    span = SPAN_HOURS * 3600 * jobs / JOBS  # the same load at any size
    uploads: list[tuple[float, int]] = []

    def burst(user: int, count: int) -> None:
        at = rng.uniform(0, span)
        uploads.extend((at + i * UPLOAD_GAP, user) for i in range(count))

    heavy_left = int(jobs * HEAVY_FRACTION)
    while heavy_left > 0:
        count = min(heavy_left, rng.randint(*BURST))
        burst(rng.randint(1, heavy_users), count)
        heavy_left -= count
    while len(uploads) < jobs:
        burst(rng.randint(heavy_users + 1, users), min(jobs - len(uploads), rng.randint(*LIGHT_BURST)))
    uploads.sort()
    low, high = RUN_RANGE
    return [SimJob(n + 1, (None, user), at, min(high, max(low, rng.lognormvariate(math.log(RUN_MEDIAN), RUN_SIGMA))),
                   user <= heavy_users)
            for n, (at, user) in enumerate(uploads)]


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one has everything."""
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


def max_min_shares(wants: dict, slots: float) -> dict:
    """Water-fill `slots` among users wanting `wants[user]` each: no one gets more than they want,
    and what one cannot use is shared equally among the others."""
    shares = {}
    left = float(slots)
    order = sorted(wants, key=wants.get)
    for n, user in enumerate(order):
        shares[user] = min(wants[user], left / (len(order) - n))
        left -= shares[user]
    return shares


def queue_request(queue: ServiceQueue, per_user: int) -> AdmissionRequest:
    """What the queue actor sends the quota: each waiting user's next jobs, and when their next job was queued."""
    return queue.request("simulated", per_user)


@dataclass
class Service:
    """The state the quota and queue keep for one service, and what the clock has run."""

    slots: int
    runs_per_user: int
    queue: ServiceQueue = field(default_factory=ServiceQueue)
    running: dict = field(default_factory=lambda: defaultdict(dict))  # user -> {job_id: start}
    last_turn: dict = field(default_factory=dict)
    turn: int = 0
    #: fair share: per user, (stored usage, as of) as the Usage table keeps it.
    usage: dict = field(default_factory=dict)

    def active(self) -> dict:
        return {user: len(jobs) for user, jobs in self.running.items() if jobs}


def choose_fifo(service: Service, jobs: dict[int, SimJob], now: float) -> list[tuple]:
    """The baseline: the oldest queued jobs of users under runs_per_user, whatever their user."""
    active = service.active()
    eligible = [(job_id, user) for user, ids in queue_request(service.queue, service.runs_per_user).candidates
                for job_id in ids[:service.runs_per_user - active.get(user, 0)]]
    room = service.slots - sum(active.values())
    return [(user, job_id) for job_id, user in sorted(eligible)[:max(room, 0)]]


def fair_share_scores(service: Service, request: AdmissionRequest, now: float, half_life: float) -> dict:
    """Per waiting user, `user_score` as the quota computes it (shares 1)."""
    scores = {}
    for user, since in request.waiting_since:
        stored, as_of = service.usage.get(user, (0.0, now))
        scores[user] = user_score(stored, as_of, service.running[user].values(), 1, since, now, half_life)
    return scores


def choose_with_admit(service: Service, jobs: dict[int, SimJob], now: float, half_life: float | None) -> list[tuple]:
    """The quota's decision (round_robin; fair_share when `half_life` is given)."""
    request = queue_request(service.queue, service.runs_per_user)
    candidates = request.candidates
    active = service.active()
    scores = fair_share_scores(service, request, now, half_life) if half_life else None
    granted = admit(candidates, active, sum(active.values()), service.runs_per_user, service.slots,
                    service.last_turn, scores=scores)
    for user, _ in granted:  # the quota's bookkeeping of turns
        service.turn += 1
        service.last_turn[user] = service.turn
    return granted


def chooser(policy: str) -> Callable[[Service, dict, float], list[tuple]]:
    if policy == "fifo":
        return choose_fifo
    half_life = HALF_LIFE if policy == "fair_share" else None
    return lambda service, jobs, now: choose_with_admit(service, jobs, now, half_life)


@dataclass
class Outcome:
    policy: str
    jain: float
    starts: dict[int, float]  # job id -> when it started
    waits: dict[str, list[float]]  # "light" / "heavy" -> seconds each job waited


def simulate(trace_jobs: list[SimJob], policy: str, slots: int = SLOTS,
             runs_per_user: int = DEFAULT_RUNS_PER_USER) -> Outcome:
    """Run the trace through `policy`: at each moment something arrives or ends, one admission."""
    jobs = {job.id: SimJob(job.id, job.user, job.arrival, job.runtime, job.heavy) for job in trace_jobs}
    choose = chooser(policy)
    service = Service(slots, runs_per_user)
    arrivals = sorted(jobs.values(), key=lambda j: j.arrival)
    ends: list[tuple[float, int]] = []
    received: dict = defaultdict(float)
    fair: dict = defaultdict(float)
    queued: dict = defaultdict(int)
    nxt, clock = 0, 0.0
    while nxt < len(arrivals) or ends:
        now = min(arrivals[nxt].arrival if nxt < len(arrivals) else math.inf, ends[0][0] if ends else math.inf)
        _account(service, queued, received, fair, now - clock)
        clock = now
        while ends and ends[0][0] == now:
            _, job_id = heapq.heappop(ends)
            job = jobs[job_id]
            del service.running[job.user][job_id]
            stored, as_of = service.usage.get(job.user, (0.0, now))
            service.usage[job.user] = (accrue(stored, as_of, job.runtime, now, HALF_LIFE), now)
        while nxt < len(arrivals) and arrivals[nxt].arrival == now:
            job = arrivals[nxt]
            service.queue.add(job.user, job.id, queued_at=job.arrival)
            queued[job.user] += 1
            nxt += 1
        for user, job_id in choose(service, jobs, now):
            job = jobs[job_id]
            service.queue.remove(job_id)
            queued[user] -= 1
            job.start = now
            service.running[user][job_id] = now
            heapq.heappush(ends, (now + job.runtime, job_id))
    waits = {"light": [], "heavy": []}
    for job in jobs.values():
        waits["heavy" if job.heavy else "light"].append(job.start - job.arrival)
    return Outcome(policy, jain([received[u] / fair[u] for u in fair if fair[u] > 0]),
                   {job.id: job.start for job in jobs.values()}, waits)


def _account(service: Service, queued: dict, received: dict, fair: dict, seconds: float) -> None:
    """Add `seconds` of the current state: slots each user holds, and their max-min fair share."""
    if seconds <= 0:
        return
    wants = {}
    for user in set(queued) | set(service.running):
        holding = len(service.running.get(user, ()))
        want = min(service.runs_per_user, queued.get(user, 0) + holding)
        if want:
            wants[user] = want
            received[user] += holding * seconds
    for user, share in max_min_shares(wants, service.slots).items():
        fair[user] += share * seconds


def decision_cost(policy: str, queued: int = COST_QUEUED, users: int = COST_USERS,
                  repeats: int = COST_REPEATS) -> list[float]:
    """Microseconds of one admission (the queue's heads, the quota's decision, the queue's removal)
    with `queued` jobs over `users` users, every slot taken but the one just freed.

    NOTE: CPU time of this process, not wall time: the decision is pure computation, and wall time
    on a shared machine measured the other processes' load (medians from 6 to 20 ms for one 2-ms
    decision with a load of 8 on 2 cores)."""
    runs_per_user = DEFAULT_RUNS_PER_USER
    jobs, service = {}, Service(slots=0, runs_per_user=runs_per_user)
    for n in range(queued):
        user = (None, 1 + n % users)
        jobs[n + 1] = SimJob(n + 1, user, float(n) / 1000, 60.0, False)
        service.queue.add(user, n + 1, queued_at=jobs[n + 1].arrival)
    now = queued / 1000 + 3600.0
    for n, user in enumerate((None, u) for u in range(1, users + 1)):  # each has run, a third still run
        service.usage[user] = (3600.0 * (n % 7), now - 600)
        if n % 3 == 0:
            service.running[user][-n - 1] = now - 60
    service.slots = sum(service.active().values()) + 1
    choose = chooser(policy)
    samples = []
    for _ in range(repeats):
        began = time.process_time()
        granted = choose(service, jobs, now)
        for _, job_id in granted:
            service.queue.remove(job_id)
        samples.append((time.process_time() - began) * 1e6)
        for user, job_id in granted:  # back in line: every repeat sees the same size
            service.queue.add(user, job_id, queued_at=jobs[job_id].arrival)
    return samples


def chart(outcomes: list[Outcome], path: Path) -> str:
    """Bars of the mean wait per policy for light and heavy users, whiskers to the p95."""
    try:
        import matplotlib
    except ImportError:
        return "chart skipped: matplotlib is missing (pip install -r requirements-bench.txt)"
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4), dpi=100)
    width = 0.38
    for offset, (kind, colour) in enumerate((("light", "#3a7dc9"), ("heavy", "#d9822b"))):
        means = [statistics.mean(o.waits[kind]) / 60 for o in outcomes]
        p95s = [percentile(o.waits[kind], 0.95) / 60 for o in outcomes]
        xs = [n + (offset - 0.5) * width for n in range(len(outcomes))]
        bars = axes.bar(xs, means, width, color=colour, label=f"{kind} users: mean, whisker to p95",
                        yerr=[[0] * len(means), [p - m for p, m in zip(p95s, means)]], capsize=4)
        axes.bar_label(bars, [f"{m:.1f}" for m in means], label_type="center", color="white", fontsize=9)
    axes.set_xticks(range(len(outcomes)), [o.policy for o in outcomes])
    axes.set_yscale("symlog", linthresh=1)
    axes.set_ylabel("wait before start (minutes)")
    axes.set_title(f"{JOBS:,} jobs, {USERS} users ({HEAVY_USERS} heavy), {SLOTS} slots, "
                   f"runs_per_user {DEFAULT_RUNS_PER_USER}")
    figure.legend(loc="lower center", ncol=2, frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    pyplot.close(figure)
    return f"chart written to {path}"


def minutes(values: list[float]) -> str:
    return f"mean {statistics.mean(values) / 60:.1f} min, p95 {percentile(values, 0.95) / 60:.1f} min"


def outcomes(quick: bool) -> list[Outcome]:
    jobs = trace(1_500, 20, 5) if quick else trace()
    return [simulate(jobs, policy) for policy in POLICIES]


def rows(results: list[Outcome], quick: bool) -> list[Row]:
    size = "1,500 jobs, 20 users" if quick else f"{JOBS:,} jobs, {USERS} users"
    found = [Row(f"12a. {o.policy}: Jain's index of service received / max-min fair share ({size})",
                 f"{o.jain:.3f}; light {minutes(o.waits['light'])}; heavy {minutes(o.waits['heavy'])}",
                 "-", "-", None) for o in results]
    queued, users = (2_000, 100) if quick else (COST_QUEUED, COST_USERS)
    for policy in ("round_robin", "fair_share"):
        samples = decision_cost(policy, queued, users, 5 if quick else COST_REPEATS)
        found.append(Row(f"12b. one admission, {policy}, {queued:,} queued by {users:,} users",
                         f"median {statistics.median(samples):,.0f} µs (min {min(samples):,.0f}, "
                         f"max {max(samples):,.0f}, n={len(samples)})", "-", "-", None))
    return found


def run(quick: bool) -> list[Row]:
    """The figures; a full run also draws the chart (bench.all, `make bench`)."""
    results = outcomes(quick)
    if not quick:
        print(chart(results, CHART), file=sys.stderr)
    return rows(results, quick)


if __name__ == "__main__":
    main(run)
