"""Network faults on virtual time: refused sends, a host's link down and up, a 5|4 split.

Every test runs the real trio shell of every member on the in-memory network under
trio's MockClock (pytest-trio's ``autojump_clock``), so the times asserted are the
protocol's own: detection from ping_duration + ping_timeout + cleanup_time, merging
from reconnect_interval.  The network delivers at once (no delay), so a merge starts
exactly at the first reconnect timer after the heal and completes within a few
gossip intervals of it (the spread of the news through each side).
"""

from __future__ import annotations

import errno
import itertools
import logging

import pytest
import trio

from config.topology import MembershipConfig, Node
from membership.core import MembershipCore, Send
from net.codec import DatagramCodec
from net.messages import Gossip, MemberRecord, Merge, Status, Update, UpdateKind
from net.transport import DatagramTransport
from tests.helpers.memcluster import SimCluster, SimMember

CFG = MembershipConfig()
DETECTION_BOUND = CFG.ping_duration + CFG.ping_timeout + CFG.cleanup_time
# After the first Merge across, the news spreads through each side: pushed at once
# to gossip_fanout random members, again every gossip_interval, and on every ping.
# Within one protocol period every member has it (0.0-0.71 s measured over 16 hash
# seeds, the set iteration order being the only thing that varies between runs).
SPREAD = CFG.ping_duration
A_SIDE = ["H1", "H2", "H3", "H4", "H5"]
B_SIDE = ["H6", "H7", "H8", "H9"]


async def converged_cluster(nursery, n: int, **kw) -> SimCluster:
    cluster = SimCluster(nursery, n, **kw)
    await cluster.start_all()
    await cluster.wait_until(cluster.converged, timeout=60)
    return cluster


def addr(cluster: SimCluster, name: str) -> tuple[str, int]:
    return cluster.node(name).address


def leaders(cluster: SimCluster, names: list[str] | None = None) -> set[str | None]:
    names = names if names is not None else list(cluster.members)
    return {cluster.members[n].core.leader() for n in names}


def last_change(member: SimMember, since: float) -> float:
    """When ``member`` last saw a member join or come back, after ``since``."""
    times = [t for t, e in member.events if t >= since and e.kind in ("joined", "rejoined")]
    return max(times, default=since)


def merged_at(cluster: SimCluster, since: float) -> float:
    """The virtual time at which the last member completed its view."""
    return max(last_change(m, since) for m in cluster.live())


def all_alive(cluster: SimCluster) -> bool:
    """Every running member lists every running member, as alive (not suspect)."""
    everyone = set(cluster.members)
    return all(
        {x.name for x in m.core.live_members() if x.status == Status.ALIVE} == everyone
        for m in cluster.live()
    )


class Refusing:
    """A transport whose every send raises, as a raw socket would."""

    def __init__(self, inner: DatagramTransport) -> None:
        self.inner = inner
        self.calls = 0

    @property
    def local_address(self) -> tuple[str, int]:
        return self.inner.local_address

    async def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.calls += 1
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        return await self.inner.receive()

    def close(self) -> None:
        self.inner.close()


# --- refused sends ------------------------------------------------------------------------


async def test_routes_withdrawn_to_two_hosts_end_no_member_and_they_come_back(
    nursery, autojump_clock, caplog
):
    """Finding 1: EINVAL on every send to H4 and H5 (a blackhole route to them)."""
    caplog.set_level(logging.WARNING)
    cluster = await converged_cluster(nursery, 5, seed=11)
    await trio.sleep(3.3)
    cut = {"H4", "H5"}
    t_cut = trio.current_time()
    for name in cluster.members:
        cluster.network.fail_sends(
            addr(cluster, name), errno.EINVAL, [addr(cluster, v) for v in cut - {name}]
        )
    await trio.sleep(DETECTION_BOUND + 2)
    # Every task still runs (a crashed task would have ended the test's nursery), the
    # three that reach each other removed the two they cannot reach, in time.
    for name in ("H1", "H2", "H3"):
        member = cluster.members[name]
        assert member.view() == {"H1", "H2", "H3"}
        for v in cut:
            (t_failed, _), *_ = member.events_of("failed", v)
            assert t_failed <= t_cut + DETECTION_BOUND + 0.5
        endpoint = cluster.network._endpoints[addr(cluster, name)]
        assert endpoint.send_errors.counts["EINVAL"] > 0
        assert member.service.send_errors.total == 0  # the transport took them all
    # The cause is logged once per endpoint, not once per send.
    einval = [r for r in caplog.records if "EINVAL" in r.getMessage()]
    assert len(einval) == len(cluster.members)
    assert "Invalid argument" in einval[0].getMessage()

    # The routes come back: H4 and H5 return by themselves, nobody types join.
    t_back = trio.current_time()
    cluster.network.restore_sends()
    first = min(m.core.next_reconnect() for m in cluster.live())
    await cluster.wait_until(lambda: all_alive(cluster), timeout=2 * CFG.reconnect_interval)
    t_merged = merged_at(cluster, t_back)
    assert first <= t_back + CFG.reconnect_interval
    assert first <= t_merged <= first + SPREAD
    assert leaders(cluster) == {"H1"}
    print(
        f"H4, H5 back {t_merged - t_back:.3f} virtual s after the routes returned "
        f"({t_merged - first:.3f} s after the first Merge)"
    )


async def test_a_transport_that_raises_on_send_does_not_stop_the_service(nursery, autojump_clock):
    """The shell's backstop: even a transport that raises cannot end the member."""
    cluster = await converged_cluster(nursery, 3, seed=12)
    victim = cluster.members["H2"]
    inner = victim.transport.inner
    refusing = Refusing(inner)
    victim.transport.inner = refusing
    await trio.sleep(DETECTION_BOUND + 2)
    assert refusing.calls > 0
    assert victim.service.send_errors.counts["ENETUNREACH"] == refusing.calls
    assert victim.service.errors == {}
    # H2 can still hear, but cannot answer: the others remove it, it keeps running.
    assert cluster.members["H1"].view() == {"H1", "H3"}
    victim.transport.inner = inner
    await cluster.wait_until(lambda: all_alive(cluster), timeout=2 * CFG.reconnect_interval)


async def test_own_link_down_then_up_rejoins_by_itself(nursery, autojump_clock):
    """Finding 1: H3's link goes down (ENETUNREACH, nothing arrives), then comes back."""
    cluster = await converged_cluster(nursery, 5, seed=13)
    await trio.sleep(2.71)
    h3 = addr(cluster, "H3")
    t_down = trio.current_time()
    cluster.network.fail_sends(h3, errno.ENETUNREACH)
    cluster.network.partition([h3], [addr(cluster, n) for n in cluster.members if n != "H3"])
    await trio.sleep(20)
    others = {"H1", "H2", "H4", "H5"}
    for name in others:
        assert cluster.members[name].view() == others
        (t_failed, _), *_ = cluster.members[name].events_of("failed", "H3")
        assert t_failed <= t_down + DETECTION_BOUND + 0.5
    # Alone, H3 has removed everyone else and leads itself, still running.
    h3_member = cluster.members["H3"]
    assert h3_member.view() == {"H3"} and h3_member.core.leader() == "H3"
    assert h3_member.core.lost() == ["H1", "H2", "H4", "H5"]
    assert cluster.network._endpoints[h3].send_errors.counts["ENETUNREACH"] > 0
    before = h3_member.core.incarnation

    t_up = trio.current_time()
    cluster.network.restore_sends(h3)
    cluster.network.heal()
    first = min(m.core.next_reconnect() for m in cluster.live())
    await cluster.wait_until(lambda: all_alive(cluster), timeout=2 * CFG.reconnect_interval)
    t_merged = merged_at(cluster, t_up)
    assert first <= t_up + CFG.reconnect_interval
    assert first <= t_merged <= first + SPREAD
    # H3 came back by refuting the verdict, at a higher incarnation, everywhere.
    assert h3_member.core.incarnation > before
    assert h3_member.core.stats.declared_failed_self >= 1
    for name in others:
        assert cluster.members[name].core.members["H3"].incarnation == h3_member.core.incarnation
        assert cluster.members[name].events_of("rejoined", "H3")
    assert leaders(cluster) == {"H1"}
    assert all(m.core.lost() == [] for m in cluster.live())
    print(
        f"H3 rejoined {t_merged - t_up:.3f} virtual s after its link came back "
        f"({t_merged - first:.3f} s after the first Merge)"
    )


# --- a partition that heals ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("split_for", "tombstones"),
    [(30.0, True), (CFG.tombstone_time + 30.0, False)],
    ids=["tombstones-kept", "tombstones-collected"],
)
async def test_a_5_4_partition_heals_into_one_membership_and_one_leader(
    nursery, autojump_clock, split_for, tombstones
):
    """Finding 2: each side removes the other, and after the heal they merge by themselves."""
    cluster = await converged_cluster(nursery, 9, seed=14, trace=True)
    await trio.sleep(4.44)
    t_split = trio.current_time()
    cluster.network.partition(
        [addr(cluster, n) for n in A_SIDE], [addr(cluster, n) for n in B_SIDE]
    )
    await trio.sleep(split_for)
    for side, leader in ((A_SIDE, "H1"), (B_SIDE, "H6")):
        for name in side:
            member = cluster.members[name]
            assert member.view() == set(side), name
            assert member.core.leader() == leader
            far = B_SIDE if side is A_SIDE else A_SIDE
            assert member.core.lost() == far
            # Tombstones go after tombstone_time; the reconnect list stays.
            assert (far[0] in member.core.members) == tombstones
    # Nobody on side A monitors H9 (its predecessors H6..H8 are on side B) until H6
    # is removed and the duty moves on: the last removal takes two detections.
    removals = [t for t, _, e in cluster.events("failed") if t >= t_split]
    assert max(removals) <= t_split + 2 * DETECTION_BOUND + 0.5
    incarnations = {n: m.core.incarnation for n, m in cluster.members.items()}

    t_heal = trio.current_time()
    cluster.network.heal()
    # The first member whose reconnect timer fires after the heal sends a Merge
    # across (every reconnect list holds only the other side).
    first = min(m.core.next_reconnect() for m in cluster.live())
    await cluster.wait_until(lambda: all_alive(cluster), timeout=3 * CFG.reconnect_interval)
    t_merged = merged_at(cluster, t_heal)
    merges = cluster.sent(Merge, since=t_heal)
    assert merges[0].time == first
    assert t_heal < first <= t_heal + CFG.reconnect_interval
    assert first <= t_merged <= first + SPREAD
    assert leaders(cluster) == {"H1"}
    assert all(m.core.lost() == [] for m in cluster.live())
    # No one was removed on the way back.  Where the other side still held a verdict
    # (a tombstone), every member refuted it: it is known everywhere at a higher
    # incarnation than before.  Without tombstones, the sides simply join anew.
    assert [e for t, _, e in cluster.events("failed") if t >= t_heal] == []
    for name, member in cluster.members.items():
        assert (member.core.incarnation > incarnations[name]) == tombstones, name
        for other in cluster.live():
            assert other.core.members[name].incarnation == member.core.incarnation
    # Every membership datagram stayed within max_datagram (the codec refuses more).
    assert all(m.service.errors == {} for m in cluster.live())
    print(
        f"merged {t_merged - t_heal:.3f} virtual s after the heal "
        f"(first Merge at +{first - t_heal:.3f} s, merged {t_merged - first:.3f} s later); "
        f"{len(merges)} Merges sent"
    )


async def test_a_crashed_member_is_probed_once_per_interval_until_the_timeout(
    nursery, autojump_clock
):
    """The cost of the reconnect list: one Merge per member per reconnect_interval."""
    cfg = MembershipConfig(reconnect_timeout=60.0)
    cluster = await converged_cluster(nursery, 4, seed=15, trace=True, config=cfg)
    cluster.crash("H4")
    await trio.sleep(DETECTION_BOUND + 1)
    t0 = trio.current_time()
    await trio.sleep(50)
    merges = cluster.sent(Merge, since=t0)
    assert all(s.dst == "H4" for s in merges)
    for name in ("H1", "H2", "H3"):
        times = [s.time for s in merges if s.src == name]
        assert len(times) == 10
        gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
        assert gaps == {cfg.reconnect_interval}
    await trio.sleep(20)  # past reconnect_timeout after the removal: given up
    assert all(m.core.lost() == [] for m in cluster.live())
    assert cluster.sent(Merge, since=trio.current_time() - 5) == []


def test_a_merge_fits_one_datagram_with_many_members():
    nodes = [Node(f"member-{i:03d}", "192.168.100.200", 40000 + i) for i in range(200)]
    core = MembershipCore(nodes[0], CFG, {n.name: i for i, n in enumerate(nodes)})
    core.start(0.0, [MemberRecord(n.name, n.host, n.port, 7, 0) for n in nodes])
    records = core._merge_records()
    assert records[0].name == "member-000"
    sealed = DatagramCodec(b"k", CFG.max_datagram).seal(Merge("member-000", True, records))
    assert len(sealed) <= CFG.max_datagram
    assert 10 < len(records) < 200


def test_a_verdict_goes_to_the_listed_member_and_its_refutation_to_the_accuser():
    a, b = Node("H1", "10.0.0.1", 1), Node("H2", "10.0.0.2", 2)
    ring = {"H1": 0, "H2": 1}
    ca, cb = MembershipCore(a, CFG, ring), MembershipCore(b, CFG, ring)
    ca.start(0.0, [MemberRecord("H2", b.host, b.port, 0, int(Status.FAILED))])
    cb.start(0.0, [MemberRecord("H1", a.host, a.port, 0, int(Status.ALIVE))])
    assert ca.members["H2"].status == Status.FAILED
    # H2 sends H1 its view; H1 holds H2 as failed at 0: it tells H2 so.
    actions = ca.on_message(Merge("H2", True, cb._merge_records()), b.address, 1.0)
    sends = [x for x in actions if isinstance(x, Send)]
    verdict = next(s for s in sends if isinstance(s.message, Gossip))
    assert verdict.addr == b.address
    assert verdict.message.updates[0] == Update(int(UpdateKind.FAILED), "H2", 0, by="H1")
    assert any(isinstance(s.message, Merge) and not s.message.reply for s in sends)
    # H2 refutes, and sends the refutation to H1 although H1 sent only a verdict.
    back = cb.on_message(verdict.message, a.address, 1.0)
    refutation = [x for x in back if isinstance(x, Send) and x.addr == a.address]
    assert refutation and refutation[0].message.updates[0].incarnation == 1
    ca.on_message(refutation[0].message, b.address, 1.0)
    h2 = ca.members["H2"]
    assert (h2.status, h2.incarnation) == (Status.ALIVE, 1)
    assert ca.lost() == []
