"""Replayed membership datagrams (virtual time, in-memory network): a captured datagram
sent again, to its own receiver or to any other member, soon or late, is refused by the
datagram codec's freshness checks (net.codec.DatagramCodec) and changes nothing: it
neither brings back a member that left or failed nor removes a live one.

Every datagram the members sent is recorded (SimCluster(trace=True)) and then replayed
from an outside address, as someone who captured the cluster's traffic would."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import trio

from config.topology import MembershipConfig
from membership.checks import datagram_problem
from membership.service import DATAGRAM_TYPES
from net.codec import BOOT_SLACK, DATAGRAM_WINDOW, DatagramCodec
from net.messages import Gossip, Merge, Ping, PingReq, Status, Update, UpdateKind
from tests.helpers.memcluster import SECRET, SimCluster

CFG = MembershipConfig()
DETECTION_BOUND = CFG.ping_duration + CFG.ping_timeout + CFG.cleanup_time
FRESHNESS = {"replayed", "misaddressed", "stale", "too_old", "before_boot"}


@pytest.fixture(autouse=True)
def _quiet_membership_logs(caplog):
    caplog.set_level(logging.ERROR, logger="membership")


def rejected(cluster: SimCluster) -> Counter[str]:
    total: Counter[str] = Counter()
    for m in cluster.live():
        total.update(m.service.codec.rejected)
    return total


def captured(cluster: SimCluster, since: float = 0.0) -> list[bytes]:
    """Every datagram any member (crashed ones too) sent since ``since``."""
    return [data for m in cluster.history for t, _, data in m.sent if t >= since]


def kinds(datagrams: list[bytes]) -> Counter[str]:
    """What the captured datagrams carry: message types and update kinds."""
    reader = DatagramCodec(SECRET, CFG.max_datagram, window=float("inf"), clock=lambda: 0.0)
    seen: Counter[str] = Counter()
    for data in datagrams:
        msg = reader.open(data)
        assert isinstance(msg, DATAGRAM_TYPES)
        seen[type(msg).__name__] += 1
        for u in getattr(msg, "updates", ()):
            seen[UpdateKind(u.kind).name] += 1
    return seen


async def replay_everywhere(cluster: SimCluster, datagrams: list[bytes]) -> int:
    """Send each datagram to every live member from an outside address; how many."""
    rogue = cluster.network.endpoint(("10.6.6.6", 666))
    sent = 0
    for data in datagrams:
        for m in cluster.live():
            await rogue.send(data, m.node.address)
            sent += 1
    await trio.sleep(0.5)
    rogue.close()
    return sent


async def test_replayed_departures_and_joins_bring_back_no_one(nursery, autojump_clock):
    cluster = SimCluster(nursery, 5, seed=21, trace=True)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    await trio.sleep(5)
    leaver = cluster.members["H5"]
    await leaver.service.leave()
    await trio.sleep(1)
    cluster.crash("H5")  # gone for good
    others = {"H1", "H2", "H3", "H4"}
    assert cluster.converged(others)
    everything = captured(cluster)
    seen = kinds(everything)
    # The joins (ALIVE at incarnation 0), the departure, pings, acks and gossip.
    assert {"Ping", "Ack", "Gossip", "ALIVE", "LEFT"} <= set(seen), seen

    before = rejected(cluster)
    # At once: the recent ones are within the time window, the old ones are not.
    sent = await replay_everywhere(cluster, everything)
    await trio.sleep(DATAGRAM_WINDOW + 1)
    sent += await replay_everywhere(cluster, everything)  # late: all of them stale
    refused = rejected(cluster) - before
    assert sum(refused.values()) == sent, refused
    assert set(refused) <= FRESHNESS and refused["replayed"] and refused["stale"]
    await trio.sleep(10)
    assert cluster.converged(others)
    assert all(m.core.members["H5"].status == Status.LEFT for m in cluster.live())
    assert cluster.events("rejoined", "H5") == [] and cluster.events("failed") == []


async def test_replayed_suspicions_failures_and_merges_remove_no_one(nursery, autojump_clock):
    cluster = SimCluster(nursery, 5, seed=22, trace=True)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    await trio.sleep(3)
    t_crash = trio.current_time()
    cluster.crash("H4")
    await trio.sleep(DETECTION_BOUND + 2 * CFG.reconnect_interval + 1)
    assert all(m.core.members["H4"].status == Status.FAILED for m in cluster.live())
    t_restart = trio.current_time()
    await cluster.restart("H4", snapshot_from="H2")  # a new process: a new boot id
    await trio.sleep(2)
    everyone = {f"H{i}" for i in range(1, 6)}
    assert cluster.converged(everyone)
    t_back = trio.current_time()
    verdicts = captured(cluster, since=t_crash)
    seen = kinds(verdicts)
    assert {"SUSPECT", "FAILED", "Merge", "PingReq"} <= set(seen), seen

    # What the codec lets through, by design: datagrams for the old H4 sent within
    # BOOT_SLACK of its successor's start, which the new process never saw.
    h4 = cluster.node("H4").address
    let_through = sum(
        1
        for m in cluster.history
        for t, addr, _ in m.sent
        if addr == h4 and t_restart - BOOT_SLACK <= t < t_restart
    )
    before = rejected(cluster)
    sent = await replay_everywhere(cluster, verdicts)
    refused = rejected(cluster) - before
    assert sum(refused.values()) == sent - let_through, (refused, let_through)
    assert set(refused) <= FRESHNESS and refused["before_boot"]
    await trio.sleep(10)
    assert cluster.converged(everyone)
    after = [e for t, _, e in cluster.events("suspected", "H4") if t > t_back]
    after += [e for t, _, e in cluster.events("failed", "H4") if t > t_back]
    assert after == []
    assert all(m.core.members["H4"].status == Status.ALIVE for m in cluster.live())


async def test_a_datagram_captured_on_its_way_to_one_member_is_refused_by_another(
    nursery, autojump_clock
):
    """Cross-member replays on one host: the destination port is inside the MAC."""
    cluster = SimCluster(nursery, 3, seed=23, trace=True)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    h1 = cluster.members["H1"]
    pings = [
        (addr, data)
        for _, addr, data in h1.sent
        if isinstance(kinds_one(data), (Ping, PingReq, Gossip, Merge))
    ]
    assert pings
    addr, data = pings[-1]
    other = next(m for m in cluster.live() if m.node.address not in (addr, h1.node.address))
    before = other.service.codec.rejected["misaddressed"]
    rogue = cluster.network.endpoint(("10.6.6.7", 667))
    await rogue.send(data, other.node.address)
    await trio.sleep(0.1)
    assert other.service.codec.rejected["misaddressed"] == before + 1


def kinds_one(data: bytes) -> object:
    return DatagramCodec(SECRET, CFG.max_datagram, window=float("inf"), clock=lambda: 0.0).open(
        data
    )


@pytest.mark.parametrize(
    "host",
    ["bad\x86host", "a b", "", "x" * 254, "h\x00"],
    ids=["idna", "space", "empty", "long", "nul"],
)
def test_news_of_a_member_at_a_host_that_is_no_host_is_dropped(host: str) -> None:
    # Found by the fuzzer: sealed ALIVE news of a member at "\x86..." was taken in, and
    # the leader's capacity request to it raised UnicodeError out of the resolver.
    bogus = Update(int(UpdateKind.ALIVE), "H9", 0, host, 8000)
    problem = datagram_problem(Gossip("H2", (bogus,)))
    if host:
        assert problem is not None and "not a host" in problem
    else:
        assert problem is None  # "" is how SUSPECT, FAILED and LEFT news carry no address
    assert datagram_problem(PingReq(1, "H2", "H9", host, 8000)) is not None
    ok = Update(int(UpdateKind.ALIVE), "H9", 0, "10.0.0.9", 8000)
    assert datagram_problem(Gossip("H2", (ok,))) is None
    assert datagram_problem(PingReq(1, "H2", "H9", "fe80::1%eth0", 8000)) is None


def test_a_merge_naming_a_member_at_an_impossible_port_is_dropped() -> None:
    # Found by the fuzzer (seed 3429214719): a sealed Merge listed a member at port
    # 2**70; it was taken in, and the leader's capacity request to it raised
    # OverflowError out of getaddrinfo, ending the node.
    bogus = Update(int(UpdateKind.ALIVE), "H9", 0, "127.0.0.1", 2**70)
    problem = datagram_problem(Merge("H2", True, (bogus,)))
    assert problem is not None and "port" in problem
    bad_host = Update(int(UpdateKind.ALIVE), "H9", 0, "a b", 8000)
    assert datagram_problem(Merge("H2", False, (bad_host,))) is not None
    ok = Update(int(UpdateKind.ALIVE), "H9", 0, "127.0.0.1", 8000)
    assert datagram_problem(Merge("H2", True, (ok,))) is None
