"""C1's rates count each query over the time it was processed (issue 13).

Two fair jobs of one model, batches of 4, on the real scheduler core in virtual time:
counted at the instant a batch ends, their 10-second rates differ by more than 5% in
some windows although the scheduler serves them equally; counted over the batches'
intervals (plus the running batches' elapsed share), every window after warm-up
agrees within 5%.
"""

from __future__ import annotations

import random

import pytest

from inference.scheduler import Scheduler, SchedulerConfig, SetBatchSize
from tests.helpers.schedsim import SchedSim

MODEL = "resnet50"
COST = 0.1  # seconds per query, +-30% per batch (seeded: the run is reproducible)
WORKERS = ("H2", "H3", "H4", "H5")
CAP = {"threads": 2, "gpu": None, "slots": 2}  # two slots, as a real node's worker


def spread(a: float, b: float) -> float:
    return abs(a - b) / max(a, b)


def test_two_fair_jobs_rates_agree_within_5pct_in_every_window() -> None:
    rng = random.Random(1)

    def cost(model: str, worker: str) -> float:
        return COST * rng.uniform(0.7, 1.3)

    # Batches of 4 as the issue measured: a cap of 0.5 s (the old default) leaves them
    # at 4 (3 when a batch's estimate is past 0.125 s a query).
    sim = SchedSim(Scheduler(SchedulerConfig(max_batch_seconds=0.5)), cost)
    for w in WORKERS:
        sim.worker_up(w, CAP)
    sim.feed(SetBatchSize(MODEL, 4))
    a, b = sim.submit(MODEL, 100_000), sim.submit(MODEL, 100_000)
    stats = sim.scheduler.stats
    new: list[float] = []
    old: list[float] = []
    t = 15.0  # warm-up: costs measured, a full window of both jobs
    while t <= 70.0:
        sim.run_until(t)
        ra, rb = stats.job_rate(a, t), stats.job_rate(b, t)
        new.append(spread(ra, rb))
        # The model's rate is the two jobs' together.
        assert stats.rate(MODEL, t) == pytest.approx(ra + rb)
        # The old way: queries counted when their batch's answer came.
        old.append(spread(sim.job_rate(a, t - 10.0, t), sim.job_rate(b, t - 10.0, t)))
        t += 0.5
    print(f"max spread: old {max(old):.3f}, new {max(new):.3f}")
    assert max(new) <= 0.05, max(new)
    assert max(old) > 0.05, max(old)  # what the issue measured: this test can fail
    # Both jobs run at about half the four workers' 40 queries per second.
    assert 18.0 <= stats.job_rate(a, 70.0) <= 22.0
    # The whole-run rates agree within 0.1% either way.
    assert spread(stats.job_count(a), stats.job_count(b)) < 0.01


# Per-query costs measured on the 2-core development VM (bench/fair_rates.py --real,
# two nodes): ResNet-50 and Inception-v3 on each node, and each batch +-12% around it.
REAL = {
    ("resnet50", "H1"): 0.137,
    ("inception_v3", "H1"): 0.204,
    ("resnet50", "H2"): 0.125,
    ("inception_v3", "H2"): 0.184,
}


def worst_window(max_batch_seconds: float | None, seed: int) -> float:
    """The largest spread of two fair jobs' C1 rates, polled every 0.5 s for 60 s after
    warm-up, ResNet-50 against Inception-v3 on two two-slot workers, batches of 4."""
    rng = random.Random(seed)

    def cost(model: str, worker: str) -> float:
        return REAL[model, worker] * rng.uniform(0.88, 1.12)

    config = SchedulerConfig(max_batch_seconds=max_batch_seconds)
    sim = SchedSim(Scheduler(config), cost)
    for w in ("H1", "H2"):
        sim.worker_up(w, CAP)
    for model in ("resnet50", "inception_v3"):
        sim.feed(SetBatchSize(model, 4))
    a, b = sim.submit("resnet50", 100_000), sim.submit("inception_v3", 100_000)
    stats = sim.scheduler.stats
    worst, t = 0.0, 15.0
    while t <= 75.0:
        sim.run_until(t)
        worst = max(worst, spread(stats.job_rate(a, t), stats.job_rate(b, t)))
        t += 0.5
    return worst


def test_two_models_on_two_workers_stay_within_5pct_with_the_default_batch_cap() -> None:
    # A job's share moves one batch at a time: with two workers and ~6 queries/s per
    # job, a batch of 0.5 s of work (3 ResNet-50 or 2 Inception-v3 queries) is 5% of a
    # window's count, and some windows went past 5% (the real cluster too: 4.2-6.1%).
    # The default cap of 0.25 s halves that step.
    assert SchedulerConfig().max_batch_seconds == 0.25
    default = [worst_window(0.25, seed) for seed in range(4)]
    halfsecond = [worst_window(0.5, seed) for seed in range(4)]
    print(f"worst windows: 0.25 s {default}, 0.5 s {halfsecond}")
    assert max(default) <= 0.05, default
    assert max(halfsecond) > 0.05, halfsecond  # the test can fail: the cap is what helps
