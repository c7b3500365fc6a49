"""Per-model and per-job query statistics: C1 (rates, counts), C2 (processing-time percentiles).

Theory of operation
-------------------
The scheduler calls :meth:`QueryStats.start` when a model's first job starts and
:meth:`QueryStats.record` once for every query that completes: when it completed, the
processing time the worker measured for it (C2), and the time its batch started
running (``began``) and the job it belongs to.  It also lends a view of the batches
running now (:attr:`QueryStats.running`, see below).  Everything else is a query over
what was recorded, so the leader and its hot standby, fed the same calls, answer C1
and C2 identically.

* Work, not completions.  A query counts over the time it was processed, not at the
  instant it completed: a query whose batch ran over ``[s, e]`` contributes to a time
  window the fraction of ``[s, e]`` that overlaps it.  Every query of a batch is taken
  to span the whole batch (an image batch is one forward pass for all of them; a
  grading batch runs its requests side by side), so a batch of ``n`` spreads ``n``
  queries evenly over ``[s, e]``.  A query recorded without ``began`` (or with
  ``began >= e``) counts at the instant ``e``, as completions used to.
  Counting at the completion instant made two fairly served jobs' 10-second rates
  differ by up to a batch per worker at each end of the window (15-27% on the local
  cluster with batches of 4) while their whole-run rates agreed within 0.1%.
* Running batches.  A batch still running at ``now`` has done part of its work, and
  leaving it out would be the same error again at the window's newest end.  The
  owner (the scheduler) supplies the running batches (:class:`Running`: model, job,
  queries, when it began, its expected duration from the cost estimate); each is
  credited ``n x min(1, elapsed / expected)``.  When it completes, its measured
  ``[s, e]`` replaces that estimate.  ``running`` is a view of the owner's state,
  not ours: it is not in our snapshot (the scheduler's snapshot holds the batches).
* Rate: ``F(t)``, the work done by ``t`` (recorded batches spread over their
  intervals, plus the running ones' credit), is piecewise linear;
  ``rate(model, now, window) = (F(now) - F(now - window)) / window``.  Dividing by the
  full window even while the model is younger than it is what "queries per second
  over the last 10 s" means, so a model that just started shows a rising rate rather
  than an inflated one.  :meth:`QueryStats.series` samples that same rate over time
  (the dashboard's charts); :meth:`QueryStats.job_rate` and
  :meth:`QueryStats.job_series` do the same per job.
* Memory: intervals are kept for ``horizon`` seconds (120 s by default) behind the
  newest end; one entry per batch (the queries of a batch share one), sorted by end,
  with a running total, so recording is amortised O(1) and ``F(t)`` is a bisection
  plus the few batches that span ``t``.  Jobs idle for a horizon are forgotten.
* Count: every completion since the model's first job started (an integer: C1's
  ``query_count`` is queries completed, not work done).
* Latency: mean and (population) standard deviation come from Welford's running
  moments over every sample ever recorded, so they are exact whatever the volume.
  Percentiles are computed exactly, by linear interpolation between the closest ranks
  (numpy's default, ``statistics.quantiles(method="inclusive")``), over the retained
  samples.  Memory is bounded by keeping at most ``cap`` samples per model (100 000 by
  default, about 0.8 MB of floats): up to the cap every sample is kept and the
  percentiles are exact; past it the samples form a uniform reservoir (Vitter's
  Algorithm R) and the percentiles become an unbiased estimate from 100 000 draws.

Public queries (the dashboard and ``/metrics`` build on these; keep them stable):
``models()``, ``jobs()``, ``rate(model, now, window=10)``, ``job_rate(job, now,
window=10)``, ``series(model, now, span=60, step=1, window=10)``,
``job_series(job, now, span=60, step=1, window=10)``, ``done(model, t, job=None)``
(``F(t)``), ``count(model)``, ``job_count(job)``, ``latency(model)``, ``c1(now)``,
``c2()``.  Times are the owner's clock (the leader's wall clock, seconds).

Invariants
----------
1. ``count(m)`` never decreases; ``latency(m)["count"]`` is the number of recorded
   processing times (a completion may come without one).
2. The retained samples are all the samples while there have been at most ``cap`` of
   them, and a uniform sample of size ``cap`` afterwards.  The reservoir's random
   draws are seeded from the model name and the sample number, so two instances fed
   the same calls hold the same samples (no hidden random state to snapshot).
3. Nothing here reads a clock, awaits or does I/O; times come in as arguments.
4. :meth:`QueryStats.snapshot` is plain data (dicts with str keys, lists, floats,
   ints, None), safe for msgpack and JSON; ``QueryStats.restore(s.snapshot())``
   answers every query as ``s`` does and evolves identically (given the same
   ``running`` view).
5. ``F`` never decreases in ``t``, and once no batch is running the work in any
   window is at most the queries completed in or after it: no query is counted more
   than once, and each one's whole weight (1) lies within its batch's interval.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# Window of C1's query rate, from shared/INTERFACE.md.
RATE_WINDOW = 10.0
# Intervals ending longer than this behind the newest end are dropped; rates can be
# asked for at times and windows reaching back this far (a 60 s series of 10 s rates
# needs 70 s).
DEFAULT_HORIZON = 120.0
# Processing-time samples kept per model: exact percentiles up to here, reservoir beyond.
DEFAULT_CAP = 100_000
# Trim dropped intervals in chunks, so recording stays amortised O(1).
_TRIM_CHUNK = 1024

LATENCY_KEYS = ("mean", "std", "median", "p90", "p95", "p99")


class Running(NamedTuple):
    """A batch running now: ``queries`` of ``job`` (a ``model`` job), running since
    ``began``, expected to take ``expected`` seconds (0 or less: no estimate yet)."""

    model: str
    job: str
    queries: int
    began: float
    expected: float


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of sorted ``ordered``, interpolating linearly.

    0.0 for no data, so C2 always has a number to show.
    """
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def credit(t: float, began: float, ended: float) -> float:
    """The share of one query processed over ``[began, ended]`` that is done by ``t``."""
    if t >= ended:
        return 1.0
    if t <= began:
        return 0.0
    return (t - began) / (ended - began)


@dataclass
class _Work:
    """Queries processed over time: one entry per batch, sorted by end (see the docstring)."""

    ends: list[float] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)  # queries in entries[0..i], plus base
    base: int = 0  # queries of the entries dropped behind the horizon
    longest: float = 0.0  # the longest retained interval: bounds the scan in done()

    def add(self, began: float, ended: float, n: int, horizon: float) -> None:
        if self.ends and self.ends[-1] == ended and self.starts[-1] == began:
            self.counts[-1] += n  # another query of the same batch
            self.totals[-1] += n
            return
        self.longest = max(self.longest, ended - began)
        if not self.ends or ended >= self.ends[-1]:
            self.ends.append(ended)
            self.starts.append(began)
            self.counts.append(n)
            self.totals.append((self.totals[-1] if self.totals else self.base) + n)
        else:  # reported out of order (several sources of `now`): rare, O(n)
            i = bisect.bisect_right(self.ends, ended)
            self.ends.insert(i, ended)
            self.starts.insert(i, began)
            self.counts.insert(i, n)
            self.totals.insert(i, (self.totals[i - 1] if i else self.base) + n)
            for j in range(i + 1, len(self.totals)):
                self.totals[j] += n
        cut = bisect.bisect_left(self.ends, self.ends[-1] - horizon)
        if cut >= _TRIM_CHUNK or (cut and cut * 2 >= len(self.ends)):
            self.base = self.totals[cut - 1]
            del self.ends[:cut], self.starts[:cut], self.counts[:cut], self.totals[:cut]
            self.longest = max(
                (e - s for s, e in zip(self.starts, self.ends, strict=True)), default=0.0
            )

    def done(self, t: float) -> float:
        """Queries' worth of recorded work done by ``t`` (``F(t)`` without running batches)."""
        i = bisect.bisect_right(self.ends, t)
        total = float(self.totals[i - 1] if i else self.base)
        # Entries ending after t began before it only if they are at most `longest` long.
        j = i
        while j < len(self.ends) and self.ends[j] < t + self.longest:
            if self.starts[j] < t:
                total += self.counts[j] * credit(t, self.starts[j], self.ends[j])
            j += 1
        return total

    def newest(self) -> float | None:
        return self.ends[-1] if self.ends else None

    def plain(self) -> dict[str, Any]:
        return {
            "ends": list(self.ends),
            "starts": list(self.starts),
            "counts": list(self.counts),
            "base": self.base,
        }

    @classmethod
    def from_plain(cls, d: dict[str, Any]) -> _Work:
        w = cls(
            ends=[float(t) for t in d["ends"]],
            starts=[float(t) for t in d["starts"]],
            counts=[int(n) for n in d["counts"]],
            base=int(d["base"]),
        )
        total = w.base
        for n in w.counts:
            total += n
            w.totals.append(total)
        w.longest = max((e - s for s, e in zip(w.starts, w.ends, strict=True)), default=0.0)
        return w


@dataclass
class _ModelStats:
    started_at: float | None = None
    count: int = 0
    work: _Work = field(default_factory=_Work)
    # Welford's running moments over every processing time ever recorded.
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    # Retained processing times (all of them up to the cap, a reservoir beyond).
    samples: list[float] = field(default_factory=list)
    _ordered: list[float] | None = None  # sorted copy of samples, rebuilt when stale


@dataclass
class _JobStats:
    model: str
    count: int = 0
    work: _Work = field(default_factory=_Work)


class QueryStats:
    """Completions, work over time and processing times of every model's queries."""

    def __init__(self, horizon: float = DEFAULT_HORIZON, cap: int = DEFAULT_CAP) -> None:
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, not {horizon}")
        if cap < 1:
            raise ValueError(f"cap must be at least 1, not {cap}")
        self.horizon = horizon
        self.cap = cap
        self._models: dict[str, _ModelStats] = {}
        self._jobs: dict[str, _JobStats] = {}  # in the order they last recorded
        # The batches running now, lent by the owner (see the module docstring).
        self.running: Callable[[], Iterable[Running]] | None = None

    # --- events ------------------------------------------------------------------------

    def start(self, model: str, now: float) -> None:
        """A job of ``model`` started: from now on the model shows in C1 and C2."""
        m = self._models.setdefault(model, _ModelStats())
        if m.started_at is None:
            m.started_at = now

    def record(
        self,
        model: str,
        finished_at: float,
        seconds: float | None,
        began: float | None = None,
        job: str | None = None,
    ) -> None:
        """One query of ``model`` completed at ``finished_at``, taking ``seconds`` to process.

        ``seconds`` may be None when the worker did not say: the completion still counts
        towards the rate and the count.  ``began`` is when its batch started running
        (the query counts over ``[began, finished_at]``; None: at ``finished_at``), and
        ``job`` the job it belongs to (for the per-job rates).
        """
        m = self._models.setdefault(model, _ModelStats())
        if m.started_at is None:
            m.started_at = finished_at if began is None else min(began, finished_at)
        m.count += 1
        start = finished_at if began is None else min(began, finished_at)
        m.work.add(start, finished_at, 1, self.horizon)
        if job is not None:
            # Jobs are kept in the order they last recorded (this one moves to the end),
            # so the idle ones are at the front.
            j = self._jobs.pop(job, None) or _JobStats(model)
            self._jobs[job] = j
            j.count += 1
            j.work.add(start, finished_at, 1, self.horizon)
        self._prune(finished_at)
        if seconds is None:
            return
        m.n += 1
        delta = seconds - m.mean
        m.mean += delta / m.n
        m.m2 += delta * (seconds - m.mean)
        if len(m.samples) < self.cap:
            m.samples.append(seconds)
        else:
            # Algorithm R: the n-th sample replaces a random slot with probability cap/n.
            r = random.Random(f"{model}:{m.n}").randrange(m.n)
            if r < self.cap:
                m.samples[r] = seconds
        m._ordered = None

    def _prune(self, now: float) -> None:
        """Forget jobs whose last query ended a horizon ago (they finished or stalled):
        they are at the front of ``_jobs``, so this is amortised O(1) per record."""
        while self._jobs:
            job, oldest = next(iter(self._jobs.items()))
            newest = oldest.work.newest()
            if newest is not None and newest >= now - self.horizon:
                return
            del self._jobs[job]

    # --- queries -----------------------------------------------------------------------

    def models(self) -> list[str]:
        return sorted(self._models)

    def jobs(self) -> list[str]:
        """Jobs with queries recorded within the last horizon or so (see the docstring)."""
        return sorted(self._jobs)

    def done(self, model: str, t: float, job: str | None = None) -> float:
        """``F(t)``: queries' worth of work of ``model`` (or of ``job``) done by ``t``.

        Recorded batches count over their intervals, running ones by their elapsed
        share of the expected duration (see the module docstring)."""
        if job is None:
            ms = self._models.get(model)
            total = ms.work.done(t) if ms is not None else 0.0
        else:
            js = self._jobs.get(job)
            total = js.work.done(t) if js is not None else 0.0
        if self.running is not None:
            for r in self.running():
                if (r.job == job if job is not None else r.model == model) and r.expected > 0:
                    total += r.queries * credit(t, r.began, r.began + r.expected)
        return total

    def _check(self, span: float, window: float) -> None:
        if not 0 < window <= self.horizon:
            raise ValueError(f"window must be in (0, {self.horizon}], not {window}")
        if not 0 <= span <= self.horizon - window:
            raise ValueError(
                f"span must be in [0, {self.horizon} - window], not {span} (window {window})"
            )

    def rate(self, model: str, now: float, window: float = RATE_WINDOW) -> float:
        """Queries of ``model`` processed per second in ``(now - window, now]``."""
        self._check(0.0, window)
        if model not in self._models:
            return 0.0
        return (self.done(model, now) - self.done(model, now - window)) / window

    def job_rate(self, job: str, now: float, window: float = RATE_WINDOW) -> float:
        """Queries of ``job`` processed per second in ``(now - window, now]``."""
        self._check(0.0, window)
        js = self._jobs.get(job)
        if js is None:
            return 0.0
        return (self.done(js.model, now, job) - self.done(js.model, now - window, job)) / window

    def series(
        self,
        model: str,
        now: float,
        span: float = 60.0,
        step: float = 1.0,
        window: float = RATE_WINDOW,
    ) -> list[tuple[float, float]]:
        """``(t, rate(model, t, window))`` for ``t`` every ``step`` s over the last
        ``span`` s, oldest first, ending at ``now`` (the dashboard's "rate over time")."""
        return self._series(model, None, now, span, step, window)

    def job_series(
        self,
        job: str,
        now: float,
        span: float = 60.0,
        step: float = 1.0,
        window: float = RATE_WINDOW,
    ) -> list[tuple[float, float]]:
        """:meth:`series` of one job's queries."""
        js = self._jobs.get(job)
        return self._series(js.model if js else "", job if js else None, now, span, step, window)

    def _series(
        self, model: str, job: str | None, now: float, span: float, step: float, window: float
    ) -> list[tuple[float, float]]:
        self._check(span, window)
        if step <= 0:
            raise ValueError(f"step must be positive, not {step}")
        n = int(span / step + 1e-9)
        times = [now - (n - k) * step for k in range(n + 1)]
        if model not in self._models:
            return [(t, 0.0) for t in times]
        # F at every sample and every sample's window start, each computed once.
        points = sorted({*times, *(t - window for t in times)})
        f = {t: self.done(model, t, job) for t in points}
        return [(t, (f[t] - f[t - window]) / window) for t in times]

    def count(self, model: str) -> int:
        """Queries of ``model`` completed since its first job started."""
        m = self._models.get(model)
        return m.count if m is not None else 0

    def job_count(self, job: str) -> int:
        """Queries of ``job`` completed (while it is in :meth:`jobs`)."""
        j = self._jobs.get(job)
        return j.count if j is not None else 0

    def latency(self, model: str) -> dict[str, float]:
        """Processing time per query: mean, std, median, p90, p95, p99 (and count)."""
        m = self._models.get(model)
        if m is None or m.n == 0:
            return {**dict.fromkeys(LATENCY_KEYS, 0.0), "count": 0}
        if m._ordered is None:
            m._ordered = sorted(m.samples)
        ordered = m._ordered
        return {
            "mean": m.mean,
            # Population standard deviation (numpy's default): defined for one sample too.
            "std": math.sqrt(max(m.m2, 0.0) / m.n),
            "median": percentile(ordered, 50),
            "p90": percentile(ordered, 90),
            "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99),
            "count": m.n,
        }

    def c1(self, now: float) -> dict[str, Any]:
        """C1's JSON: ``{"models": {MODEL: {"query_rate", "query_count"}}}``."""
        return {
            "models": {
                model: {"query_rate": self.rate(model, now), "query_count": self.count(model)}
                for model in self.models()
            }
        }

    def c2(self) -> dict[str, Any]:
        """C2's JSON: ``{"models": {MODEL: {"mean", "std", "median", "p90", "p95", "p99"}}}``."""
        return {"models": {model: self.latency(model) for model in self.models()}}

    # --- snapshots ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain data (msgpack- and JSON-friendly) from which :meth:`restore` rebuilds us."""
        return {
            "horizon": self.horizon,
            "cap": self.cap,
            "models": [
                {
                    "model": name,
                    "started_at": m.started_at,
                    "count": m.count,
                    "work": m.work.plain(),
                    "n": m.n,
                    "mean": m.mean,
                    "m2": m.m2,
                    "samples": list(m.samples),
                }
                for name, m in sorted(self._models.items())
            ],
            "jobs": [  # in the order they last recorded (see _prune)
                {"job": name, "model": j.model, "count": j.count, "work": j.work.plain()}
                for name, j in self._jobs.items()
            ],
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> QueryStats:
        stats = cls(horizon=float(snapshot["horizon"]), cap=int(snapshot["cap"]))
        for d in snapshot["models"]:
            started = d["started_at"]
            if "work" in d:
                work = _Work.from_plain(d["work"])
            else:  # an older snapshot: completion instants only
                ends = [float(t) for t in d["finishes"]]
                work = _Work.from_plain(
                    {
                        "ends": ends,
                        "starts": ends,
                        "counts": [1] * len(ends),
                        "base": int(d["count"]) - len(ends),
                    }
                )
            stats._models[str(d["model"])] = _ModelStats(
                started_at=None if started is None else float(started),
                count=int(d["count"]),
                work=work,
                n=int(d["n"]),
                mean=float(d["mean"]),
                m2=float(d["m2"]),
                samples=[float(s) for s in d["samples"]],
            )
        for d in snapshot.get("jobs", ()):
            stats._jobs[str(d["job"])] = _JobStats(
                model=str(d["model"]), count=int(d["count"]), work=_Work.from_plain(d["work"])
            )
        return stats
