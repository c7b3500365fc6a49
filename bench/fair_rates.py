"""Fair rates, window by window, on the real local cluster, as JSON.

Two jobs run at once on real node processes (127.0.0.1), of two paced pseudo-models
(``noop-MSms``: a batch holds its worker MS ms per query, sleeping, so the cores stay
free for the nodes), batches of 4 (C3).  Fair share gives them equal query rates.
After a warm-up the benchmark polls C1 about once a second through the Python
client (:class:`idunno.Client`, in this process: a ``python -m console`` started
every second would itself take a core's worth of CPU from the workers being
measured, for a few hundred ms each time) and reports, over every poll, the largest
relative difference between the two models' 10-second rates:

* ``c1``: what C1 says now: each query counted over the time its batch ran, and the
  running batches' elapsed share (the target: within 5% in every window);
* ``completion_instants``: the old count, at the same instants, from the leader's
  timing log: a query counted when its batch's answer came;
* ``intervals_offline``: the new count recomputed afterwards from the timing log
  (each batch's ``started_at`` to ``finished_at``), which knows how every batch
  running at a poll ended.

The whole-run rates (queries over the time both ran) are reported too.  ``--real``
runs ResNet-50 and Inception-v3 instead (freshly initialised weights, generated
images, on the CPU: slow, and it loads every core).

    python bench/fair_rates.py [--nodes 4] [--files 1500] [--paces 80,100] [--seconds 60]
    python bench/fair_rates.py --real --nodes 2 --files 300
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.inference import MODELS, dataset, prepare
from config.topology import InferenceConfig
from idunno import Client
from scripts.localcluster import LocalCluster, interrupt_on_sigterm, wait_for

WINDOW = 10.0
WARM_UP = 15.0  # after both jobs started: costs measured, a full window of both


def spread(a: float, b: float) -> float:
    return abs(a - b) / max(a, b) if max(a, b) > 0 else 0.0


def timing_rows(c: LocalCluster, leader: str = "H1") -> list[dict[str, str]]:
    with (c.workdir / "data" / leader / "query_timings.csv").open() as f:
        return list(csv.DictReader(f))


def completion_rate(rows: list[dict[str, str]], t: float) -> float:
    return sum(1 for r in rows if t - WINDOW < float(r["finished_at"]) <= t) / WINDOW


def interval_rate(rows: list[dict[str, str]], t: float) -> float:
    def done(x: float) -> float:
        total = 0.0
        for r in rows:
            e = float(r["finished_at"])
            s = min(float(r["started_at"] or e), e)
            total += 1.0 if x >= e else 0.0 if x <= s else (x - s) / (e - s)
        return total

    return (done(t) - done(t - WINDOW)) / WINDOW


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--files", type=int, default=1500, help="queries per job")
    p.add_argument("--paces", default="80,100", help="ms per query of the two models")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=60.0, help="polling time after warm-up")
    p.add_argument("--real", action="store_true", help="resnet50 and inception_v3 instead")
    p.add_argument(
        "--max-batch-seconds",
        type=float,
        default=None,
        help="[inference] max_batch_seconds of the cluster (default: the built-in default)",
    )
    args = p.parse_args()
    interrupt_on_sigterm()
    models = [f"noop-{int(ms)}ms" for ms in args.paces.split(",")]
    if args.real:
        models = list(MODELS)
    if len(models) != 2:
        p.error("--paces takes two numbers")
    out: dict[str, Any] = {"benchmark": "fair_rates", "nodes": args.nodes, "models": models}
    out["batch"], out["queries_per_job"] = args.batch, args.files
    with tempfile.TemporaryDirectory(prefix="fair-rates-") as tmp:
        tiny = Path(tmp) / "tiny"
        tiny.mkdir()
        if args.real:
            images, weights = dataset(Path(tmp), args.files)
        else:
            for i in range(args.files):
                (tiny / f"q{i:05d}").write_bytes(b"x")
        replication = min(3, args.nodes)  # a put needs a quorum of its replicas alive
        inference = (
            {"max_batch_seconds": args.max_batch_seconds} if args.max_batch_seconds else None
        )
        out["max_batch_seconds"] = args.max_batch_seconds or InferenceConfig.max_batch_seconds
        cluster = {"transfer": "tcp", "replication": replication}
        with LocalCluster(args.nodes, cluster=cluster, inference=inference) as c:
            c.wait_converged(timeout=60)
            if args.real:
                prepare(c, images, weights)  # and a warm-up job per model
            else:
                c.console("H1", "put-dir", str(tiny), "noop", timeout=900)
            for m in models:
                c.console("H1", "C3", m, str(args.batch))
            glob = "images/*" if args.real else "noop/*"
            jobs = [c.console("H1", "C4", "submit-job", m, glob)["job_id"] for m in models]
            wait_for(
                lambda: all(
                    c.console("H1", "C4", "status", j)["started_at"] is not None for j in jobs
                ),
                60,
                "both jobs to start",
            )
            status = [c.console("H1", "C4", "status", j) for j in jobs]
            both = max(s["started_at"] for s in status)
            time.sleep(max(0.0, both + WARM_UP - time.time()))
            polls: list[tuple[float, float, float]] = []
            client = Client.connect(c.config_path, "H1")
            stop = time.time() + args.seconds
            while time.time() < stop:
                before = time.time()
                rates = client.rates()
                after = time.time()
                a, b = (rates[m].query_rate for m in models)
                polls.append(((before + after) / 2, a, b))
                time.sleep(max(0.0, 1.0 - (time.time() - before)))
            status = [c.console("H1", "C4", "status", j) for j in jobs]
            rows = timing_rows(c)
    ends = [s["finished_at"] for s in status if s["finished_at"] is not None]
    # Only polls while both jobs ran (the last batches of a job leave slots to the other).
    if ends:
        polls = [q for q in polls if q[0] < min(ends) - 1.0]
    by_model = {m: [r for r in rows if r["model"] == m] for m in models}
    c1 = [spread(a, b) for _, a, b in polls]
    old = [
        spread(completion_rate(by_model[models[0]], t), completion_rate(by_model[models[1]], t))
        for t, _, _ in polls
    ]
    offline = [
        spread(interval_rate(by_model[models[0]], t), interval_rate(by_model[models[1]], t))
        for t, _, _ in polls
    ]
    if not polls:
        out["error"] = "no poll while both jobs ran: use more --files"
    else:
        t0, t1 = polls[0][0] - WINDOW, polls[-1][0]
        whole = [
            sum(1 for r in by_model[m] if t0 < float(r["finished_at"]) <= t1) / (t1 - t0)
            for m in models
        ]
        out |= {
            "polls": len(polls),
            "polled_s": round(polls[-1][0] - polls[0][0], 1),
            "mean_rate": {
                m: round(statistics.fmean(q[k + 1] for q in polls), 2) for k, m in enumerate(models)
            },
            "max_spread_pct": {
                "c1": round(100 * max(c1), 2),
                "completion_instants": round(100 * max(old), 2),
                "intervals_offline": round(100 * max(offline), 2),
            },
            "mean_spread_pct": {
                "c1": round(100 * statistics.fmean(c1), 2),
                "completion_instants": round(100 * statistics.fmean(old), 2),
                "intervals_offline": round(100 * statistics.fmean(offline), 2),
            },
            "whole_run_spread_pct": round(100 * spread(*whole), 3),
            "target_c1_within_5pct_every_window": max(c1) <= 0.05,
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
