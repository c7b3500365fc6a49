"""The trio shell (MembershipService) running many members on the in-memory network.

Every test runs on trio's MockClock with autojump (pytest-trio's ``autojump_clock``):
minutes of protocol take a fraction of a second, and every event carries the exact
virtual time at which it happened.
"""

from __future__ import annotations

import logging

import pytest
import trio

from config.topology import MembershipConfig
from membership.core import Send
from net.codec import Codec, DatagramCodec
from net.messages import (
    Ack,
    ConsoleRequest,
    ErrorReply,
    Gossip,
    Ping,
    PingReq,
    Status,
    Update,
    UpdateKind,
)
from tests.helpers.memcluster import SECRET, SimCluster

CFG = MembershipConfig()
DETECTION_BOUND = CFG.ping_duration + CFG.ping_timeout + CFG.cleanup_time


@pytest.fixture(autouse=True)
def _quiet_membership_logs(caplog):
    # Suspicions and failures are logged at WARNING; keep test output readable.
    caplog.set_level(logging.ERROR, logger="membership")


async def converged_cluster(nursery, n: int, **kw) -> SimCluster:
    cluster = SimCluster(nursery, n, **kw)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    return cluster


def removed_by(cluster: SimCluster, victim: str) -> dict[str, float]:
    """Who declared ``victim`` failed, and when (first time each)."""
    found: dict[str, float] = {}
    for t, who, _ in cluster.events("failed", victim):
        found.setdefault(who, t)
    return found


def false_alarms(cluster: SimCluster, crashed: set[str]) -> list[tuple[float, str, str]]:
    return [(t, who, e.name) for t, who, e in cluster.events("failed") if e.name not in crashed]


# --- detection on a zero-delay network: exact times ---------------------------------------


async def test_crash_is_suspected_and_removed_at_exact_times(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 10, trace=True)
    await trio.sleep(10.37)
    t_crash = trio.current_time()
    cluster.crash("H5")
    await trio.sleep(15)

    # The first ping after the crash is a probe (relays only follow one); its sender
    # suspects H5 exactly ping_timeout later, and tells everyone.
    probe = cluster.sent(Ping, dst="H5", since=t_crash)[0]
    suspicions = cluster.events("suspected", "H5")
    t_suspect = suspicions[0][0]
    assert t_suspect == probe.time + CFG.ping_timeout
    own = [(t, who) for t, who, e in suspicions if e.detail.startswith("no ack from H5")]
    assert own[0] == (t_suspect, probe.src)

    removals = removed_by(cluster, "H5")
    assert set(removals) == {m.node.name for m in cluster.live()}
    heard = {who: t for t, who, _ in reversed(suspicions)}
    assert removals[probe.src] == t_suspect + CFG.cleanup_time
    for who, t in removals.items():
        assert t in (t_suspect + CFG.cleanup_time, heard[who] + CFG.cleanup_time), who
    assert max(removals.values()) <= t_crash + DETECTION_BOUND + 0.5
    assert cluster.converged()
    assert false_alarms(cluster, {"H5"}) == []


async def test_m_simultaneous_failures_including_adjacent_ones(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 10, seed=2)
    await trio.sleep(5.55)
    t_crash = trio.current_time()
    crashed = {"H3", "H4", "H8"}
    for name in crashed:
        cluster.crash(name)
    await trio.sleep(DETECTION_BOUND + 0.5)
    survivors = {m.node.name for m in cluster.live()}
    for victim in crashed:
        removals = removed_by(cluster, victim)
        assert set(removals) == survivors, victim
        assert max(removals.values()) <= t_crash + DETECTION_BOUND + 0.5
    assert cluster.converged(survivors)
    assert cluster.members["H2"].core.monitors() == ["H5", "H6", "H7"]
    assert false_alarms(cluster, crashed) == []


async def test_successive_failures_move_monitoring_and_leadership(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 8, seed=3)
    for victim, leader in (("H1", "H2"), ("H2", "H3"), ("H3", "H4")):
        await trio.sleep(1.3)
        t_crash = trio.current_time()
        cluster.crash(victim)
        await trio.sleep(DETECTION_BOUND + 0.5)
        survivors = {m.node.name for m in cluster.live()}
        removals = removed_by(cluster, victim)
        assert set(removals) == survivors
        assert max(removals.values()) <= t_crash + DETECTION_BOUND + 0.5
        assert {m.core.leader() for m in cluster.live()} == {leader}
    assert cluster.members["H8"].core.monitors() == ["H4", "H5", "H6"]


# --- dissemination ------------------------------------------------------------------------


async def test_forty_members_join_fail_and_everyone_hears(nursery, autojump_clock):
    n = 40
    cluster = SimCluster(nursery, n, seed=4)
    for node in cluster.nodes[: n - 1]:
        # Each joins through H1's view, as the introducer would hand it out.
        await cluster.start(node, None if node.name == "H1" else "H1")
        await trio.sleep(0.01)
    await cluster.wait_until(cluster.converged, timeout=1)
    assert cluster.members["H1"].core.retransmit_limit() == 8  # 4 * ceil(log10(40))

    t_join = trio.current_time()
    await cluster.start(cluster.node(f"H{n}"), "H17")
    await trio.sleep(1.0)
    # The joiner told every member of its view directly: all know within the second.
    joined = {who: t for t, who, _ in cluster.events("joined", f"H{n}") if who != f"H{n}"}
    assert set(joined) == {f"H{i}" for i in range(1, n)}
    assert max(joined.values()) == t_join
    assert cluster.converged()

    await trio.sleep(0.77)
    t_crash = trio.current_time()
    cluster.crash("H23")
    await trio.sleep(DETECTION_BOUND + 0.5)
    removals = removed_by(cluster, "H23")
    assert set(removals) == {m.node.name for m in cluster.live()}
    assert max(removals.values()) <= t_crash + DETECTION_BOUND + 0.5
    assert false_alarms(cluster, {"H23"}) == []


# --- loss ---------------------------------------------------------------------------------


async def test_five_percent_loss_causes_no_false_removal(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 10, loss=0.05, seed=5)
    await trio.sleep(120)
    assert false_alarms(cluster, set()) == []
    assert cluster.converged()
    assert cluster.network.lost > 0.03 * (cluster.network.lost + cluster.network.delivered)


async def test_a_crash_under_loss_is_still_detected(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 10, loss=0.05, seed=6)
    await trio.sleep(30.2)
    t_crash = trio.current_time()
    cluster.crash("H7")
    await trio.sleep(30)
    removals = removed_by(cluster, "H7")
    assert set(removals) == {m.node.name for m in cluster.live()}
    assert max(removals.values()) <= t_crash + DETECTION_BOUND + 3.0
    assert false_alarms(cluster, {"H7"}) == []
    assert cluster.converged()


async def test_delay_shifts_detection_but_nothing_fails_falsely(nursery, autojump_clock):
    # 50 ms each way: well inside the 0.5 s before indirect probes start.
    cluster = await converged_cluster(nursery, 8, delay=0.05, seed=7)
    await trio.sleep(20)
    assert false_alarms(cluster, set()) == []
    cluster.crash("H2")
    await trio.sleep(DETECTION_BOUND + 1.0)
    assert set(removed_by(cluster, "H2")) == {m.node.name for m in cluster.live()}


# --- leave, join, restart -----------------------------------------------------------------


async def test_leave_removes_the_member_everywhere_and_join_brings_it_back(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 6, seed=8)
    leaver = cluster.members["H3"]
    t_leave = trio.current_time()
    await leaver.service.leave()
    await trio.sleep(0.01)  # lets every receiver run; virtual time stands still meanwhile
    others = {"H1", "H2", "H4", "H5", "H6"}
    left = {who: t for t, who, _ in cluster.events("left", "H3")}
    assert set(left) == others | {"H3"}
    assert set(left.values()) == {t_leave}
    await trio.sleep(20)
    for name in others:
        assert cluster.members[name].core.members["H3"].status == Status.LEFT
        assert cluster.members[name].view() == others
    assert cluster.events("failed") == [] and cluster.events("suspected", "H3") == []

    await leaver.service.join(cluster.members["H1"].core.snapshot())
    await trio.sleep(1)
    assert leaver.core.incarnation == 1
    assert {who for _, who, _ in cluster.events("rejoined", "H3")} == others
    assert cluster.converged(others | {"H3"})


async def test_restarted_member_rejoins_with_a_higher_incarnation(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 6, seed=9)
    cluster.crash("H4")
    await trio.sleep(DETECTION_BOUND + 1)
    assert all(m.core.members["H4"].status == Status.FAILED for m in cluster.live())
    reborn = await cluster.restart("H4", snapshot_from="H2")
    assert reborn.core.incarnation == 1
    await trio.sleep(2)
    assert cluster.converged({f"H{i}" for i in range(1, 7)})
    assert {who for _, who, _ in cluster.events("rejoined", "H4")} == {"H1", "H2", "H3", "H5", "H6"}
    assert all(m.core.members["H4"].incarnation == 1 for m in cluster.live())


async def test_wait_changed_wakes_watchers(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 4, seed=10)
    watcher = cluster.members["H1"].service
    woke: list[float] = []

    async def watch() -> None:
        await watcher.wait_changed()
        woke.append(trio.current_time())

    nursery.start_soon(watch)
    await trio.sleep(5)
    assert woke == []  # a quiet cluster changes nothing
    cluster.crash("H3")
    await trio.sleep(DETECTION_BOUND + 1)
    t_suspect = next(t for t, who, _ in cluster.events("suspected", "H3") if who == "H1")
    assert woke == [t_suspect]


# --- what peers send cannot stop the service ----------------------------------------------


async def test_garbage_datagrams_are_dropped_counted_and_the_service_keeps_running(
    nursery, autojump_clock
):
    cluster = await converged_cluster(nursery, 5, seed=11)
    target = cluster.members["H2"]
    rogue = cluster.network.endpoint(("10.6.6.6", 666))
    codec = DatagramCodec(SECRET, CFG.max_datagram, clock=trio.current_time)
    port = target.node.address[1]
    for junk in (
        b"",
        b"\x00" * 10,
        b"\xff" * 1000,
        b"x" * 5000,  # oversize
        Codec(b"not-our-secret", 1400).seal(Ping(1, "H9", 0)),
        codec.seal_body(b"\xc1\xc1\xc1", port),  # authentic, but not msgpack
        codec.seal(ConsoleRequest("ls"), port),  # authentic, but not a datagram message
        codec.seal(ErrorReply("hi"), port),
    ):
        await rogue.send(junk, target.node.address)
    await trio.sleep(0.5)
    assert target.service.codec.rejected == {
        "short": 2,
        "bad_mac": 2,
        "oversize": 1,
        "malformed": 1,
        "unexpected_type": 2,
    }
    # Still serving: an authentic ping is acked...
    await rogue.send(codec.seal(Ping(99, "H9", 0), port), target.node.address)
    with trio.fail_after(1):
        data, src = await rogue.receive()
    ack = codec.open(data, 666)
    assert (
        isinstance(ack, Ack) and (ack.seq, ack.sender) == (99, "H2") and src == target.node.address
    )
    # ...and it still takes part in the protocol.
    await trio.sleep(10)
    assert cluster.converged() and false_alarms(cluster, set()) == []
    assert target.service.errors == {}


async def test_an_error_in_the_core_is_counted_and_the_loops_keep_going(
    nursery, autojump_clock, caplog
):
    cluster = await converged_cluster(nursery, 4, seed=12)
    victim = cluster.members["H1"]
    core = victim.core
    real_on_message, real_tick = core.on_message, core.tick
    broken = {"on_message": 1, "tick": 1}

    def on_message(msg, src, now):
        if broken["on_message"]:
            broken["on_message"] -= 1
            raise RuntimeError("bug in on_message")
        return real_on_message(msg, src, now)

    def tick(now):
        if broken["tick"]:
            broken["tick"] -= 1
            raise RuntimeError("bug in tick")
        return real_tick(now)

    core.on_message = on_message  # type: ignore[method-assign]
    core.tick = tick  # type: ignore[method-assign]
    await trio.sleep(10)
    assert victim.service.errors == {"on_message": 1, "tick": 1}
    assert "error handling" in caplog.text and "error in membership timer" in caplog.text
    assert cluster.converged() and false_alarms(cluster, set()) == []
    cluster.crash("H2")
    await trio.sleep(DETECTION_BOUND + 1)
    assert set(removed_by(cluster, "H2")) == {"H1", "H3", "H4"}


async def test_an_oversize_send_is_refused_and_counted(nursery, autojump_clock, caplog):
    cluster = await converged_cluster(nursery, 3, seed=13)
    member = cluster.members["H1"]
    await member.service._execute([Send(cluster.node("H2").address, ErrorReply("x" * 2000))])
    assert member.service.errors == {"oversize_send": 1}
    assert cluster.members["H2"].service.codec.rejected == {}


async def test_test_mode_drop_rate_counts_and_survives(nursery, autojump_clock):
    # -t on the built-in ten-node cluster: every member drops 3% in and 3% out.
    cluster = SimCluster(nursery, 10, drop_rate=0.03, seed=14)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    await trio.sleep(60)
    assert false_alarms(cluster, set()) == []
    dropped = sum(m.transport.dropped_in + m.transport.dropped_out for m in cluster.live())
    assert dropped > 0
    for m in cluster.live():
        sent_rate, received_rate = m.transport.rates()
        assert sent_rate > 0 and received_rate > 0


# --- numbers out of range in authentic datagrams -------------------------------------


async def test_datagrams_with_numbers_out_of_range_are_dropped_and_counted(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 4, seed=14)
    target = cluster.members["H2"]
    incarnation = target.core.incarnation
    rogue = cluster.network.endpoint(("10.6.6.6", 666))
    codec = DatagramCodec(SECRET, CFG.max_datagram, clock=trio.current_time)
    top = 2**64 - 1  # the largest number msgpack carries
    for msg in (
        # A suspicion of H2 this high would make it refute at 2**64, which no message
        # can carry: every later send of H2 failed, and the first one ended it.
        Ping(1, "H9", 0, (Update(int(UpdateKind.SUSPECT), "H2", top, by="H9"),)),
        Gossip("H9", (Update(int(UpdateKind.ALIVE), "H8", 1, "127.0.0.1", 70000),)),
        Gossip("H9", (Update(int(UpdateKind.ALIVE), "H8", -1, "127.0.0.1", 9),)),
        PingReq(2, "H9", "H3", "127.0.0.1", 99999),
        PingReq(3, "H9", "H3", "", 9),
        Ping(-1, "H9", 0),
        Ack(4, "H9", top),
    ):
        await rogue.send(codec.seal(msg, target.node.address[1]), target.node.address)
    await trio.sleep(0.5)
    assert target.service.codec.rejected == {"out_of_range": 7}
    assert target.core.incarnation == incarnation
    assert "H8" not in target.view()
    await trio.sleep(10)
    assert cluster.converged() and false_alarms(cluster, set()) == []
    assert target.service.errors == {}


async def test_a_send_the_transport_refuses_is_counted_not_raised(nursery, autojump_clock):
    cluster = await converged_cluster(nursery, 3, seed=15)
    member = cluster.members["H1"]
    real_send = member.service.transport.send

    async def refusing(data: bytes, addr) -> None:
        if addr[1] > 65535:
            raise OverflowError("getsockaddrarg: port must be 0-65535.")
        if addr[0] == "no.such.host":
            raise OSError(-2, "Name or service not known")
        await real_send(data, addr)

    member.service.transport.send = refusing  # type: ignore[method-assign]
    await member.service._execute(
        [Send(("127.0.0.1", 70000), Ping(1, "H1", 0)), Send(("no.such.host", 9), Ping(2, "H1", 0))]
    )
    # The stack's refusal is counted by errno; an address no socket takes, as an error.
    assert member.service.errors == {"send_failed": 1}
    assert member.service.send_errors.total == 1
    await trio.sleep(5)
    assert cluster.converged()
