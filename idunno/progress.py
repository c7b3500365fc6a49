"""A job's progress bar: done/total, the query rate and the time left (pure parts + a writer).

:class:`JobMeter` turns the ``(time, done)`` samples a waiter sees into a rate and an
ETA (no clock of its own: it is given ``now``), :func:`job_line` draws one line, and
:func:`show` puts it on a stream the way the console shows a copy's progress: one line
redrawn in place on a terminal, only the final line otherwise (a log stays short).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TextIO

BAR_WIDTH = 24


@dataclass
class JobMeter:
    """Queries per second since the waiter first saw the job, and the time left."""

    start: tuple[float, int] | None = None

    def update(self, now: float, done: int, total: int) -> tuple[float | None, float | None]:
        """``(rate, eta)`` after seeing ``done`` of ``total`` at ``now``; None while unknown."""
        if self.start is None:
            self.start = (now, done)
            return None, None
        t0, d0 = self.start
        if now <= t0 or done <= d0:
            return None, None
        rate = (done - d0) / (now - t0)
        return rate, max(total - done, 0) / rate


def clock_text(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``."""
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def job_line(
    label: str, done: int, total: int, rate: float | None = None, eta: float | None = None
) -> str:
    """``job-3 resnet50 [#####-----]  12/40 queries  30.0%  4.2 q/s  ETA 0:07``."""
    frac = done / total if total > 0 else 1.0
    filled = min(BAR_WIDTH, int(frac * BAR_WIDTH))
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    parts = [f"{label} [{bar}]", f"{done}/{total} queries", f"{100 * frac:5.1f}%"]
    if rate is not None:
        parts.append(f"{rate:.1f} q/s")
    if eta is not None and done < total:
        parts.append(f"ETA {clock_text(eta)}")
    return "  ".join(parts)


def show(stream: TextIO, line: str, final: bool) -> None:
    """``line`` on ``stream``: redrawn in place on a terminal, else only the final one."""
    try:
        if stream.isatty():
            stream.write(f"\r\033[K{line}" + ("\n" if final else ""))
        elif final:
            stream.write(line + "\n")
        stream.flush()
    except (OSError, ValueError):  # the terminal went away
        pass
