"""Plots of one job from the leader's timing log: the ``plot`` console command.

``plot JOB_ID LOCALDIR`` writes two PNG files, as the seed projects' busy.pdf and
throughput.pdf did:

* ``busy.png``: one row per worker, a bar for each batch over the time it ran (from
  the log's ``started_at``, when the scheduler saw it start, to ``finished_at``, its
  answer);
* ``throughput.png``: the job's queries per second over time, and each worker's
  share, counted as C1 counts them (:mod:`inference.metrics`): each query over the
  time its batch ran, in a sliding window of 10 s (shorter for a job that ran less
  than 40 s, so a short job still shows a curve).

The functions that turn rows into intervals and series are pure; :func:`draw` renders
them with matplotlib's Agg backend, imported there only: the node never imports this
module's drawing, and the console only for this command.  Rows are the timing log's
(``finished_at``, ``job_id``, ``model``, ``worker``, ``batch_id``, ``seconds``,
``started_at``, ... as strings); a log written before ``started_at`` existed puts a
batch's start its queries' processing time before its end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from inference.metrics import RATE_WINDOW, QueryStats

# Samples of the throughput curve at most (the step grows for long jobs).
MAX_SAMPLES = 600
# Pixel size of both images (inches at DPI).
WIDTH_IN, DPI = 10.0, 100

Row = Mapping[str, str]


@dataclass(frozen=True)
class Span:
    """A batch on a worker: ``queries`` queries from ``start`` to ``end`` (seconds)."""

    worker: str
    batch_id: str
    start: float
    end: float
    queries: int


def _float(value: str | None, default: float) -> float:
    try:
        x = float(value) if value not in (None, "") else default
    except ValueError:
        return default
    return x if math.isfinite(x) else default


def spans(rows: Sequence[Row]) -> list[Span]:
    """One span per batch (the rows of a batch share worker and batch id), by start.

    A row without a usable ``finished_at`` is skipped."""
    batches: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if not math.isnan(_float(r.get("finished_at"), math.nan)):
            batches.setdefault((r.get("worker", ""), r.get("batch_id", "")), []).append(r)
    out = []
    for (worker, batch), rs in batches.items():
        end = max(_float(r.get("finished_at"), 0.0) for r in rs)
        fallback = end - math.fsum(max(0.0, _float(r.get("seconds"), 0.0)) for r in rs)
        start = min(_float(rs[0].get("started_at"), fallback), end)
        out.append(Span(worker, batch, start, end, len(rs)))
    return sorted(out, key=lambda s: (s.start, s.worker, s.batch_id))


def busy(rows: Sequence[Row]) -> dict[str, list[tuple[float, float]]]:
    """Per worker, the ``(start, end)`` of each of its batches, in time order."""
    out: dict[str, list[tuple[float, float]]] = {}
    for s in spans(rows):
        out.setdefault(s.worker, []).append((s.start, s.end))
    return dict(sorted(out.items()))


def window_for(duration: float) -> float:
    """C1's 10 s, or a quarter of a job shorter than 40 s (at least 0.1 s)."""
    return RATE_WINDOW if duration >= 4 * RATE_WINDOW else max(0.1, duration / 4)


def throughput(
    rows: Sequence[Row], window: float | None = None
) -> tuple[float, list[float], dict[str, list[float]]]:
    """``(window, times, {"all" and each worker: rates})``: queries per second in the
    ``window`` before each time, each query counted over its batch's interval.

    Times run from the first batch's start to the last one's end."""
    ss = spans(rows)
    if not ss:
        return (window or RATE_WINDOW, [], {})
    t0, t1 = min(s.start for s in ss), max(s.end for s in ss)
    w = window if window is not None else window_for(t1 - t0)
    span = t1 - t0 + w  # from a window before the start, so the curve begins at 0
    step = max(span / MAX_SAMPLES, 0.05)
    # QueryStats does the counting, as for C1: one "model" for the job, one per worker.
    stats = QueryStats(horizon=span + w + step)
    for s in sorted(ss, key=lambda s: s.end):
        for _ in range(s.queries):
            stats.record("all", s.end, None, began=s.start)
            stats.record(s.worker, s.end, None, began=s.start)
    n = int(span / step)
    series = {
        key: stats.series(key, t1, span=n * step, step=step, window=w)
        for key in ["all", *sorted({s.worker for s in ss})]
    }
    times = [t for t, _ in series["all"]]
    return (w, times, {k: [r for _, r in v] for k, v in series.items()})


def draw(rows: Sequence[Row], outdir: Path, job_id: str) -> list[Path]:
    """Write ``busy.png`` and ``throughput.png`` of ``job_id`` into ``outdir``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    ss = spans(rows)
    if not ss:
        raise ValueError(f"{job_id} has no answered queries in the leader's timing log")
    t0 = min(s.start for s in ss)
    models = sorted({r.get("model", "") for r in rows})
    what = f"{job_id} ({', '.join(models)})"
    workers = sorted({s.worker for s in ss})
    files = [outdir / "busy.png", outdir / "throughput.png"]

    height = max(2.5, 1.2 + 0.45 * len(workers))
    fig, ax = plt.subplots(figsize=(WIDTH_IN, height), dpi=DPI)
    try:
        colour = "tab:blue"
        for k, worker in enumerate(workers):
            bars = [(s.start - t0, s.end - s.start) for s in ss if s.worker == worker]
            ax.broken_barh(bars, (k - 0.4, 0.8), facecolors=colour, edgecolors="white")
        ax.set_yticks(range(len(workers)), workers)
        ax.set_ylim(-0.6, len(workers) - 0.4)
        ax.set_xlabel(f"seconds since the first batch started (t0 = {t0:.3f})")
        ax.set_ylabel("worker")
        ax.set_title(f"Busy workers: {what}, {len(ss)} batches", loc="left")
        ax.legend(
            handles=[Patch(color=colour, label="a batch, from its start to its answer")],
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
            fontsize="small",
        )
        fig.tight_layout()
        fig.savefig(files[0])
    finally:
        plt.close(fig)

    w, times, rates = throughput(rows)
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.5), dpi=DPI)
    try:
        xs = [t - t0 for t in times]
        ax.plot(xs, rates["all"], color="black", linewidth=2, label=f"{job_id}, all workers")
        for worker in workers:
            ax.plot(xs, rates[worker], linewidth=1, label=worker)
        ax.set_xlabel(f"seconds since the first batch started (t0 = {t0:.3f})")
        ax.set_ylabel(f"queries per second (last {w:.3g} s)")
        ax.set_title(f"Throughput: {what}, each query counted over its batch's run")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right", fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(files[1])
    finally:
        plt.close(fig)
    return files
