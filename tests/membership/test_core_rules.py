"""One MembershipCore at a time, fed messages by hand with explicit ``now`` values.

These pin down the rules of core.py's docstring: the precedence of updates
(Invariant 1), refutation of news about oneself (Invariant 2), tombstones
(Invariant 3), the ring (monitors, leader), the probe and relay state machine,
joining and leaving.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import pytest

from config.topology import MembershipConfig
from membership.core import Action, Event, MembershipCore, Send
from net.messages import (
    Ack,
    Gossip,
    MemberRecord,
    Ping,
    PingReq,
    Status,
    Update,
    UpdateKind,
)
from tests.helpers.corenet import CoreNet

STRANGER = ("10.9.9.9", 9999)


def view_of(n: int = 6, me: str = "H1", config: MembershipConfig | None = None, **kw):
    """A CoreNet whose ``me`` joined (at incarnation 0) with a view of H1..Hn all alive.

    The other members are not running: the test plays them by hand.
    """
    net = CoreNet(n, config, **kw)
    records = [
        MemberRecord(nd.name, nd.host, nd.port, 0, 0) for nd in net.nodes.values() if nd.name != me
    ]
    core = net.new_core(me)
    net.cores[me] = core
    core.start(0.0, records)
    return net, core


def gossip(core: MembershipCore, *updates: Update, now: float = 0.0, src=STRANGER):
    return core.on_message(Gossip("H9", tuple(updates)), src, now)


def upd(kind: UpdateKind, name: str, inc: int, by: str = "") -> Update:
    if kind == UpdateKind.ALIVE:
        return Update(int(kind), name, inc, "10.0.0.1", 8000 + int(name[1:]))
    return Update(int(kind), name, inc, by=by)


def drive(net: CoreNet, core: MembershipCore, until: float, silent=()) -> list[tuple[float, Event]]:
    """Tick ``core`` through ``until``; every member but ``silent`` acks its pings at once."""
    seen: list[tuple[float, Event]] = []
    t = core.next_deadline()
    while t <= until:
        pending = core.tick(t)
        while pending:
            action = pending.pop(0)
            if isinstance(action, Event):
                seen.append((t, action))
                continue
            target = net.by_addr.get(action.addr)
            if isinstance(action.message, Ping) and target and target not in silent:
                ack = Ack(action.message.seq, target, core.members[target].incarnation)
                pending += core.on_message(ack, action.addr, t)
        t = core.next_deadline()
    return seen


def events(actions) -> list[Event]:
    return [a for a in actions if isinstance(a, Event)]


def sends(actions, kind=None) -> list[Send]:
    return [
        a for a in actions if isinstance(a, Send) and (kind is None or isinstance(a.message, kind))
    ]


# --- Invariant 1: precedence of updates ---------------------------------------------------

STATUS_OF = {
    UpdateKind.ALIVE: Status.ALIVE,
    UpdateKind.SUSPECT: Status.SUSPECT,
    UpdateKind.FAILED: Status.FAILED,
    UpdateKind.LEFT: Status.LEFT,
}


def wins(current: Status, j: int, kind: UpdateKind, i: int) -> bool:
    """core.py Invariant 1, written out independently of the code."""
    if kind == UpdateKind.ALIVE:
        return i > j  # ALIVE(i) beats anything with incarnation < i
    if kind == UpdateKind.SUSPECT:
        # SUSPECT(i) beats ALIVE(j <= i) and SUSPECT(j < i)
        return (current == Status.ALIVE and j <= i) or (current == Status.SUSPECT and j < i)
    # FAILED(i) and LEFT(i) beat ALIVE/SUSPECT(j <= i)
    return current in (Status.ALIVE, Status.SUSPECT) and j <= i


CASES = list(itertools.product(list(Status), list(UpdateKind), [-1, 0, 1]))


@pytest.mark.parametrize(
    ("current", "kind", "delta"),
    CASES,
    ids=[f"{c.name}(5)<-{k.name}(5{d:+d})" for c, k, d in CASES],
)
def test_update_precedence(current: Status, kind: UpdateKind, delta: int):
    _, core = view_of()
    j = 5
    # Bring H2 to `current` at incarnation 5 the way the network would.
    gossip(core, upd(UpdateKind.ALIVE, "H2", j))
    if current != Status.ALIVE:
        setup_kind = next(k for k, s in STATUS_OF.items() if s == current)
        gossip(core, upd(setup_kind, "H2", j, by="H3"))
    m = core.members["H2"]
    assert (m.status, m.incarnation) == (current, j)
    core.broadcasts.clear()
    stale_before = core.stats.stale_updates

    i = j + delta
    actions = gossip(core, upd(kind, "H2", i, by="H3"), now=1.0)

    m = core.members["H2"]
    if wins(current, j, kind, i):
        assert (m.status, m.incarnation) == (STATUS_OF[kind], i)
        assert m.changed_at == 1.0
        assert core.stats.stale_updates == stale_before
        assert "H2" in core.broadcasts  # news that wins is passed on
        expected_event = {
            UpdateKind.SUSPECT: "suspected",
            UpdateKind.FAILED: "failed",
            UpdateKind.LEFT: "left",
            UpdateKind.ALIVE: {
                Status.ALIVE: None,
                Status.SUSPECT: "refuted",
                Status.FAILED: "rejoined",
                Status.LEFT: "rejoined",
            }[current],
        }[kind]
        kinds = [e.kind for e in events(actions)]
        assert kinds == ([expected_event] if expected_event else [])
    else:
        assert (m.status, m.incarnation) == (current, j)
        assert core.stats.stale_updates == stale_before + 1
        assert "H2" not in core.broadcasts  # stale news is not passed on
        assert events(actions) == []


def test_a_suspicion_winning_starts_the_cleanup_timer():
    net, core = view_of()
    gossip(core, upd(UpdateKind.SUSPECT, "H2", 0, by="H3"), now=2.0)
    assert core.members["H2"].suspected_by == "H3"
    # The timer is this member's own: exactly cleanup_time after it heard.
    seen = drive(net, core, 10.0)
    assert [(t, e.kind, e.name) for t, e in seen] == [(5.0, "failed", "H2")]
    assert seen[0][1].detail == "suspected by H3, no refutation within 3 s cleanup time"
    assert core.members["H2"].status == Status.FAILED


def test_a_refutation_cancels_the_timer():
    net, core = view_of()
    gossip(core, upd(UpdateKind.SUSPECT, "H2", 0, by="H3"), now=2.0)
    actions = gossip(core, upd(UpdateKind.ALIVE, "H2", 1), now=3.0)
    assert [e.kind for e in events(actions)] == ["refuted"]
    assert drive(net, core, 20.0) == []
    assert core.members["H2"].status == Status.ALIVE


def test_news_of_an_unknown_member():
    _, core = view_of(3)
    # A suspicion of someone we never heard of is ignored (we cannot ping it).
    assert gossip(core, upd(UpdateKind.SUSPECT, "H7", 0, by="H2")) == []
    assert "H7" not in core.members
    # A verdict leaves a tombstone that blocks stale news of it...
    gossip(core, upd(UpdateKind.FAILED, "H8", 2, by="H2"))
    assert core.members["H8"].status == Status.FAILED
    assert gossip(core, upd(UpdateKind.ALIVE, "H8", 2)) == []
    assert "H8" not in {m.name for m in core.live_members()}
    # ...but not a newer life, which brings its address along.
    actions = gossip(core, upd(UpdateKind.ALIVE, "H8", 3))
    assert [e.kind for e in events(actions)] == ["rejoined"]
    assert core.members["H8"].address == ("10.0.0.1", 8008)
    # An ALIVE of a new member adds it.
    actions = gossip(core, upd(UpdateKind.ALIVE, "H9", 0))
    assert [(e.kind, e.name) for e in events(actions)] == [("joined", "H9")]


def test_an_update_of_unknown_kind_is_counted_as_stale():
    _, core = view_of()
    before = core.stats.stale_updates
    gossip(core, Update(99, "H2", 9))
    assert core.stats.stale_updates == before + 1
    assert core.members["H2"].incarnation == 0


# --- Invariant 2: only X raises X's incarnation -------------------------------------------


def test_refuting_news_about_oneself():
    net, core = view_of()
    assert core.incarnation == 0

    actions = gossip(core, upd(UpdateKind.SUSPECT, "H1", 0, by="H4"))
    assert core.incarnation == 1
    (e,) = events(actions)
    assert (e.kind, e.name, e.incarnation) == ("self_refuted", "H1", 1)
    assert e.detail == "refuted a suspicion by H4"
    assert core.stats.suspected_self == 1
    assert core.members["H1"].incarnation == 1 and core.members["H1"].status == Status.ALIVE

    # The refutation is queued for gossip, and every live member is told at once.
    refutation = Update(int(UpdateKind.ALIVE), "H1", 1, "10.0.0.1", 8001)
    assert "H1" in core.broadcasts
    told = {
        net.by_addr.get(s.addr, "stranger")
        for s in sends(actions, Gossip)
        if refutation in s.message.updates
    }
    # So is the sender of the news, which is none of our live members (after a
    # partition heals, it would never hear the refutation otherwise).
    assert told == {"H2", "H3", "H4", "H5", "H6", "stranger"}
    pushed = [u for s in sends(actions, Gossip) for u in s.message.updates if u.name == "H1"]
    assert all(u == refutation for u in pushed)

    # A suspicion of an older incarnation is old news.
    assert events(gossip(core, upd(UpdateKind.SUSPECT, "H1", 0, by="H4"))) == []
    assert core.incarnation == 1

    gossip(core, upd(UpdateKind.FAILED, "H1", 3, by="H5"))
    assert core.incarnation == 4 and core.stats.declared_failed_self == 1

    # ALIVE about us at or below our incarnation is our own news coming back.
    assert events(gossip(core, upd(UpdateKind.ALIVE, "H1", 4))) == []
    # ALIVE above it is a previous life's: go above that.
    (e,) = events(gossip(core, upd(UpdateKind.ALIVE, "H1", 7)))
    assert core.incarnation == 8 and e.detail == "refuted an older life"

    (e,) = events(gossip(core, upd(UpdateKind.LEFT, "H1", 8)))
    assert core.incarnation == 9 and e.detail == "refuted a stale departure"
    assert core.members["H1"].status == Status.ALIVE


def test_suspecting_a_member_does_not_change_its_incarnation():
    net, core = view_of()
    gossip(core, upd(UpdateKind.ALIVE, "H2", 4))
    seen = drive(net, core, 6.0, silent={"H2"})
    kinds = [(e.kind, e.name, e.incarnation) for _, e in seen]
    assert kinds == [("suspected", "H2", 4), ("failed", "H2", 4)]
    assert (core.members["H2"].status, core.members["H2"].incarnation) == (Status.FAILED, 4)


# --- messages from unknown or stale members -----------------------------------------------


def test_a_ping_from_an_unknown_sender_is_acked_but_does_not_add_it():
    _, core = view_of(3)
    actions = core.on_message(Ping(42, "Z9", 0), STRANGER, 1.0)
    acks = sends(actions, Ack)
    assert [(s.addr, s.message.seq, s.message.sender) for s in acks] == [(STRANGER, 42, "H1")]
    assert "Z9" not in core.members
    assert core.stats.unknown_senders == 1


def test_a_ping_from_a_member_we_declared_failed_tells_it_so():
    _, core = view_of()
    gossip(core, upd(UpdateKind.FAILED, "H2", 2, by="H3"))
    src = ("10.0.0.1", 8002)
    actions = core.on_message(Ping(7, "H2", 2), src, 1.0)
    told = [s for s in sends(actions, Gossip) if s.addr == src]
    assert len(told) == 1
    (u,) = told[0].message.updates
    assert (u.kind, u.name, u.incarnation, u.by) == (UpdateKind.FAILED, "H2", 2, "H1")
    assert sends(actions, Ack)[0].addr == src  # and it still gets its ack
    # It stays failed here until it refutes.
    assert core.members["H2"].status == Status.FAILED

    # A ping carrying a newer incarnation has refuted already: nothing to tell.
    actions = core.on_message(Ping(8, "H2", 3), src, 2.0)
    assert not [s for s in sends(actions, Gossip) if s.addr == src]


def test_told_it_failed_a_member_refutes_and_is_re_added():
    net = CoreNet(3)
    net.start_all()
    a, b = net.cores["H1"], net.cores["H2"]
    # H1 hears H2 declared failed while H2 is in fact alive.
    gossip(a, upd(UpdateKind.FAILED, "H2", 0, by="H3"))
    assert a.members["H2"].status == Status.FAILED
    # H2 pings H1; H1's answer goes back to H2 by hand.
    answers = a.on_message(Ping(1, "H2", b.incarnation), net.nodes["H2"].address, 0.5)
    told = [s.message for s in sends(answers) if isinstance(s.message, Gossip)]
    assert told
    refute = b.on_message(told[0], net.nodes["H1"].address, 0.5)
    assert [e.kind for e in events(refute)] == ["self_refuted"]
    assert b.incarnation == 1 and b.stats.declared_failed_self == 1
    # H2's next message to H1 carries ALIVE(H2, 1), which beats FAILED(H2, 0).
    out = [s.message for s in sends(refute) if s.addr == net.nodes["H1"].address]
    if not out:  # not among the fresh pushes: it rides on the next ping instead
        out = [Ping(2, "H2", 1, b.broadcasts.take(1000, 10, prefer="H1"))]
    actions = a.on_message(out[0], net.nodes["H2"].address, 0.6)
    assert [e.kind for e in events(actions)] == ["rejoined"]
    assert (a.members["H2"].status, a.members["H2"].incarnation) == (Status.ALIVE, 1)


def test_a_stale_alive_after_failed_is_ignored_and_counted():
    _, core = view_of()
    gossip(core, upd(UpdateKind.FAILED, "H2", 0, by="H3"))
    before = core.stats.stale_updates
    assert gossip(core, upd(UpdateKind.ALIVE, "H2", 0)) == []
    assert core.members["H2"].status == Status.FAILED
    assert core.stats.stale_updates == before + 1


def test_acks_and_gossip_from_strangers_do_no_harm():
    _, core = view_of(3)
    assert sends(core.on_message(Ack(999, "Z9", 0), STRANGER, 1.0)) == []
    assert "Z9" not in core.members


# --- probes and relays --------------------------------------------------------------------


def first_round(core: MembershipCore) -> tuple[float, list[Send]]:
    t = core.next_deadline()
    while True:
        actions = core.tick(t)
        pings = sends(actions, Ping)
        if pings:
            return t, pings
        t = core.next_deadline()


def test_probe_timeline_direct_then_indirect_then_suspect():
    cfg = dataclasses.replace(MembershipConfig(), ping_timeout=0.8, cleanup_time=2.0)
    net, core = view_of(8, config=cfg)
    t0, pings = first_round(core)
    assert sorted(net.by_addr[s.addr] for s in pings) == ["H2", "H3", "H4"]
    assert core.stats.pings_sent == 3
    assert 0.0 <= t0 < cfg.ping_duration  # a random phase in the first period

    # Nothing answers.  At exactly half the timeout, each target is probed through
    # indirect_probes relays, never through itself, us, or the other targets' acks.
    assert core.next_deadline() == pytest.approx(t0 + 0.4)
    actions = core.tick(t0 + 0.4)
    reqs = sends(actions, PingReq)
    assert len(reqs) == 3 * cfg.indirect_probes
    for target in ("H2", "H3", "H4"):
        relays = [net.by_addr[s.addr] for s in reqs if s.message.target == target]
        assert len(relays) == cfg.indirect_probes == len(set(relays))
        assert target not in relays and "H1" not in relays
        req = next(s.message for s in reqs if s.message.target == target)
        assert (req.host, req.port) == net.nodes[target].address and req.sender == "H1"

    # At exactly the timeout: suspicion, and the suspect is told at once.
    assert core.next_deadline() == pytest.approx(t0 + 0.8)
    actions = core.tick(t0 + 0.8)
    suspected = sorted(e.name for e in events(actions) if e.kind == "suspected")
    assert suspected == ["H2", "H3", "H4"]
    detail = next(e.detail for e in events(actions) if e.kind == "suspected" and e.name == "H2")
    assert detail == "no ack from H2 within 0.8 s, nor through 3 indirect probes"
    told = {net.by_addr[s.addr] for s in sends(actions, Gossip) if len(s.message.updates) == 1}
    assert {"H2", "H3", "H4"} <= told

    # Exactly cleanup_time later: failed.
    actions = core.tick(t0 + 0.8 + 2.0)
    assert sorted(e.name for e in events(actions) if e.kind == "failed") == ["H2", "H3", "H4"]


def test_an_ack_cancels_the_probe():
    net, core = view_of(5)
    t0, pings = first_round(core)
    for s in pings:
        target = net.by_addr[s.addr]
        core.on_message(Ack(s.message.seq, target, 0), s.addr, t0 + 0.1)
    # No indirect probes, no suspicion.
    actions = core.tick(t0 + 0.5) + core.tick(t0 + 1.0 - 1e-9)
    assert sends(actions, PingReq) == []
    assert not [e for e in events(actions) if e.kind == "suspected"]


def test_an_ack_from_the_wrong_member_does_not_count():
    net, core = view_of(5)
    t0, pings = first_round(core)
    to_h2 = next(s for s in pings if net.by_addr[s.addr] == "H2")
    core.on_message(Ack(to_h2.message.seq, "H3", 0), to_h2.addr, t0 + 0.1)
    actions = core.tick(t0 + 0.5) + core.tick(t0 + 1.0)
    assert "H2" in {e.name for e in events(actions) if e.kind == "suspected"}


def test_an_indirect_ack_saves_the_target():
    net, core = view_of(5)
    t0, pings = first_round(core)
    for s in pings:  # acks for H3 and H4 come directly
        target = net.by_addr[s.addr]
        if target != "H2":
            core.on_message(Ack(s.message.seq, target, 0), s.addr, t0 + 0.1)
    reqs = sends(core.tick(t0 + 0.5), PingReq)
    assert {s.message.target for s in reqs} == {"H2"}
    # A relay forwards H2's ack under our sequence number.
    relay = reqs[0]
    core.on_message(Ack(relay.message.seq, "H2", 0), relay.addr, t0 + 0.7)
    actions = core.tick(t0 + 1.0)
    assert not [e for e in events(actions) if e.kind == "suspected"]


def test_relaying_a_ping_req():
    net, core = view_of(5)
    requester = net.nodes["H3"].address
    target = net.nodes["H2"]
    actions = core.on_message(PingReq(77, "H3", "H2", target.host, target.port), requester, 1.0)
    (ping,) = sends(actions, Ping)
    assert ping.addr == target.address and ping.message.sender == "H1"
    # The target's ack goes back to the requester under the requester's seq.
    actions = core.on_message(Ack(ping.message.seq, "H2", 3), target.address, 1.1)
    fwd = [s for s in sends(actions, Ack) if s.addr == requester]
    assert [(s.message.seq, s.message.sender, s.message.incarnation) for s in fwd] == [
        (77, "H2", 3)
    ]
    # Only once.
    again = core.on_message(Ack(ping.message.seq, "H2", 3), target.address, 1.2)
    assert not [s for s in sends(again, Ack) if s.addr == requester]


def test_a_relay_ignores_an_ack_from_someone_else_and_expires():
    net, core = view_of(5)
    requester = net.nodes["H3"].address
    target = net.nodes["H2"]
    actions = core.on_message(PingReq(5, "H3", "H2", target.host, target.port), requester, 1.0)
    (ping,) = sends(actions, Ping)
    wrong = core.on_message(Ack(ping.message.seq, "H4", 0), target.address, 1.1)
    assert not [s for s in sends(wrong, Ack) if s.addr == requester]
    # After ping_timeout the relay is forgotten: a late ack is not forwarded.
    actions = core.on_message(PingReq(6, "H3", "H2", target.host, target.port), requester, 2.0)
    (ping,) = sends(actions, Ping)
    core.tick(2.0 + core.config.ping_timeout)
    late = core.on_message(Ack(ping.message.seq, "H2", 0), target.address, 3.5)
    assert not [s for s in sends(late, Ack) if s.addr == requester]


# --- the ring: monitors and leader --------------------------------------------------------


def test_monitors_are_the_next_m_live_members_in_ring_order():
    _, core = view_of(10)
    assert core.monitors() == ["H2", "H3", "H4"]
    gossip(core, upd(UpdateKind.FAILED, "H3", 0, by="H2"))
    assert core.monitors() == ["H2", "H4", "H5"]
    gossip(core, upd(UpdateKind.SUSPECT, "H2", 0, by="H4"))  # suspects are still watched
    assert core.monitors() == ["H2", "H4", "H5"]
    gossip(core, upd(UpdateKind.LEFT, "H4", 0))
    assert core.monitors() == ["H2", "H5", "H6"]
    gossip(core, upd(UpdateKind.ALIVE, "H3", 1))  # it came back
    assert core.monitors() == ["H2", "H3", "H5"]


def test_monitors_wrap_around_the_ring():
    _, core = view_of(10, me="H9")
    assert core.monitors() == ["H10", "H1", "H2"]


def test_members_outside_the_cluster_file_follow_it_by_name():
    net = CoreNet(4, extra=["zed", "alpha"])
    records = [MemberRecord(n.name, n.host, n.port, 0, 0) for n in net.nodes.values()]
    core = net.new_core("H4")
    core.start(0.0, records)
    assert [m.name for m in core.live_members()] == ["H1", "H2", "H3", "H4", "alpha", "zed"]
    assert core.monitors() == ["alpha", "zed", "H1"]
    assert [r.name for r in core.snapshot()] == ["H1", "H2", "H3", "H4", "alpha", "zed"]


def test_monitors_with_few_members():
    _, core = view_of(3)
    assert core.monitors() == ["H2", "H3"]
    _, alone = view_of(1)
    assert alone.monitors() == []
    assert alone.leader() == "H1"


def test_leader_is_the_first_live_member_in_ring_order():
    _, core = view_of(5, me="H4")
    assert core.leader() == "H1"
    gossip(core, upd(UpdateKind.SUSPECT, "H1", 0, by="H2"))
    assert core.leader() == "H1"  # a suspect is still live
    gossip(core, upd(UpdateKind.FAILED, "H1", 0, by="H2"))
    assert core.leader() == "H2"
    gossip(core, upd(UpdateKind.LEFT, "H2", 0))
    assert core.leader() == "H3"
    gossip(core, upd(UpdateKind.ALIVE, "H1", 1))
    assert core.leader() == "H1"


# --- retransmission bound -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "limit"), [(1, 4), (2, 4), (9, 4), (10, 8), (40, 8), (99, 8), (100, 12), (999, 12)]
)
def test_retransmit_limit_is_mult_times_ceil_log10(n, limit):
    _, core = view_of(n)
    assert core.retransmit_limit() == limit
    assert limit == core.config.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))


def test_retransmit_limit_counts_only_live_members():
    _, core = view_of(10)
    assert core.retransmit_limit() == 8
    gossip(core, upd(UpdateKind.FAILED, "H10", 0, by="H2"))
    assert core.retransmit_limit() == 4


def test_fresh_news_goes_out_at_once_and_older_news_keeps_its_schedule():
    """Pushed at once to gossip_fanout random members when fresh, then every
    gossip_interval, until it has gone to retransmit_limit() random members; a burst
    of other news must not spend its random sends all in one instant."""
    _, core = view_of(20)
    limit = core.retransmit_limit()
    assert limit == 8
    core.broadcasts.clear()  # forget the join announcement
    t0 = 0.05
    news = upd(UpdateKind.ALIVE, "H5", 1)
    sent_at: list[float] = []

    def note(actions: list[Action], t: float) -> None:
        for s in sends(actions, Gossip):
            if news in s.message.updates:
                sent_at.append(t)

    note(gossip(core, news, now=t0), t0)
    assert sent_at == [t0] * core.config.gossip_fanout
    # A burst of other fresh news in the same instant...
    for k in range(6, 16):
        note(gossip(core, upd(UpdateKind.ALIVE, f"H{k}", 1), now=t0), t0)
    # ...goes out at once itself, without taking H5's news along again.
    assert sent_at == [t0] * core.config.gossip_fanout
    t = core.next_deadline()
    while t < 5.0:
        note(core.tick(t), t)
        t = core.next_deadline()
    assert len(sent_at) == limit
    assert len({round(x, 9) for x in sent_at}) >= 3  # spread over gossip intervals


# --- joining, leaving, tombstones ---------------------------------------------------------


def test_start_takes_the_snapshot_and_announces_itself():
    net = CoreNet(6)
    records = [MemberRecord(n.name, n.host, n.port, 0, 0) for n in net.nodes.values()][1:]
    core = net.new_core("H1")
    assert core.next_deadline() == math.inf  # not started: no timers
    actions = core.start(10.0, records)
    assert core.active
    (e,) = events(actions)
    assert (e.kind, e.name, e.incarnation) == ("joined", "H1", 0)
    hello = Update(0, "H1", 0, "10.0.0.1", 8001)
    # Every live member of the snapshot hears of the join directly.
    told = {net.by_addr[s.addr] for s in sends(actions, Gossip) if hello in s.message.updates}
    assert told == {"H2", "H3", "H4", "H5", "H6"}
    assert {m.name for m in core.live_members()} == set(net.nodes)
    assert 10.0 <= core.next_deadline() <= 10.0 + core.config.ping_duration


def test_a_restart_joins_above_its_own_tombstone():
    net = CoreNet(4)
    records = [
        MemberRecord("H1", "10.0.0.1", 8001, 7, int(Status.FAILED)),
        MemberRecord("H2", "10.0.0.1", 8002, 0, int(Status.ALIVE)),
    ]
    core = net.new_core("H1")
    actions = core.start(0.0, records)
    assert core.incarnation == 8
    assert core.members["H1"].status == Status.ALIVE
    assert all(u.incarnation == 8 for s in sends(actions, Gossip) for u in s.message.updates)
    # Alive in the snapshot at a higher incarnation (a previous life): also above it.
    core = net.new_core("H1")
    core.start(0.0, [MemberRecord("H1", "10.0.0.1", 8001, 3, int(Status.ALIVE))])
    assert core.incarnation == 4


def test_start_keeps_snapshot_tombstones_and_suspicions():
    net = CoreNet(4)
    records = [
        MemberRecord("H2", "10.0.0.1", 8002, 0, int(Status.SUSPECT)),
        MemberRecord("H3", "10.0.0.1", 8003, 1, int(Status.FAILED)),
        MemberRecord("H4", "10.0.0.1", 8004, 0, 99),  # a status from the future: skipped
    ]
    core = net.new_core("H1")
    core.start(5.0, records)
    assert core.members["H3"].status == Status.FAILED
    assert "H4" not in core.members
    assert {m.name for m in core.live_members()} == {"H1", "H2"}
    # The suspicion runs its full cleanup time from our start.
    failed = []
    t = core.next_deadline()
    while t <= 5.0 + core.config.cleanup_time:
        failed += [(t, e.name) for e in events(core.tick(t)) if e.kind == "failed"]
        t = core.next_deadline()
    assert failed == [(5.0 + core.config.cleanup_time, "H2")]


def test_leave_tells_every_live_member_and_goes_quiet():
    net, core = view_of(5)
    gossip(core, upd(UpdateKind.FAILED, "H5", 0, by="H2"))
    actions = core.leave(3.0)
    told = sorted(net.by_addr[s.addr] for s in sends(actions, Gossip))
    assert told == ["H2", "H3", "H4"]  # not the failed H5
    for s in sends(actions):
        assert s.message.updates == (Update(int(UpdateKind.LEFT), "H1", 0),)
    assert [e.kind for e in events(actions)] == ["left"]
    assert not core.active
    assert core.next_deadline() == math.inf
    assert core.tick(100.0) == []
    assert core.on_message(Ping(1, "H2", 0), net.nodes["H2"].address, 4.0) == []
    assert core.live_members() == [] and core.leader() is None and core.monitors() == []
    assert core.members["H1"].status == Status.LEFT
    assert core.leave(5.0) == []  # leaving twice is harmless
    # Rejoining goes above the incarnation it left with.
    core.start(6.0, [MemberRecord("H1", "10.0.0.1", 8001, 0, int(Status.LEFT))])
    assert core.incarnation == 1 and core.active


def test_tombstones_are_collected_after_tombstone_time():
    cfg = dataclasses.replace(MembershipConfig(), tombstone_time=10.0)
    net, core = view_of(4, config=cfg)
    gossip(core, upd(UpdateKind.FAILED, "H4", 0, by="H2"), now=0.0)
    drive(net, core, 10.0)
    assert core.members["H4"].status == Status.FAILED
    assert "H4" in {r.name for r in core.snapshot()}
    # A stale ALIVE is still blocked.
    assert gossip(core, upd(UpdateKind.ALIVE, "H4", 0), now=10.0) == []
    # Collected at the first protocol round after tombstone_time has passed.
    drive(net, core, 10.0 + cfg.ping_duration + 1e-6)
    assert "H4" not in core.members
    assert "H4" not in {r.name for r in core.snapshot()}
    assert core.members["H1"].status == Status.ALIVE  # never collects itself


def test_snapshot_lists_everyone_with_tombstones_in_ring_order():
    _, core = view_of(4, me="H2")
    gossip(core, upd(UpdateKind.FAILED, "H3", 0, by="H1"))
    gossip(core, upd(UpdateKind.SUSPECT, "H4", 0, by="H1"))
    snap = core.snapshot()
    assert [(r.name, r.status) for r in snap] == [
        ("H1", Status.ALIVE),
        ("H2", Status.ALIVE),
        ("H3", Status.FAILED),
        ("H4", Status.SUSPECT),
    ]
    assert snap[1] == MemberRecord("H2", "10.0.0.1", 8002, 0, 0)


def test_an_inactive_core_does_nothing():
    net = CoreNet(3)
    core = net.new_core("H1")
    assert core.tick(1.0) == []
    assert core.on_message(Ping(1, "H2", 0), STRANGER, 1.0) == []
    assert core.leave(1.0) == []
