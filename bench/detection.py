"""Failure-detection benchmark: latency, bandwidth and false removals, as JSON.

Every member runs the real membership code (core and trio shell, msgpack, HMAC)
on an in-memory network with random loss, under trio's MockClock, so a 100-member
cluster and minutes of protocol time run in seconds of CPU.  Virtual time measures
the protocol, not this machine's scheduler: the latencies are what the timers and
message exchanges produce, with zero network delay.

Reported, per cluster size at 1% loss:
  detection latency: time from a crash until a survivor removes the member,
      over every (survivor, crash) pair: median, p99, max;
  all_know: time until every survivor has removed it, per crash: median, max;
  bytes/s per member (sent, app payload incl. MAC; no IP/UDP headers), steady state.
And false removals (a live member declared failed anywhere) at 3%, 5% and 10% loss.

The anchor is hashicorp/memberlist at its defaults (100 nodes, 1% loss: median
9.86 s, p99 11.98 s, no false deaths, ~245 B/s per node at 50 nodes); our targets
are median <= 4.5 s, p99 <= 5.5 s, no false deaths, <= 500 B/s per node.

    python bench/detection.py [--sizes 10,50,100] [--crashes 10] [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import sys
import time
from typing import Any

import trio
import trio.testing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.helpers.memcluster import SimCluster


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def false_removals(cluster: SimCluster, since: float, crashed: set[str]) -> int:
    return sum(
        1
        for m in cluster.live()
        for t, e in m.events
        if t >= since and e.kind == "failed" and e.name not in crashed
    )


async def detection_run(n: int, loss: float, crashes: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    async with trio.open_nursery() as nursery:
        cluster = SimCluster(nursery, n, loss=loss, seed=seed)
        await cluster.start_all()
        everyone = set(cluster.members)
        try:
            converged_at = await cluster.wait_until(lambda: cluster.converged(everyone), 60)
        except AssertionError:
            lacking = {
                m.node.name: sorted(everyone - m.view())
                for m in cluster.live()
                if m.view() != everyone
            }
            raise RuntimeError(f"{n} members did not converge in 60 s: {lacking}") from None
        await trio.sleep(10)

        # Steady-state bandwidth: 30 s with nothing happening.
        before = {
            m.node.name: (m.transport.sent.total, m.transport.received.total)
            for m in cluster.live()
        }
        t0 = trio.current_time()
        await trio.sleep(30)
        span = trio.current_time() - t0
        sent = [(m.transport.sent.total - before[m.node.name][0]) / span for m in cluster.live()]
        received = [
            (m.transport.received.total - before[m.node.name][1]) / span for m in cluster.live()
        ]

        latencies: list[float] = []
        all_know: list[float] = []
        crashed: set[str] = set()
        watch_from = trio.current_time()
        for _ in range(crashes):
            victim = rng.choice([m.node.name for m in cluster.live()])
            crashed.add(victim)
            t_crash = trio.current_time()
            survivors = [m for m in cluster.live() if m.node.name != victim]
            cluster.crash(victim)
            await trio.sleep(12)
            times = []
            for m in survivors:
                seen = [
                    t
                    for t, e in m.events
                    if t >= t_crash and e.kind == "failed" and e.name == victim
                ]
                times.append(seen[0] - t_crash if seen else float("inf"))
            latencies += times
            all_know.append(max(times))
            # Bring it back (a restarted process) so every trial sees n members.
            cluster.restart_network(victim)
            node = next(nd for nd in cluster.nodes if nd.name == victim)
            await cluster.start(node, snapshot_from=survivors[0].node.name)
            await trio.sleep(8)
        missed = sum(1 for t in latencies if t == float("inf"))
        finite = [t for t in latencies if t != float("inf")]
        result = {
            "members": n,
            "loss": loss,
            "join_convergence_s": round(converged_at, 3),
            "crashes": crashes,
            "detection_s": {
                "median": round(statistics.median(finite), 3),
                "p99": round(percentile(finite, 0.99), 3),
                "max": round(max(finite), 3),
                "samples": len(finite),
                "missed": missed,
            },
            "all_know_s": {
                "median": round(statistics.median(all_know), 3),
                "max": round(max(all_know), 3),
            },
            "bytes_per_s_per_member": {
                "sent_mean": round(statistics.mean(sent), 1),
                "sent_max": round(max(sent), 1),
                "received_mean": round(statistics.mean(received), 1),
            },
            "false_removals": false_removals(cluster, watch_from, crashed),
        }
        nursery.cancel_scope.cancel()
    return result


async def false_removal_run(n: int, loss: float, duration: float, seed: int) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        cluster = SimCluster(nursery, n, loss=loss, seed=seed)
        await cluster.start_all()
        await trio.sleep(10)
        since = trio.current_time()
        await trio.sleep(duration)
        suspicions = sum(
            1 for m in cluster.live() for t, e in m.events if t >= since and e.kind == "suspected"
        )
        result = {
            "members": n,
            "loss": loss,
            "duration_s": duration,
            "false_removals": false_removals(cluster, since, set()),
            "suspicions": suspicions,
            "refutations": sum(
                1
                for m in cluster.live()
                for t, e in m.events
                if t >= since and e.kind == "self_refuted"
            ),
        }
        nursery.cancel_scope.cancel()
    return result


def run(fn: Any, *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10,50,100")
    p.add_argument("--crashes", type=int, default=10, help="sequential crashes per size")
    p.add_argument("--fp-members", type=int, default=10)
    p.add_argument("--fp-duration", type=float, default=600.0, help="virtual seconds per loss rate")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="small run for a smoke check")
    args = p.parse_args()
    logging.disable(logging.CRITICAL)  # members log every suspicion; only the JSON matters here
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes, args.crashes, args.fp_duration = [10], 3, 60.0
    wall = time.monotonic()
    out: dict[str, Any] = {"benchmark": "failure_detection", "virtual_time": True}
    out["detection_at_1pct_loss"] = [
        run(detection_run, n, 0.01, args.crashes, args.seed) for n in sizes
    ]
    out["false_removals"] = [
        run(false_removal_run, args.fp_members, loss, args.fp_duration, args.seed)
        for loss in (0.03, 0.05, 0.10)
    ]
    largest = out["detection_at_1pct_loss"][-1]
    bw = next((r for r in out["detection_at_1pct_loss"] if r["members"] == 50), largest)
    out["targets"] = {
        "median_le_4.5s": largest["detection_s"]["median"] <= 4.5,
        "p99_le_5.5s": largest["detection_s"]["p99"] <= 5.5,
        "no_false_deaths_at_1pct": all(
            r["false_removals"] == 0 for r in out["detection_at_1pct_loss"]
        ),
        "bytes_per_s_le_500": bw["bytes_per_s_per_member"]["sent_mean"] <= 500,
    }
    out["anchor_memberlist"] = {"median_s": 9.86, "p99_s": 11.98, "bytes_per_s_at_50": 245}
    out["wall_s"] = round(time.monotonic() - wall, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
