"""Where a service runs blocking work (file I/O, hashing): a seam for virtual-time tests.

Services keep the trio thread free, so membership's timers never wait behind a disk:
blocking calls go to a worker thread.  They do it through a :class:`Blocking` they
are given (``await self.blocking.run(store.ingest, record, path)``) rather than by
calling ``trio.to_thread.run_sync`` themselves, because of how virtual time works.

Under ``trio.testing.MockClock(autojump_threshold=0)`` the clock jumps to the next
deadline as soon as every task is blocked, and a task waiting for a worker thread
*is* blocked.  So while a thread spends a real millisecond on a file, virtual time
leaps to the next timer: an RPC timeout fires, a suspicion expires, a retry starts,
and which of those happens depends on the operating system's scheduler.  A test
that asserts exact times becomes a race.  Running the same work inline, on the trio
thread between two scheduling points, takes no virtual time at all, so every run
of the test is the same.

* :data:`to_thread` (a :class:`ThreadRunner`) is what real nodes use.
* :data:`inline` (an :class:`InlineRunner`) is for tests on virtual time;
  ``InlineRunner(delay)`` also makes each call take ``delay`` virtual seconds (a
  slow disk), so timeouts around file work can be tested at exact times.

Both behave like ``trio.to_thread.run_sync(fn, *args)`` with its default
``abandon_on_cancel=False``: cancellation is noticed before the work starts, never
during it; once ``fn`` has started the caller waits for it and gets its result or
its exception.

This module lives in ``net/``, the project's shared foundation for every part (as
:mod:`net.progress` does), though it is no network code: a top-level package for
one small module would cost a packaging change and say no more.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar, TypeVarTuple

import trio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class Blocking(Protocol):
    """Runs a blocking function so that the trio thread does not wait on it."""

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T: ...


class ThreadRunner:
    """In a worker thread (``trio.to_thread.run_sync``): for real nodes."""

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        return await trio.to_thread.run_sync(fn, *args)


class InlineRunner:
    """On the trio thread, in no virtual time (or exactly ``delay``): for tests.

    ``fn`` runs at once; the caller resumes ``delay`` seconds later, uncancellably,
    as it would wait for a thread it cannot abandon.  ``fn`` blocks the whole event
    loop while it runs, which is why real nodes never use this.
    """

    def __init__(self, delay: float = 0.0) -> None:
        if delay < 0:
            raise ValueError(f"delay must not be negative, got {delay}")
        self.delay = delay
        self.calls = 0

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        self.calls += 1
        try:
            return fn(*args)
        finally:
            # A scheduling point even with no delay, as the thread hop is; shielded,
            # because the work is done and the caller must see its outcome.
            with trio.CancelScope(shield=True):
                await trio.sleep(self.delay)


to_thread: Blocking = ThreadRunner()
inline: Blocking = InlineRunner()
