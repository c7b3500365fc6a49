"""The checker's nemesis schedule (tests/helpers/nemesis.py): pure, from a seed."""

from __future__ import annotations

import itertools

import pytest

from tests.helpers.nemesis import KINDS, Fault, schedule, targets

HOSTS = ["H1", "H2", "H3", "H4", "H5"]


def test_one_seed_one_schedule() -> None:
    assert schedule(7, 150) == schedule(7, 150)
    assert schedule(7, 150) != schedule(8, 150)


@pytest.mark.parametrize("seed", range(20))
def test_faults_never_overlap_fit_the_run_and_take_turns(seed: int) -> None:
    faults = schedule(seed, 150)
    assert len(faults) >= 4
    assert {f.kind for f in faults[:4]} == set(KINDS)  # the first round holds every kind
    assert faults[0].start == 5.0
    for a, b in itertools.pairwise(faults):
        assert b.start - a.end >= 10.0  # a quiet spell to merge in
    assert faults[-1].end <= 150
    for f in faults:
        lo, hi = (1.0, 2.0) if f.kind == "flap" else (12.0, 20.0)
        assert lo <= f.duration <= hi


def test_a_short_run_has_fewer_faults_and_kinds_can_be_chosen() -> None:
    assert schedule(1, 5) == []
    only = schedule(1, 300, kinds=["host"])
    assert only and {f.kind for f in only} == {"host"}
    with pytest.raises(ValueError, match="unknown fault kinds"):
        schedule(1, 100, kinds=["meteor"])


def test_targets() -> None:
    for pick in range(50):
        lm = targets(Fault("leader-minority", 0, 10, pick), HOSTS, "H3")
        assert len(lm) == 2 and "H3" in lm
        m = targets(Fault("minority", 0, 10, pick), HOSTS, "H3")
        assert len(m) == 2 and "H3" not in m
        assert len(targets(Fault("host", 0, 10, pick), HOSTS, "H3")) == 1
        assert targets(Fault("flap", 0, 1, pick), HOSTS, "H3") == HOSTS
        assert targets(Fault("minority", 0, 10, pick), HOSTS, "H3") == m  # pure
    picked = {tuple(targets(Fault("minority", 0, 10, p), HOSTS, "H1")) for p in range(50)}
    assert len(picked) > 3  # not always the same pair
    assert len(targets(Fault("leader-minority", 0, 10, 1), HOSTS, None)) == 2
