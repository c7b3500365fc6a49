"""Network faults on real processes, each host in its own Linux network namespace.

The faults are real kernel behaviour, not simulations: a withdrawn (blackhole)
route makes every send to that host fail with EINVAL, a host whose own link is down
gets ENETUNREACH, and a split bridge drops everything between two groups.  Before
these fixes, the first two ended nodes ("error: cannot start H1 ...: Invalid
argument") and a healed split stayed split for good.

Needs root and ``ip netns``; without them the tests fail and say so (see
:func:`tests.helpers.netns.require_netns`).  Timings are the LAN defaults.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from config.topology import CLEANUP_TIME, PING_DURATION, PING_TIMEOUT, MembershipConfig
from tests.helpers import nodelogs
from tests.helpers.netns import NetnsCluster, require_netns

pytestmark = [pytest.mark.integration, pytest.mark.background, pytest.mark.timeout(180)]

DETECTION_BOUND = PING_DURATION + PING_TIMEOUT + CLEANUP_TIME + 1.0
RECONNECT = MembershipConfig().reconnect_interval
# The first Merge goes out within one reconnect interval of the heal; then a round
# trip, a refutation and gossip, plus the one-shot consoles' start-up on a busy host.
MERGE_BOUND = RECONNECT + 5.0


@pytest.fixture
def netns_cluster(request: pytest.FixtureRequest) -> Iterator[type[NetnsCluster]]:
    require_netns()
    made: list[NetnsCluster] = []

    class Tracked(NetnsCluster):
        def __init__(self, n: int) -> None:
            super().__init__(n)
            made.append(self)
            self.build()
            self.start()

    try:
        yield Tracked
    finally:
        failed = getattr(request.node, "rep_call", None)
        for c in made:
            if failed is not None and failed.failed:
                for name in ["introducer", *c.names]:
                    print(f"--- {name} log (last lines) ---\n{c.tail(name)}")
            c.close()


def rejoined_at(c: NetnsCluster, names: list[str], after: float) -> float:
    """When the last of ``names`` logged a member joining or coming back after ``after``."""
    times = [
        e.at
        for n in names
        for e in nodelogs.events(c.log_path(n), after)
        if e.at >= after and e.kind in ("joined", "rejoined")
    ]
    return max(times, default=after)


def test_withdrawn_routes_to_two_hosts_end_no_node(netns_cluster: type[NetnsCluster]) -> None:
    c = netns_cluster(5)
    everyone = set(c.names)
    c.wait_views({n: everyone for n in c.names}, 60, "the five to converge")

    c.blackhole(["H4", "H5"])
    cut_at = time.time()
    reach = {"H1", "H2", "H3"}
    c.wait_views({n: reach for n in reach}, DETECTION_BOUND + 10, "H4, H5 to be removed")
    time.sleep(2)
    c.assert_running()  # every node, H4 and H5 included, is still up
    for n in reach:
        for v in ("H4", "H5"):
            at = nodelogs.first(c.log_path(n), "failed", v, cut_at)
            assert at is not None and at - cut_at <= DETECTION_BOUND, (n, v, at)
    for n in c.names:
        log = c.log_path(n).read_text(errors="replace")
        assert "cannot start" not in log
        assert log.count("(EINVAL)") <= 1  # the cause, logged once

    c.unblackhole()
    back = time.time()
    c.wait_views({n: everyone for n in c.names}, MERGE_BOUND + 10, "H4, H5 to come back")
    took = rejoined_at(c, c.names, back) - back
    print(f"routes back: H4 and H5 in every view {took:.2f} s later (bound {MERGE_BOUND:.0f} s)")
    assert took <= MERGE_BOUND
    assert {leader for _, leader in c.views().values()} == {"H1"}
    c.assert_running()


def test_a_host_whose_link_goes_down_and_up_rejoins_by_itself(
    netns_cluster: type[NetnsCluster],
) -> None:
    c = netns_cluster(5)
    everyone = set(c.names)
    c.wait_views({n: everyone for n in c.names}, 60, "the five to converge")
    before = c.console("H3", "list_self")["incarnation"]

    c.link("H3", up=False)
    down = time.time()
    others = everyone - {"H3"}
    c.wait_views(
        {**{n: others for n in others}, "H3": {"H3"}}, DETECTION_BOUND + 15, "both sides to split"
    )
    c.assert_running()
    for n in others:
        at = nodelogs.first(c.log_path(n), "failed", "H3", down)
        assert at is not None and at - down <= DETECTION_BOUND

    c.link("H3", up=True)
    up = time.time()
    c.wait_views({n: everyone for n in c.names}, MERGE_BOUND + 10, "H3 to rejoin")
    took = rejoined_at(c, c.names, up) - up
    print(f"link up: H3 back in every view {took:.2f} s later (bound {MERGE_BOUND:.0f} s)")
    assert took <= MERGE_BOUND
    # Nobody typed join: H3 refuted the verdict and is known at its new incarnation.
    after = c.console("H3", "list_self")["incarnation"]
    assert after > before
    for n in others:
        listed = {m["name"]: m["incarnation"] for m in c.console(n, "list_mem")["members"]}
        assert listed["H3"] == after
    assert {leader for _, leader in c.views().values()} == {"H1"}
    c.assert_running()
    # Its sends were refused while the link was down: counted, the cause logged once.
    assert c.log_path("H3").read_text(errors="replace").count("(ENETUNREACH)") == 1


def test_a_5_4_split_heals_into_one_membership(netns_cluster: type[NetnsCluster]) -> None:
    c = netns_cluster(9)
    everyone = set(c.names)
    a_side, b_side = {f"H{i}" for i in range(1, 6)}, {f"H{i}" for i in range(6, 10)}
    c.wait_views({n: everyone for n in c.names}, 90, "the nine to converge")

    c.split(b_side)
    views = c.wait_views(
        {**{n: a_side for n in a_side}, **{n: b_side for n in b_side}},
        DETECTION_BOUND + 15,
        "each side to remove the other",
    )
    assert {views[n][1] for n in a_side} == {"H1"}
    assert {views[n][1] for n in b_side} == {"H6"}

    c.heal()
    healed = time.time()
    views = c.wait_views({n: everyone for n in c.names}, MERGE_BOUND + 15, "the sides to merge")
    took = rejoined_at(c, c.names, healed) - healed
    print(f"5|4 split healed: one membership {took:.2f} s later (bound {MERGE_BOUND:.0f} s)")
    assert took <= MERGE_BOUND
    assert {leader for _, leader in views.values()} == {"H1"}
    # A member of one side can be removed once more on the way back: a FAILED verdict
    # about it that the other side was still gossiping when the link healed (SWIM lets
    # a verdict at the member's incarnation stand; memberlist does the same for gossiped
    # "dead" news).  It refutes at once: each such removal is undone by the member
    # rejoining within the merge bound, and nobody stays removed.
    for n in c.names:
        events = [e for e in nodelogs.events(c.log_path(n), healed) if e.at >= healed]
        for removed in (e for e in events if e.kind == "failed"):
            assert any(
                e.member == removed.member
                and e.kind in ("joined", "rejoined")
                and removed.at <= e.at <= removed.at + MERGE_BOUND
                for e in events
            ), f"{n} removed {removed.member} after the heal and never took it back"
    c.assert_running()
