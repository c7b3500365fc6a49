"""Query statistics: C1 rates and counts, C2 percentiles, bounded memory, snapshots."""

from __future__ import annotations

import itertools
import json
import math
import statistics

import pytest

from inference.metrics import LATENCY_KEYS, QueryStats, Running, percentile


def test_percentiles_of_one_to_a_hundred() -> None:
    stats = QueryStats()
    for k, seconds in enumerate(range(100, 0, -1)):  # recorded in reverse: order is irrelevant
        stats.record("resnet50", float(k), float(seconds))
    lat = stats.latency("resnet50")
    # Linear interpolation between closest ranks (numpy's default).
    assert lat["median"] == pytest.approx(50.5)
    assert lat["p90"] == pytest.approx(90.1)
    assert lat["p95"] == pytest.approx(95.05)
    assert lat["p99"] == pytest.approx(99.01)
    assert lat["mean"] == pytest.approx(50.5)
    assert lat["std"] == pytest.approx(math.sqrt((100**2 - 1) / 12))  # population std
    assert lat["std"] == pytest.approx(statistics.pstdev(range(1, 101)))
    assert lat["count"] == 100
    quantiles = statistics.quantiles(range(1, 101), n=100, method="inclusive")
    assert [lat["p90"], lat["p95"], lat["p99"]] == pytest.approx(
        [quantiles[89], quantiles[94], quantiles[98]]
    )


def test_percentile_edge_cases() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0], 0) == 1.0
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5


def test_rate_counts_completions_in_the_last_ten_seconds() -> None:
    stats = QueryStats()
    for t in range(30):  # one completion a second at t = 0..29
        stats.record("m", float(t), 0.1)
    assert stats.rate("m", 29.0) == pytest.approx(1.0)  # t = 20..29
    assert stats.rate("m", 29.5) == pytest.approx(1.0)  # (19.5, 29.5]
    assert stats.rate("m", 35.0) == pytest.approx(0.4)  # (25, 35]: 26..29
    assert stats.rate("m", 29.0, window=2.0) == pytest.approx(1.0)  # 28, 29
    assert stats.rate("m", 100.0) == 0.0
    assert stats.rate("unknown", 29.0) == 0.0
    assert stats.count("m") == 30 and stats.count("unknown") == 0
    with pytest.raises(ValueError, match="window"):
        stats.rate("m", 29.0, window=121.0)


def test_old_completion_times_are_dropped_but_counts_kept() -> None:
    stats = QueryStats(horizon=60.0)
    for k in range(20_000):
        stats.record("m", k * 0.01, None)  # 100 per second for 200 s
    assert stats.count("m") == 20_000
    assert stats.rate("m", 199.99, window=60.0) == pytest.approx(100.0, rel=0.01)
    kept = len(stats.snapshot()["models"][0]["work"]["ends"])
    assert 6_000 <= kept <= 6_000 + 1024 * 2  # bounded by the horizon (plus a trim chunk)
    # Completions without a processing time count for C1 but not for C2.
    assert stats.latency("m")["count"] == 0


def test_completions_out_of_order_are_placed_in_time() -> None:
    stats = QueryStats()
    stats.record("m", 10.0, 0.1)
    stats.record("m", 5.0, 0.1)
    stats.record("m", 11.0, 0.1)
    assert stats.rate("m", 11.0, window=5.0) == pytest.approx(2 / 5)
    assert stats.rate("m", 11.0) == pytest.approx(3 / 10)


def test_c1_and_c2_have_the_interface_keys() -> None:
    stats = QueryStats()
    stats.start("inception_v3", 0.0)  # started, nothing done yet: shows zeros
    for k in range(5):
        stats.record("resnet50", 1.0 + k, 0.2)
    c1 = stats.c1(5.0)
    assert c1 == {
        "models": {
            "inception_v3": {"query_rate": 0.0, "query_count": 0},
            "resnet50": {"query_rate": 0.5, "query_count": 5},
        }
    }
    c2 = stats.c2()
    assert set(c2["models"]) == {"inception_v3", "resnet50"}
    for model in ("inception_v3", "resnet50"):
        assert set(LATENCY_KEYS) <= set(c2["models"][model])
    assert c2["models"]["resnet50"]["median"] == pytest.approx(0.2)
    assert c2["models"]["resnet50"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert c2["models"]["inception_v3"]["mean"] == 0.0
    json.dumps(c1), json.dumps(c2)  # the console prints them as JSON
    assert stats.models() == ["inception_v3", "resnet50"]


def test_memory_is_capped_with_a_reservoir_and_moments_stay_exact() -> None:
    cap = 1000
    stats = QueryStats(cap=cap)
    values = [float((k * 7919) % 10_000) / 1000 for k in range(20_000)]  # uniform on [0, 10)
    for k, v in enumerate(values):
        stats.record("m", k * 0.001, v)
    samples = stats.snapshot()["models"][0]["samples"]
    assert len(samples) == cap
    lat = stats.latency("m")
    assert lat["count"] == 20_000
    assert lat["mean"] == pytest.approx(statistics.fmean(values))
    assert lat["std"] == pytest.approx(statistics.pstdev(values))
    # The percentiles are a uniform sample's: close to the truth.
    assert lat["median"] == pytest.approx(5.0, abs=0.5)
    assert lat["p90"] == pytest.approx(9.0, abs=0.3)
    # Deterministic: another instance fed the same keeps the same reservoir.
    again = QueryStats(cap=cap)
    for k, v in enumerate(values):
        again.record("m", k * 0.001, v)
    assert again.snapshot() == stats.snapshot()


def test_snapshot_restore_round_trips_and_evolves_identically() -> None:
    stats = QueryStats(cap=50)
    stats.start("inception_v3", 0.5)
    for k in range(120):
        stats.record("resnet50", k * 0.1, 0.05 + (k % 7) * 0.01)
    snap = stats.snapshot()
    restored = QueryStats.restore(json.loads(json.dumps(snap)))
    assert restored.snapshot() == snap
    for s in (stats, restored):
        for k in range(120, 200):
            s.record("resnet50", k * 0.1, 0.05 + (k % 5) * 0.01)
    assert restored.snapshot() == stats.snapshot()
    assert restored.c1(20.0) == stats.c1(20.0)
    assert restored.c2() == stats.c2()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="horizon"):
        QueryStats(horizon=0)
    with pytest.raises(ValueError, match="cap"):
        QueryStats(cap=0)


# --- work over time (issue 13: each query counts over the time it was processed) ----------


def test_a_batch_counts_over_its_interval() -> None:
    stats = QueryStats()
    for _ in range(4):  # a batch of 4 that ran over [8, 12]
        stats.record("m", 12.0, 1.0, began=8.0, job="job-1")
    # (2, 12]: the whole batch; (0, 10]: half of it; (12, 22]: nothing.
    assert stats.rate("m", 12.0) == pytest.approx(0.4)
    assert stats.rate("m", 10.0) == pytest.approx(0.2)
    assert stats.rate("m", 9.0, window=1.0) == pytest.approx(1.0)  # 1 query per second
    assert stats.rate("m", 22.0) == 0.0
    assert stats.job_rate("job-1", 10.0) == pytest.approx(0.2)
    assert stats.done("m", 11.0) == pytest.approx(3.0)
    assert stats.count("m") == 4 and stats.job_count("job-1") == 4
    # The queries of one batch share one entry.
    assert stats.snapshot()["models"][0]["work"]["counts"] == [4]


def test_a_job_served_evenly_shows_an_even_rate_whatever_the_window() -> None:
    # Batches of 4 back to back, 0.8 s each: 5 queries/s.  Counted at the batch's end,
    # a 10-s window holds 12 or 13 batches (4.8 or 5.2/s); counted over its interval, 5.
    stats = QueryStats()
    for k in range(40):
        for _ in range(4):
            stats.record("m", 0.8 * (k + 1), 0.2, began=0.8 * k)
    for t in (12.0, 12.3, 15.55, 20.1, 31.9):
        assert stats.rate("m", t) == pytest.approx(5.0)


def test_running_batches_are_credited_their_elapsed_share() -> None:
    stats = QueryStats()
    running = [("m", "job-1", 4, 10.0, 2.0)]  # 4 queries since 10 s, expected 2 s
    stats.running = lambda: [Running(*r) for r in running]
    stats.start("m", 0.0)
    assert stats.rate("m", 11.0) == pytest.approx(0.2)  # half of it: 2 queries in 10 s
    assert stats.rate("m", 15.0) == pytest.approx(0.4)  # capped at the whole batch
    assert stats.job_rate("job-1", 11.0) == 0.0  # a job counts from its first record
    for _ in range(4):  # it ended at 13 s: its measured interval replaces the estimate
        stats.record("m", 13.0, 0.75, began=10.0, job="job-1")
    running.clear()
    assert stats.rate("m", 11.0) == pytest.approx(4 / 3 / 10)
    assert stats.job_rate("job-1", 13.0) == pytest.approx(0.4)
    # A batch with no estimate yet (0) is not credited.
    running.append(("m", "job-1", 4, 13.0, 0.0))
    assert stats.rate("m", 14.0) == pytest.approx(0.4)


def test_series_samples_the_same_rate_over_time() -> None:
    stats = QueryStats()
    for k in range(100):  # 1 query per second over [k, k + 1]
        stats.record("m", k + 1.0, 1.0, began=float(k), job="job-7")
    series = stats.series("m", 100.0, span=60.0, step=5.0)
    assert [t for t, _ in series] == [40.0 + 5 * k for k in range(13)]
    assert all(r == pytest.approx(stats.rate("m", t)) for t, r in series)
    assert all(r == pytest.approx(1.0) for _, r in series)
    # A young model's rate rises over its first window.
    young = stats.series("m", 10.0, span=10.0, step=2.5)
    assert [r for _, r in young] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    assert stats.job_series("job-7", 100.0, span=2.0) == [(98.0, 1.0), (99.0, 1.0), (100.0, 1.0)]
    assert stats.series("unknown", 5.0, span=2.0) == [(3.0, 0.0), (4.0, 0.0), (5.0, 0.0)]
    assert stats.job_series("job-0", 5.0, span=0.0) == [(5.0, 0.0)]
    with pytest.raises(ValueError, match="span"):
        stats.series("m", 100.0, span=115.0)  # 115 + 10 reaches past the horizon
    with pytest.raises(ValueError, match="step"):
        stats.series("m", 100.0, step=0.0)


def test_done_never_decreases_and_counts_each_query_once() -> None:
    stats = QueryStats()
    batches = [(0.0, 1.5, 4), (0.5, 1.0, 2), (1.0, 1.0, 1), (1.2, 3.0, 3), (2.0, 2.5, 4)]
    for began, ended, n in batches:
        for _ in range(n):
            stats.record("m", ended, None, began=began)
    ts = [k * 0.05 for k in range(-10, 80)]
    done = [stats.done("m", t) for t in ts]
    assert all(b >= a for a, b in itertools.pairwise(done))
    assert done[0] == 0.0 and done[-1] == pytest.approx(14.0)


def test_idle_jobs_are_forgotten_after_a_horizon() -> None:
    stats = QueryStats(horizon=30.0)
    stats.record("m", 1.0, 0.1, began=0.5, job="job-1")
    for k in range(2048):  # job-2 runs on for 102 s
        stats.record("m", 2.0 + k * 0.05, 0.1, job="job-2")
    assert stats.jobs() == ["job-2"]
    assert stats.job_rate("job-1", 100.0) == 0.0 and stats.job_count("job-1") == 0
    assert stats.count("m") == 2049  # the model keeps every completion


def test_snapshot_with_jobs_and_intervals_evolves_identically() -> None:
    stats = QueryStats(horizon=20.0)
    for k in range(3000):
        stats.record("m", 1.0 + k * 0.02, 0.1, began=k * 0.02, job=f"job-{k // 1000}")
    snap = stats.snapshot()
    restored = QueryStats.restore(json.loads(json.dumps(snap)))
    assert restored.snapshot() == snap
    for s in (stats, restored):
        for k in range(3000, 4000):
            s.record("m", 1.0 + k * 0.02, 0.1, began=k * 0.02, job="job-3")
    assert restored.snapshot() == stats.snapshot()
    assert restored.series("m", 80.0, span=5.0) == stats.series("m", 80.0, span=5.0)


def test_a_snapshot_of_completion_instants_still_restores() -> None:
    old = {
        "horizon": 60.0,
        "cap": 10,
        "models": [
            {
                "model": "m",
                "started_at": 0.0,
                "count": 5,
                "finishes": [7.0, 8.0, 9.0],
                "n": 0,
                "mean": 0.0,
                "m2": 0.0,
                "samples": [],
            }
        ],
    }
    stats = QueryStats.restore(old)
    assert stats.rate("m", 9.0) == pytest.approx(0.3) and stats.count("m") == 5
