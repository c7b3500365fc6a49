"""A transfer's progress, and the bridge between its worker threads and the trio thread.

Bytes move in worker threads (file I/O, sockets, paramiko); the caller's
``progress(done, total, label)`` (net.progress.Progress) must be called on the trio
thread.  :class:`Reporter` lives on the trio thread and keeps invariant 3 of
sdfs.transfer.base: ``done`` never decreases, and a successful transfer ends with
``(size, size, label)``.  :class:`ThreadReporter` is its worker-thread side: it hops
to the trio thread a few times a second at most, and every call is a cancellation
point.  :func:`in_thread` runs such a worker and waits for it even when cancelled,
so nothing is left running behind the caller (invariant 4).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import trio

from net.progress import Progress

T = TypeVar("T")


class Reporter:
    """Calls ``progress`` on the trio thread, never backwards, and once at the end."""

    def __init__(self, progress: Progress | None, label: str, total: int) -> None:
        self.progress = progress
        self.label = label
        self.total = total
        self.done = -1

    def __call__(self, done: int) -> None:
        if self.progress is not None and done > self.done:
            self.done = done
            self.progress(done, self.total, self.label)

    def finish(self, size: int) -> None:
        if self.progress is not None:
            self.total = size
            self.done = size
            self.progress(size, size, self.label)


class ThreadReporter:
    """The worker thread's side of a Reporter: hops to the trio thread, sparingly.

    Each call is also a cancellation point: a cancelled caller stops the worker at
    the next block rather than after the whole file.
    """

    # A hop costs tens of microseconds; a few a second keeps a progress bar smooth.
    MIN_STEP = 4 * 1024 * 1024
    MIN_INTERVAL = 0.1

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.last_done = 0
        self.last_time = time.monotonic()

    def __call__(self, done: int, total: int | None = None) -> None:
        trio.from_thread.check_cancelled()
        if self.reporter.progress is None:
            return
        if total is not None and self.reporter.total < 0:
            self.reporter.total = total  # the size became known (an scp header)
        now = time.monotonic()
        if done - self.last_done < self.MIN_STEP and now - self.last_time < self.MIN_INTERVAL:
            return
        self.last_done, self.last_time = done, now
        trio.from_thread.run_sync(self.reporter, done)


async def in_thread(fn: Callable[[], T]) -> T:
    """Run blocking ``fn`` in a worker thread that the caller waits for, even when
    cancelled: ``fn`` polls trio.from_thread.check_cancelled (through ThreadReporter)
    and cleans up on the way out, so nothing is left running behind the caller."""
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=False)
