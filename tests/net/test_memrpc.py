"""The in-memory RPC (net.memrpc) on virtual time: net.rpc.call's behaviour, exact times.

Every test runs on trio's MockClock with autojump, so a 5-second timeout costs no real
time and each assertion names the exact virtual time a reply or an error came.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from net.codec import Codec
from net.memrpc import CLIENT, MemoryRpc
from net.messages import ConsoleReply, ConsoleRequest, ErrorReply
from net.rpc import RpcError, frame_codec
from net.transport import Address

SECRET = b"memrpc-secret"
A: Address = ("10.0.0.1", 8001)
B: Address = ("10.0.0.2", 8002)
C: Address = ("10.0.0.3", 8003)


class Echo:
    """A handler that answers who asked and notes what it finished, and when."""

    def __init__(self) -> None:
        self.finished: list[tuple[float, str]] = []

    async def __call__(self, request: Any, addr: Address) -> Any:
        assert isinstance(request, ConsoleRequest)
        if request.command == "boom":
            raise RuntimeError("the handler broke")
        if request.command == "slow":
            await trio.sleep(float(request.args[0]))
        self.finished.append((trio.current_time(), request.command))
        return ConsoleReply(True, {"command": request.command, "from": list(addr)})


def network(nursery: trio.Nursery, *servers: Address, **kw: Any) -> tuple[MemoryRpc, Echo]:
    net = MemoryRpc(nursery, **kw)
    echo = Echo()
    for addr in servers:
        net.serve(addr, frame_codec(SECRET), echo)
    return net, echo


async def timed(coro: Any) -> tuple[float, Any]:
    """(virtual seconds it took, its result or the exception it raised)."""
    start = trio.current_time()
    try:
        result = await coro
    except Exception as e:
        result = e
    return trio.current_time() - start, result


CODEC = frame_codec(SECRET)


# --- replies and delay ------------------------------------------------------------------


async def test_a_reply_comes_after_twice_the_delay_and_names_the_caller(nursery, autojump_clock):
    net, _ = network(nursery, B, delay=0.25)
    took, reply = await timed(net.caller(A)(B, CODEC, ConsoleRequest("ls"), 5.0))
    assert reply == ConsoleReply(True, {"command": "ls", "from": list(A)})
    assert took == 0.5
    assert (net.delivered, net.failed, net.served[B]) == (1, 0, 1)


async def test_handler_time_adds_to_both_delays(nursery, autojump_clock):
    net, echo = network(nursery, B, delay=0.25)
    start = trio.current_time()
    took, reply = await timed(net.call(B, CODEC, ConsoleRequest("slow", ("1.5",))))
    assert took == 2.0
    assert echo.finished == [(start + 1.75, "slow")]
    assert reply.data["from"] == list(CLIENT)  # MemoryRpc.call comes from outside


async def test_a_link_can_have_its_own_delay(nursery, autojump_clock):
    net, _ = network(nursery, A, B, C, delay=0.25)
    net.set_delay(A, B, 1.0)
    assert (await timed(net.caller(A)(B, CODEC, ConsoleRequest("x"), 5.0)))[0] == 2.0
    assert (await timed(net.caller(B)(A, CODEC, ConsoleRequest("x"), 5.0)))[0] == 2.0
    assert (await timed(net.caller(A)(C, CODEC, ConsoleRequest("x"), 5.0)))[0] == 0.5
    net.set_delay(A, B, None)
    assert (await timed(net.caller(A)(B, CODEC, ConsoleRequest("x"), 5.0)))[0] == 0.5


# --- crash ------------------------------------------------------------------------------


async def test_a_crashed_node_refuses_at_once_and_a_restart_serves_again(nursery, autojump_clock):
    net, _ = network(nursery, B, delay=0.25)
    net.crash(B)
    took, err = await timed(net.caller(A)(B, CODEC, ConsoleRequest("ls"), 5.0))
    assert took == 0
    assert isinstance(err, RpcError)
    assert str(err) == "cannot reach 10.0.0.2:8002: Connection refused"
    assert not net.serving(B)
    # Nobody ever served C: the same refusal.
    took, err = await timed(net.call(C, CODEC, ConsoleRequest("ls")))
    assert (took, str(err)) == (0, "cannot reach 10.0.0.3:8003: Connection refused")
    assert net.failures == {"refused": 2}

    net.serve(B, frame_codec(SECRET), Echo())  # the restart
    took, reply = await timed(net.caller(A)(B, CODEC, ConsoleRequest("ls"), 5.0))
    assert (took, reply.ok) == (0.5, True)


async def test_a_handler_in_flight_on_a_crashed_node_never_answers(nursery, autojump_clock):
    net, echo = network(nursery, B, delay=0.25)
    start = trio.current_time()

    async def crash_at_one() -> None:
        await trio.sleep(1.0)
        net.crash(B)

    nursery.start_soon(crash_at_one)
    took, err = await timed(net.caller(A)(B, CODEC, ConsoleRequest("slow", ("10",)), 30.0))
    # The kernel closes a killed process's connections: the caller hears it one
    # delay after the crash, not at its timeout.
    assert took == 1.25
    assert str(err) == (
        "10.0.0.2:8002 closed the connection without answering "
        "(it may be stopping, or use another cluster secret)"
    )
    await trio.sleep(20)
    assert echo.finished == []  # the handler was stopped, not just its reply
    assert net.failures == {"closed": 1}
    assert trio.current_time() == start + 21.25


async def test_serving_a_live_address_twice_is_refused(nursery):
    net, _ = network(nursery, B)
    with pytest.raises(OSError, match="in use"):
        net.serve(B, CODEC, Echo())
    with pytest.raises(ValueError, match="nothing serves"):
        net.crash(C)


# --- partition --------------------------------------------------------------------------


async def test_a_partition_times_out_at_exactly_the_timeout_and_heal_restores(
    nursery, autojump_clock
):
    net, echo = network(nursery, A, B, C, delay=0.25)
    net.partition([A], [B, C])
    took, err = await timed(net.caller(A)(B, CODEC, ConsoleRequest("ls"), 2.0))
    assert took == 2.0
    assert str(err) == "10.0.0.2:8002 did not answer within 2 s"
    assert echo.finished == []  # the request never arrived
    # Same side, and from a client in no group: untouched.
    assert (await net.caller(B)(C, CODEC, ConsoleRequest("ls"), 2.0)).ok
    assert (await net.call(A, CODEC, ConsoleRequest("ls"))).ok
    # A crashed node across the cut is a black hole too, not a refusal.
    net.crash(B)
    took, err = await timed(net.caller(A)(B, CODEC, ConsoleRequest("ls"), 3.0))
    assert (took, str(err)) == (3.0, "10.0.0.2:8002 did not answer within 3 s")
    assert net.failures == {"timeout": 2}

    net.heal()
    took, reply = await timed(net.caller(A)(C, CODEC, ConsoleRequest("ls"), 2.0))
    assert (took, reply.ok) == (0.5, True)


async def test_a_partition_during_a_call_loses_the_reply_after_the_handler_ran(
    nursery, autojump_clock
):
    net, echo = network(nursery, B, delay=0.25)
    start = trio.current_time()

    async def cut_at_one() -> None:
        await trio.sleep(1.0)
        net.partition([A], [B])

    nursery.start_soon(cut_at_one)
    took, err = await timed(net.caller(A)(B, CODEC, ConsoleRequest("slow", ("2",)), 5.0))
    assert (took, str(err)) == (5.0, "10.0.0.2:8002 did not answer within 5 s")
    assert echo.finished == [(start + 2.25, "slow")]


async def test_a_caller_that_gives_up_does_not_unsend_its_request(nursery, autojump_clock):
    net, echo = network(nursery, B)
    start = trio.current_time()
    took, err = await timed(net.call(B, CODEC, ConsoleRequest("slow", ("3",)), 1.0))
    assert (took, str(err)) == (1.0, "10.0.0.2:8002 did not answer within 1 s")
    await trio.sleep(5)
    assert echo.finished == [(start + 3.0, "slow")]
    assert (net.delivered, net.failures) == (0, {"timeout": 1})


# --- what servers answer ----------------------------------------------------------------


async def test_a_handler_that_raises_answers_an_internal_error(nursery, autojump_clock, caplog):
    net, _ = network(nursery, B, delay=0.25)
    took, reply = await timed(net.call(B, CODEC, ConsoleRequest("boom")))
    assert took == 0.5
    assert reply == ErrorReply("internal error: RuntimeError: the handler broke")
    assert "handler failed on ConsoleRequest" in caplog.text
    assert (await net.call(B, CODEC, ConsoleRequest("after"))).ok  # still serving
    assert net.delivered == 2


async def test_a_wrong_secret_is_refused_as_on_tcp(nursery, autojump_clock, caplog):
    caplog.set_level(logging.DEBUG, logger="net.memrpc")
    net = MemoryRpc(nursery, delay=0.25)
    server_codec = frame_codec(SECRET)
    net.serve(B, server_codec, Echo())
    took, err = await timed(net.call(B, frame_codec(b"wrong-secret"), ConsoleRequest("ls")))
    assert took == 0.5
    assert str(err) == (
        "10.0.0.2:8002 closed the connection without answering "
        "(it may be stopping, or use another cluster secret)"
    )
    assert server_codec.rejected["bad_mac"] == 1
    assert net.served[B] == 0
    assert net.failures == {"closed": 1}


async def test_a_reply_the_caller_cannot_open_is_an_rpc_error(nursery, autojump_clock):
    net, _ = network(nursery, B)
    small = Codec(SECRET, 40)  # the request fits, the reply does not
    err = (await timed(net.call(B, small, ConsoleRequest("x"))))[1]
    assert str(err) == (
        "10.0.0.2:8002 sent a reply that was rejected (oversize); is the cluster secret the same?"
    )
    assert small.rejected["oversize"] == 1
    assert net.failures == {"rejected": 1}


async def test_a_request_that_cannot_be_sealed_is_an_rpc_error_as_on_tcp(nursery, autojump_clock):
    net, echo = network(nursery, B)
    with pytest.raises(RpcError, match=r"cannot send ConsoleRequest: ValueError: .* over 64"):
        await net.call(B, Codec(SECRET, 64), ConsoleRequest("x" * 100))
    with pytest.raises(RpcError, match="cannot send object: TypeError"):
        await net.call(B, CODEC, object())
    assert echo.finished == [] and net.failed == 0


async def test_a_reply_that_cannot_be_sealed_answers_an_error_as_on_tcp(nursery, autojump_clock):
    async def bad(request: Any, addr: Address) -> Any:
        return object()

    net = MemoryRpc(nursery)
    net.serve(B, CODEC, bad)
    reply = await net.call(B, CODEC, ConsoleRequest("x"))
    assert isinstance(reply, ErrorReply)
    assert reply.error.startswith("internal error: cannot send object: TypeError")
    assert net.unsealable_replies == 1


# --- drops and counters -----------------------------------------------------------------


async def outcomes(nursery: trio.Nursery, seed: int, calls: int = 200) -> tuple[str, MemoryRpc]:
    net, _ = network(nursery, B, drop=0.3, seed=seed)
    got = ""
    for _ in range(calls):
        try:
            await net.caller(A)(B, CODEC, ConsoleRequest("ls"), 1.0)
            got += "."
        except RpcError as e:
            assert str(e) == "10.0.0.2:8002 did not answer within 1 s"
            got += "x"
    return got, net


async def test_drops_are_reproducible_with_a_seed(nursery, autojump_clock):
    first, net = await outcomes(nursery, seed=7)
    second, _ = await outcomes(nursery, seed=7)
    other, _ = await outcomes(nursery, seed=8)
    assert first == second
    assert first != other
    # A call fails when its request or its reply is lost: 1 - 0.7^2 = 51 % of them.
    assert 0.4 < first.count("x") / len(first) < 0.62
    # Each failed call lost exactly one message (a lost request has no reply to lose).
    assert net.dropped == net.failed == first.count("x")
    assert net.delivered == first.count(".")
    # Some failed calls lost their reply: their handler ran all the same.
    assert net.delivered < net.served[B] < net.delivered + net.failed


async def test_counters_add_up(nursery, autojump_clock):
    net, _ = network(nursery, B, C)
    net.crash(C)
    await net.call(B, CODEC, ConsoleRequest("ok"))
    for target, timeout in ((C, 1.0), (B, 0.5)):
        with pytest.raises(RpcError):
            await net.call(target, CODEC, ConsoleRequest("slow", ("1",)), timeout)
    assert net.delivered == 1
    assert net.failed == 2
    assert net.failures == {"refused": 1, "timeout": 1}
    assert net.served == {B: 2}


def test_drop_must_be_a_probability():
    with pytest.raises(ValueError, match="drop must be in"):
        MemoryRpc(None, drop=1.0)  # type: ignore[arg-type]
