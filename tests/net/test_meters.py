"""net.meters: histograms and busy time for /metrics, on plain numbers."""

from __future__ import annotations

import math

import pytest

from net.meters import BusyMeter, Histogram, Histograms


def test_a_histogram_counts_each_value_in_the_first_bucket_whose_bound_it_does_not_exceed():
    h = Histogram([0.1, 1.0, 10.0])
    for v in (0.05, 0.1, 0.1000001, 1.0, 3.0, 10.0, 11.0, -1.0):
        h.observe(v)
    h.observe(math.nan)  # not a number: ignored, never counted
    h.observe(math.inf)
    assert h.buckets() == [(0.1, 3), (1.0, 5), (10.0, 7), (math.inf, 8)]
    assert h.count == 8
    assert h.sum == pytest.approx(0.05 + 0.1 + 0.1000001 + 1.0 + 3.0 + 10.0 + 11.0 - 1.0)


def test_histogram_bounds_must_be_finite_and_increase():
    for bad in ([], [1.0, 1.0], [2.0, 1.0], [1.0, math.inf], [math.nan]):
        with pytest.raises(ValueError):
            Histogram(bad)
    with pytest.raises(ValueError):
        Histograms([0.5, 0.1])


def test_histograms_snapshot_and_restore_round_trip():
    hs = Histograms([0.01, 0.1])
    for model, v in (("a", 0.005), ("a", 0.05), ("b", 0.5), ("a", 0.2)):
        hs.observe(model, v)
    back = Histograms.restore(hs.snapshot())
    assert back.snapshot() == hs.snapshot()
    assert back.labels() == ["a", "b"]
    a = back.get("a")
    assert a is not None and a.buckets() == [(0.01, 1), (0.1, 2), (math.inf, 3)]
    assert a.count == 3 and a.sum == pytest.approx(0.255)
    assert back.get("c") is None
    back.observe("a", 0.001)  # evolves as the original would
    hs.observe("a", 0.001)
    assert back.snapshot() == hs.snapshot()
    with pytest.raises(ValueError):
        Histogram.restore({"bounds": [1.0], "counts": [1], "sum": 0.0})


def test_busy_time_counts_overlapping_tasks_once_and_the_open_period_up_to_now():
    b = BusyMeter()
    assert b.seconds(5.0) == 0.0
    b.start(1.0)
    b.start(1.5)  # overlaps the first
    assert b.seconds(2.0) == 1.0 and b.running == 2
    b.stop(2.5)
    b.stop(3.0)
    assert b.seconds(10.0) == 2.0 and b.running == 0
    b.start(4.0)
    assert b.seconds(4.25) == 2.25
    b.stop(5.0)
    assert b.seconds(6.0) == 3.0
    with pytest.raises(ValueError):
        b.stop(7.0)
