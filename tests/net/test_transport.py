"""Datagram transports: the metered wrapper, the in-memory network, real UDP, RateWindow."""

from __future__ import annotations

import math
import random

import pytest
import trio

from net.memory import MemoryNetwork
from net.transport import MeteredTransport, RateWindow, UdpTransport

A = ("10.0.0.1", 1)
B = ("10.0.0.2", 2)


async def drain(transport, limit: int = 100_000) -> list[bytes]:
    """Everything already waiting in the transport's inbox."""
    got: list[bytes] = []
    while len(got) < limit:
        with trio.move_on_after(0.001) as scope:
            data, _ = await transport.receive()
            got.append(data)
        if scope.cancelled_caught:
            break
    return got


# --- RateWindow ---------------------------------------------------------------------------


def test_rate_window_steady_stream():
    w = RateWindow(window=10.0)
    t = 0.0
    while t < 30.0:
        w.add(t, 100)  # 100 bytes every 0.1 s: 1000 B/s
        t = round(t + 0.1, 10)
    assert w.rate(30.0, since=0.0) == pytest.approx(1000, rel=0.1)
    assert w.total == 300 * 100


def test_rate_window_young_window_divides_by_its_age():
    w = RateWindow(window=10.0)
    w.add(0.5, 500)
    w.add(1.5, 500)
    assert w.rate(2.0, since=0.0) == pytest.approx(500)


def test_rate_window_forgets_old_traffic():
    w = RateWindow(window=10.0)
    for s in range(10):
        w.add(float(s), 1000)
    assert w.rate(10.0, since=0.0) == pytest.approx(1000)
    assert w.rate(25.0, since=0.0) == 0.0
    assert w.total == 10_000  # the total is not windowed


def test_rate_window_buckets_by_second():
    w = RateWindow(window=3.0)
    w.add(5.1, 10)
    w.add(5.9, 20)
    w.add(6.0, 40)
    assert [v for _, v in w._buckets] == [30, 40]
    assert w.rate(6.5, since=0.0) == pytest.approx(70 / 3)


# --- MeteredTransport ---------------------------------------------------------------------


async def test_metered_transport_counts_bytes_both_ways(autojump_clock):
    net = MemoryNetwork()
    a = MeteredTransport(net.endpoint(A))
    b = MeteredTransport(net.endpoint(B))
    for i in range(10):
        await a.send(b"x" * (i + 1), B)
    got = await drain(b)
    assert len(got) == 10
    assert a.sent.total == sum(range(1, 11)) == b.received.total
    assert a.received.total == 0 and b.sent.total == 0
    assert a.local_address == A
    await trio.sleep(1.0)
    sent_rate, received_rate = a.rates()
    assert sent_rate == pytest.approx(55 / 1.0, rel=0.01)
    assert received_rate == 0.0


@pytest.mark.parametrize("drop_rate", [0.03, 0.1, 0.3])
async def test_metered_transport_drops_at_the_configured_rate_each_way(drop_rate, autojump_clock):
    n = 20_000
    net = MemoryNetwork()
    a = MeteredTransport(net.endpoint(A), drop_rate, random.Random(1))
    b = MeteredTransport(net.endpoint(B), drop_rate, random.Random(2))
    got = 0
    for _ in range(n // 500):  # batches: the inbox holds 1024 datagrams
        for _ in range(500):
            await a.send(b"ping", B)
        got += len(await drain(b))

    # Binomial bounds at about 5 sigma: flaky only with astronomically bad luck.
    def close(observed: int, trials: int, p: float) -> bool:
        return abs(observed - trials * p) <= 5 * math.sqrt(trials * p * (1 - p)) + 1

    assert close(a.dropped_out, n, drop_rate)
    sent = n - a.dropped_out
    assert a.sent.total == sent * 4
    assert close(b.dropped_in, sent, drop_rate)
    assert got == sent - b.dropped_in
    assert b.received.total == got * 4
    # Both directions drop: what arrives is (1 - p)^2.
    assert close(got, n, (1 - drop_rate) ** 2)


async def test_metered_transport_without_drop_rate_drops_nothing(autojump_clock):
    net = MemoryNetwork()
    a = MeteredTransport(net.endpoint(A))
    b = MeteredTransport(net.endpoint(B))
    for _ in range(1000):
        await a.send(b"x", B)
    assert len(await drain(b)) == 1000
    assert a.dropped_out == b.dropped_in == 0


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
async def test_metered_transport_refuses_impossible_rates(bad):
    net = MemoryNetwork()
    with pytest.raises(ValueError, match="drop rate"):
        MeteredTransport(net.endpoint(A), bad)


# --- MemoryNetwork ------------------------------------------------------------------------


async def test_memory_network_delivers_with_sender_address(autojump_clock):
    net = MemoryNetwork()
    a, b = net.endpoint(A), net.endpoint(B)
    await a.send(b"hello", B)
    assert await b.receive() == (b"hello", A)
    assert (net.delivered, net.lost) == (1, 0)


async def test_memory_network_delay_is_exact(autojump_clock):
    net = MemoryNetwork(delay=0.25)
    a, b = net.endpoint(A), net.endpoint(B)
    start = trio.current_time()
    await a.send(b"later", B)
    assert await b.receive() == (b"later", A)
    assert trio.current_time() - start == pytest.approx(0.25)


async def test_memory_network_loss_rate(autojump_clock):
    net = MemoryNetwork(loss=0.2, seed=3)
    a, b = net.endpoint(A), net.endpoint(B)
    for _ in range(5):
        for _ in range(1000):
            await a.send(b"x", B)
        await drain(b)
    assert net.delivered + net.lost == 5000
    assert net.lost == pytest.approx(1000, abs=5 * math.sqrt(5000 * 0.2 * 0.8))


async def test_memory_network_block_cuts_both_directions(autojump_clock):
    net = MemoryNetwork()
    a, b = net.endpoint(A), net.endpoint(B)
    net.block(B)
    await a.send(b"to b", B)
    await b.send(b"from b", A)
    assert await drain(a) == [] and await drain(b) == []
    net.unblock(B)
    await a.send(b"to b", B)
    assert await drain(b) == [b"to b"]


async def test_memory_network_partition_cuts_between_groups_until_heal(autojump_clock):
    c_addr = ("10.0.0.3", 3)
    outside = ("10.0.0.9", 9)
    net = MemoryNetwork(delay=1.0)
    a, b, c, out = (net.endpoint(x) for x in (A, B, c_addr, outside))
    await a.send(b"in flight", B)  # arrives after the cut: lost
    net.partition([A], [B, c_addr])
    await a.send(b"across", B)
    await b.send(b"same side", c_addr)
    await out.send(b"from outside", A)  # an address in no group is untouched
    await trio.sleep(1.0)
    assert await drain(b) == []
    assert await drain(c) == [b"same side"]
    assert await drain(a) == [b"from outside"]
    net.heal()
    await a.send(b"healed", B)
    await trio.sleep(1.0)
    assert await drain(b) == [b"healed"]
    with pytest.raises(ValueError, match="in two groups"):
        net.partition([A], [A, B])


async def test_memory_network_full_inbox_drops_like_udp(autojump_clock):
    net = MemoryNetwork()
    a, b = net.endpoint(A), net.endpoint(B)
    for _ in range(1500):
        await a.send(b"x", B)
    assert len(await drain(b)) == 1024
    assert net.lost == 1500 - 1024


async def test_memory_network_addresses_and_close(autojump_clock):
    net = MemoryNetwork()
    a = net.endpoint(A)
    with pytest.raises(OSError, match="in use"):
        net.endpoint(A)
    a.close()
    await a.send(b"x", B)  # sending on a closed endpoint is a silent no-op
    again = net.endpoint(A)  # a closed address can be bound again (a restart)
    b = net.endpoint(B)
    await b.send(b"x", A)
    assert await drain(again) == [b"x"]
    # Receiving on a closed endpoint blocks forever rather than raising.
    with trio.move_on_after(5) as scope:
        await a.receive()
    assert scope.cancelled_caught


async def test_sending_to_nobody_is_lost_silently(autojump_clock):
    net = MemoryNetwork()
    a = net.endpoint(A)
    await a.send(b"x", ("10.9.9.9", 9))
    assert net.lost == 1


# --- UdpTransport (real loopback sockets, real time, milliseconds) ------------------------


async def test_udp_transport_round_trip_on_loopback():
    a = await UdpTransport.bind("127.0.0.1", 0)
    b = await UdpTransport.bind("127.0.0.1", 0)
    try:
        assert a.local_address[0] == "127.0.0.1" and a.local_address[1] > 0
        with trio.fail_after(5):
            await a.send(b"over udp", b.local_address)
            assert await b.receive() == (b"over udp", a.local_address)
    finally:
        a.close()
        b.close()


async def test_udp_send_to_a_closed_port_does_not_raise():
    a = await UdpTransport.bind("127.0.0.1", 0)
    gone = await UdpTransport.bind("127.0.0.1", 0)
    dead = gone.local_address
    gone.close()
    b = await UdpTransport.bind("127.0.0.1", 0)
    try:
        with trio.fail_after(5):
            for _ in range(3):
                await a.send(b"anyone?", dead)
                await trio.sleep(0.01)
            # The ICMP errors those sends provoke must not break the receive loop.
            await b.send(b"still here", a.local_address)
            assert await a.receive() == (b"still here", b.local_address)
    finally:
        a.close()
        b.close()


async def test_udp_bind_conflict_raises_and_leaks_nothing():
    a = await UdpTransport.bind("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            await UdpTransport.bind("127.0.0.1", a.local_address[1])
    finally:
        a.close()


async def test_udp_send_the_stack_refuses_is_counted_not_raised(caplog):
    # Port 0 is refused by the local stack with EINVAL, as a blackhole route is.
    a = await UdpTransport.bind("127.0.0.1", 0)
    b = await UdpTransport.bind("127.0.0.1", 0)
    try:
        with trio.fail_after(5):
            for _ in range(3):
                await a.send(b"nowhere", ("127.0.0.1", 0))
            await a.send(b"still sending", b.local_address)
            assert await b.receive() == (b"still sending", a.local_address)
        assert a.send_errors.counts == {"EINVAL": 3}
        logged = [r.getMessage() for r in caplog.records if "EINVAL" in r.getMessage()]
        assert len(logged) == 1 and "127.0.0.1:0" in logged[0]
    finally:
        a.close()
        b.close()


# --- refused sends on the in-memory network -----------------------------------------------


async def test_memory_fail_sends_refuses_only_the_named_links_until_restored():
    import errno

    net = MemoryNetwork()
    c_addr = ("10.0.0.3", 3)
    a, b, c = net.endpoint(A), net.endpoint(B), net.endpoint(c_addr)
    net.fail_sends(A, errno.EINVAL, [B])
    await a.send(b"to b", B)  # refused: counted, not raised, not delivered
    await a.send(b"to c", c_addr)
    assert await drain(c) == [b"to c"]
    assert await drain(b) == []
    assert a.send_errors.counts == {"EINVAL": 1}
    net.fail_sends(A, errno.ENETUNREACH)  # every destination now (our link is down)
    await a.send(b"to c", c_addr)
    assert a.send_errors.counts == {"EINVAL": 1, "ENETUNREACH": 1}
    net.restore_sends(A)
    await a.send(b"back", B)
    assert await drain(b) == [b"back"]
    assert b.send_errors.total == 0
