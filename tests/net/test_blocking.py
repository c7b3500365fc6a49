"""The blocking-work seam (net.blocking): why it exists, and what each runner promises."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from net.blocking import Blocking, InlineRunner, ThreadRunner, inline, to_thread


def work(log: list[str], what: str) -> int:
    log.append(what)
    return threading.get_ident()


async def test_a_thread_hop_lets_the_mock_clock_jump_to_the_next_deadline(autojump_clock):
    # The reason for the seam: while a worker thread takes a real 50 ms, every task
    # is blocked, so autojump moves virtual time to the next timer - here a 10 s
    # timeout that nothing in the test ever meant to reach.
    start = trio.current_time()
    with trio.move_on_after(10):
        await to_thread.run(time.sleep, 0.05)
    assert trio.current_time() - start == 10


async def test_inline_work_takes_no_virtual_time(autojump_clock):
    start = trio.current_time()
    log: list[str] = []
    with trio.move_on_after(10) as scope:
        ident = await inline.run(work, log, "inline")
    assert not scope.cancelled_caught
    assert trio.current_time() == start
    assert (log, ident) == (["inline"], threading.get_ident())


async def test_threads_run_elsewhere_and_return_the_result():
    log: list[str] = []
    ident = await to_thread.run(work, log, "thread")
    assert log == ["thread"]
    assert ident != threading.get_ident()


@pytest.mark.parametrize("runner", [ThreadRunner(), InlineRunner(), InlineRunner(1.0)])
async def test_exceptions_reach_the_caller(runner: Blocking, autojump_clock):
    with pytest.raises(ZeroDivisionError):
        await runner.run(divmod, 1, 0)


@pytest.mark.parametrize("runner", [ThreadRunner(), InlineRunner()])
async def test_a_cancelled_caller_does_not_start_the_work(runner: Blocking):
    log: list[str] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await runner.run(work, log, "never")
    assert log == []


async def test_inline_delay_is_an_uncancellable_wait_after_the_work(autojump_clock):
    slow = InlineRunner(delay=2.0)
    start = trio.current_time()
    log: list[str] = []
    got: list[int] = []
    with trio.move_on_after(0.5) as scope:
        got.append(await slow.run(work, log, "slow disk"))
        await trio.lowlevel.checkpoint()  # the cancellation arrives here
    # The work happened at once; the caller waited the whole 2 s, as for a thread it
    # cannot abandon, and got the result before the timeout took effect.
    assert log == ["slow disk"]
    assert len(got) == 1 and scope.cancelled_caught
    assert trio.current_time() - start == 2.0
    assert slow.calls == 1


def test_inline_delay_must_not_be_negative():
    with pytest.raises(ValueError, match="negative"):
        InlineRunner(-1)
