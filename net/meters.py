"""Small pure meters that ``/metrics`` (web.metrics) reads: histograms and busy time.

The parts that own an event feed these (the scheduler a query's processing time, the
SDFS leader a put's grant-to-commit time, a replica a get stream's time, a worker the
time it runs batches); the collector reads them at scrape time.  Nothing here reads a
clock or does I/O: times come in as arguments, so tests run on virtual time.

* :class:`Histogram`: counts of observations per bucket (upper bounds inclusive, as
  Prometheus' ``le``), their sum and count.  Memory is the buckets, whatever the
  volume.  A value that is not a finite number is ignored, never counted.
* :class:`Histograms`: one :class:`Histogram` per label value (a model's name).
* :class:`BusyMeter`: seconds during which at least one task ran (overlapping tasks
  count once), including the task running now.

Invariants: counts, sums of non-negative observations and busy seconds never
decrease; ``snapshot``/``restore`` (plain data, msgpack- and JSON-friendly) round-trip.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import Any

# Seconds: Prometheus' default buckets widened both ways (a noop query takes well under
# a millisecond, an LLM grading query or a large file's transfer minutes).
SECONDS_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)


class Histogram:
    """Observations in buckets with upper bounds ``bounds`` (and +Inf), sum and count."""

    def __init__(self, bounds: Sequence[float] = SECONDS_BUCKETS) -> None:
        bounds = tuple(float(b) for b in bounds)
        if not bounds or any(not math.isfinite(b) for b in bounds):
            raise ValueError(f"bucket bounds must be finite numbers, not {bounds!r}")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"bucket bounds must increase, not {bounds!r}")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # per bucket; the last is (max bound, +Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        self._counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative ``(upper bound, observations <= it)``, the last bound +Inf."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, math.inf), self._counts, strict=True):
            total += n
            out.append((bound, total))
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self._counts), "sum": self.sum}

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> Histogram:
        h = cls([float(b) for b in snapshot["bounds"]])
        counts = [int(c) for c in snapshot["counts"]]
        if len(counts) != len(h._counts) or min(counts) < 0:
            raise ValueError(f"{len(counts)} bucket counts for {len(h.bounds)} bounds")
        h._counts = counts
        h.sum = float(snapshot["sum"])
        h.count = sum(counts)
        return h


class Histograms:
    """A :class:`Histogram` per label value, all with the same bounds."""

    def __init__(self, bounds: Sequence[float] = SECONDS_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        Histogram(self.bounds)  # checks the bounds now, not at the first observation
        self._by: dict[str, Histogram] = {}

    def observe(self, label: str, value: float) -> None:
        h = self._by.get(label)
        if h is None:
            h = self._by[label] = Histogram(self.bounds)
        h.observe(value)

    def labels(self) -> list[str]:
        return sorted(self._by)

    def get(self, label: str) -> Histogram | None:
        return self._by.get(label)

    def snapshot(self) -> dict[str, Any]:
        return {
            "bounds": list(self.bounds),
            "by": {label: h.snapshot() for label, h in sorted(self._by.items())},
        }

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> Histograms:
        hs = cls([float(b) for b in snapshot["bounds"]])
        for label, h in snapshot["by"].items():
            hs._by[str(label)] = Histogram.restore(h)
        return hs


class BusyMeter:
    """Seconds with at least one task running: :meth:`start` and :meth:`stop` per task."""

    def __init__(self) -> None:
        self.running = 0
        self._busy = 0.0  # closed busy periods
        self._since = 0.0  # start of the open one, while running > 0

    def start(self, now: float) -> None:
        if self.running == 0:
            self._since = now
        self.running += 1

    def stop(self, now: float) -> None:
        if self.running == 0:
            raise ValueError("stop without a start")
        self.running -= 1
        if self.running == 0:
            self._busy += max(0.0, now - self._since)

    def seconds(self, now: float) -> float:
        """Busy seconds up to ``now`` (the open period counts up to ``now``)."""
        if self.running:
            return self._busy + max(0.0, now - self._since)
        return self._busy
