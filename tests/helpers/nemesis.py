"""The checker's nemesis: a schedule of network faults drawn from a seed (pure).

:func:`schedule` draws, from a seed alone, which fault comes when and for how long; the
same seed gives the same schedule, so a failing run can be replayed.  The kinds:

* ``minority``: two hosts split off onto the second bridge;
* ``leader-minority``: the current leader and one other host split off, so the
  leader's side is the minority and the three others must carry on without it;
* ``host``: one host's cable pulled;
* ``flap``: the whole switch down for a second or two, then up.

Which hosts a fault takes is decided when it starts (the leader is known only then),
by :func:`targets` from the fault's own random ``pick``: also pure.  Faults never
overlap: each is followed by a quiet spell long enough for the sides to merge again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

KINDS = ("minority", "leader-minority", "host", "flap")


@dataclass(frozen=True)
class Fault:
    kind: str
    start: float  # seconds from the run's start
    duration: float  # seconds until it is healed
    pick: int  # the fault's own random number: which hosts it takes

    @property
    def end(self) -> float:
        return self.start + self.duration


def schedule(
    seed: int,
    seconds: float,
    *,
    kinds: Sequence[str] = KINDS,
    first: float = 5.0,
    cut: tuple[float, float] = (12.0, 20.0),
    flap: tuple[float, float] = (1.0, 2.0),
    quiet: tuple[float, float] = (10.0, 14.0),
) -> list[Fault]:
    """Faults from ``first`` seconds on, each ending by ``seconds``.

    Kinds come in shuffled rounds of every kind (so any four consecutive faults hold
    each kind once per round); a cut lasts ``cut`` seconds (longer than failure
    detection, so each side removes the other), a flap ``flap`` seconds, and a quiet
    spell of ``quiet`` seconds follows each.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown or not kinds:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {list(KINDS)}")
    rng = random.Random(seed)
    faults: list[Fault] = []
    at = first
    queue: list[str] = []
    while True:
        if not queue:
            queue = list(kinds)
            rng.shuffle(queue)
        kind = queue.pop()
        lo, hi = flap if kind == "flap" else cut
        duration = round(rng.uniform(lo, hi), 2)
        if at + duration > seconds:
            return faults
        faults.append(Fault(kind, round(at, 2), duration, rng.randrange(1 << 30)))
        at += duration + rng.uniform(*quiet)


def targets(fault: Fault, hosts: Sequence[str], leader: str | None) -> list[str]:
    """The hosts ``fault`` takes: those moved to the second bridge (``minority``,
    ``leader-minority``), the one whose cable is pulled (``host``), or every host
    (``flap``).  Sorted, for the log."""
    rng = random.Random(fault.pick)
    hosts = sorted(hosts)
    if fault.kind == "flap":
        return hosts
    if fault.kind == "host":
        return [rng.choice(hosts)]
    minority = (len(hosts) - 1) // 2
    if fault.kind == "leader-minority" and leader in hosts:
        others = [h for h in hosts if h != leader]
        return sorted([leader, *rng.sample(others, minority - 1)])
    if fault.kind == "minority":
        return sorted(rng.sample([h for h in hosts if h != leader] or hosts, minority))
    return sorted(rng.sample(hosts, minority))
