"""Reading membership events out of real nodes' log files.

Nodes log each membership change with a millisecond timestamp, e.g.
``20:26:47.676 WARNING node.H1: H3 failed: suspected by H2, ...``.  Tests of real
processes use these lines to time detection precisely, independent of how long a
one-shot console takes to start.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(
    r"^(?P<clock>\d\d:\d\d:\d\d\.\d{3}) (?P<level>[A-Z]+) node\.(?P<node>\S+): "
    r"(?P<member>\S+) (?P<kind>joined|suspected|refuted|failed|left|rejoined)[:(]"
)


@dataclass(frozen=True)
class LogEvent:
    at: float  # seconds since the epoch
    node: str  # who logged it
    member: str  # whom it is about
    kind: str


def to_epoch(clock: str, near: float) -> float:
    """A wall-clock time of day, as epoch seconds, taken on the day closest to ``near``."""
    t = dt.datetime.strptime(clock, "%H:%M:%S.%f").time()
    base = dt.datetime.fromtimestamp(near)
    best = None
    for day in (-1, 0, 1):
        cand = dt.datetime.combine(base.date() + dt.timedelta(days=day), t).timestamp()
        if best is None or abs(cand - near) < abs(best - near):
            best = cand
    assert best is not None
    return best


def events(log_path: Path, near: float) -> list[LogEvent]:
    """Every membership event in one node's log; ``near`` anchors the date."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        m = _LINE.match(line)
        if m:
            found.append(LogEvent(to_epoch(m["clock"], near), m["node"], m["member"], m["kind"]))
    return found


def first(log_path: Path, kind: str, member: str, after: float) -> float | None:
    """When the node first logged ``member`` ``kind`` after ``after`` (epoch seconds)."""
    for e in events(log_path, after):
        if e.kind == kind and e.member == member and e.at >= after - 0.001:
            return e.at
    return None
