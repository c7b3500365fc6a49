"""Per-model query statistics for C1 (rates, counts) and C2 (processing-time percentiles).

Theory of operation
-------------------
The scheduler calls :meth:`QueryStats.start` when a model's first job starts and
:meth:`QueryStats.record` once for every query that completes (the time it completed,
and the processing time the worker measured for it).  Everything else is a query over
what was recorded, so the leader and its hot standby, fed the same calls, answer C1
and C2 identically.

* Rate: completion times are kept for the last ``horizon`` seconds (60 s by default)
  behind the newest one; :meth:`QueryStats.rate` counts those in ``(now - window, now]``
  and divides by ``window``.  Dividing by the full window even while the model is
  younger than it is what "queries per second over the last 10 s" means, so a model
  that just started shows a rising rate rather than an inflated one.
* Count: every completion since the model's first job started.
* Latency: mean and (population) standard deviation come from Welford's running
  moments over every sample ever recorded, so they are exact whatever the volume.
  Percentiles are computed exactly, by linear interpolation between the closest ranks
  (numpy's default, ``statistics.quantiles(method="inclusive")``), over the retained
  samples.  Memory is bounded by keeping at most ``cap`` samples per model (100 000 by
  default, about 0.8 MB of floats): up to the cap every sample is kept and the
  percentiles are exact; past it the samples form a uniform reservoir (Vitter's
  Algorithm R) and the percentiles become an unbiased estimate from 100 000 draws.

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
   answers every query as ``s`` does and evolves identically.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field
from typing import Any

# Window of C1's query rate, from shared/INTERFACE.md.
RATE_WINDOW = 10.0
# Completion times older than this behind the newest are dropped; rates can be asked for
# windows up to this long (the fairness tests measure over 60 s).
DEFAULT_HORIZON = 60.0
# Processing-time samples kept per model: exact percentiles up to here, reservoir beyond.
DEFAULT_CAP = 100_000
# Trim dropped completion times in chunks, so recording stays amortised O(1).
_TRIM_CHUNK = 1024

LATENCY_KEYS = ("mean", "std", "median", "p90", "p95", "p99")


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


@dataclass
class _ModelStats:
    started_at: float | None = None
    count: int = 0
    # Completion times within the horizon, sorted ascending.
    finishes: list[float] = field(default_factory=list)
    # Welford's running moments over every processing time ever recorded.
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    # Retained processing times (all of them up to the cap, a reservoir beyond).
    samples: list[float] = field(default_factory=list)
    _ordered: list[float] | None = None  # sorted copy of samples, rebuilt when stale


class QueryStats:
    """Completions and processing times of every model's queries."""

    def __init__(self, horizon: float = DEFAULT_HORIZON, cap: int = DEFAULT_CAP) -> None:
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, not {horizon}")
        if cap < 1:
            raise ValueError(f"cap must be at least 1, not {cap}")
        self.horizon = horizon
        self.cap = cap
        self._models: dict[str, _ModelStats] = {}

    # --- events ------------------------------------------------------------------------

    def start(self, model: str, now: float) -> None:
        """A job of ``model`` started: from now on the model shows in C1 and C2."""
        m = self._models.setdefault(model, _ModelStats())
        if m.started_at is None:
            m.started_at = now

    def record(self, model: str, finished_at: float, seconds: float | None) -> None:
        """One query of ``model`` completed at ``finished_at``, taking ``seconds`` to process.

        ``seconds`` may be None when the worker did not say: the completion still counts
        towards the rate and the count.
        """
        m = self._models.setdefault(model, _ModelStats())
        if m.started_at is None:
            m.started_at = finished_at
        m.count += 1
        if not m.finishes or finished_at >= m.finishes[-1]:
            m.finishes.append(finished_at)
        else:  # completions reported out of order (several sources of `now`)
            bisect.insort(m.finishes, finished_at)
        cut = bisect.bisect_left(m.finishes, m.finishes[-1] - self.horizon)
        if cut >= _TRIM_CHUNK or (cut and cut * 2 >= len(m.finishes)):
            del m.finishes[:cut]
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
            j = random.Random(f"{model}:{m.n}").randrange(m.n)
            if j < self.cap:
                m.samples[j] = seconds
        m._ordered = None

    # --- queries -----------------------------------------------------------------------

    def models(self) -> list[str]:
        return sorted(self._models)

    def rate(self, model: str, now: float, window: float = RATE_WINDOW) -> float:
        """Queries of ``model`` completed per second in ``(now - window, now]``."""
        if not 0 < window <= self.horizon:
            raise ValueError(f"window must be in (0, {self.horizon}], not {window}")
        m = self._models.get(model)
        if m is None:
            return 0.0
        done = bisect.bisect_right(m.finishes, now) - bisect.bisect_right(m.finishes, now - window)
        return done / window

    def count(self, model: str) -> int:
        """Queries of ``model`` completed since its first job started."""
        m = self._models.get(model)
        return m.count if m is not None else 0

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
                    "finishes": list(m.finishes),
                    "n": m.n,
                    "mean": m.mean,
                    "m2": m.m2,
                    "samples": list(m.samples),
                }
                for name, m in sorted(self._models.items())
            ],
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> QueryStats:
        stats = cls(horizon=float(snapshot["horizon"]), cap=int(snapshot["cap"]))
        for d in snapshot["models"]:
            started = d["started_at"]
            stats._models[str(d["model"])] = _ModelStats(
                started_at=None if started is None else float(started),
                count=int(d["count"]),
                finishes=[float(t) for t in d["finishes"]],
                n=int(d["n"]),
                mean=float(d["mean"]),
                m2=float(d["m2"]),
                samples=[float(s) for s in d["samples"]],
            )
        return stats
