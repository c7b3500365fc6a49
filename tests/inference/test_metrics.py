"""Query statistics: C1 rates and counts, C2 percentiles, bounded memory, snapshots."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from inference.metrics import LATENCY_KEYS, QueryStats, percentile


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
        stats.rate("m", 29.0, window=61.0)


def test_old_completion_times_are_dropped_but_counts_kept() -> None:
    stats = QueryStats(horizon=60.0)
    for k in range(20_000):
        stats.record("m", k * 0.01, None)  # 100 per second for 200 s
    assert stats.count("m") == 20_000
    assert stats.rate("m", 199.99, window=60.0) == pytest.approx(100.0, rel=0.01)
    kept = len(stats.snapshot()["models"][0]["finishes"])
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
