"""The one progress callback every long operation reports through, and sizes for people.

``progress(done, total, label)``: ``done`` never decreases and the last call of a
successful operation has ``done == total``; ``total`` is -1 while unknown.  Units are
the operation's own (bytes for a copy, files for a ``put-dir``); ``label`` says what
is moving ("images/cat.jpg -> H2, H3").  Callbacks run on the trio thread and must
return quickly: the console throttles what it shows, not the caller.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str], None]


def human_bytes(n: float) -> str:
    """``1.5 MB``-style sizes (powers of 1000, as disks and networks count)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def throttled(progress: Progress, interval: float, clock: Callable[[], float]) -> Progress:
    """``progress``, called at most every ``interval`` seconds (and always at the end)."""
    last = [-interval]

    def report(done: int, total: int, label: str) -> None:
        now = clock()
        if done < total and now - last[0] < interval:
            return
        last[0] = now
        progress(done, total, label)

    return report
