"""The SWIM protocol across many pure cores (CoreNet): deterministic, exact virtual times.

CoreNet delivers every datagram at once (a zero-delay network), so the times the
protocol defines can be asserted exactly: a crashed member is suspected exactly
``ping_timeout`` after the first probe it cannot answer, and removed exactly
``cleanup_time`` after that.
"""

from __future__ import annotations

import dataclasses

import pytest

from config.topology import MembershipConfig
from membership import core as core_module
from net.messages import Gossip, Ping, PingReq, Status, UpdateKind
from tests.helpers.corenet import CoreNet

CFG = MembershipConfig()
# The bound the issue sets for detection: one period to be probed, the ack
# timeout, the cleanup time.
DETECTION_BOUND = CFG.ping_duration + CFG.ping_timeout + CFG.cleanup_time


def started(n: int, seed: int = 1, settle: float = 20.0, **kw) -> CoreNet:
    net = CoreNet(n, seed=seed, **kw)
    net.start_all()
    net.run_until(settle)
    everyone = set(net.nodes) if not kw.get("extra") else set(net.running())
    assert all(net.view(name) == everyone for name in net.running()), "did not converge"
    return net


def no_false_alarms(net: CoreNet, crashed: set[str]) -> None:
    wrong = [
        (t, who, e.kind, e.name)
        for t, who, e in net.events
        if e.kind in ("suspected", "failed") and e.name not in crashed
    ]
    assert wrong == []


def first_probe_after(net: CoreNet, target: str, t: float) -> float:
    """When the first ping to ``target`` left after ``t`` (it is a direct probe:
    relays only ever follow one)."""
    return net.sends(Ping, dst=target, since=t)[0].time


# --- detection times ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_crash_is_suspected_and_removed_at_exact_times(seed):
    net = started(10, seed)
    t_crash = 20.37
    net.run_until(t_crash)
    net.crash("H5")
    net.run_for(15)

    probe = first_probe_after(net, "H5", t_crash)
    suspicions = net.events_of("suspected", "H5")
    t_suspect, first_suspecter, event = suspicions[0]
    assert t_suspect == probe + CFG.ping_timeout
    assert event.detail.startswith("no ack from H5 within 1 s, nor through")
    # The probe was one of the suspecter's: H5 is among its monitors.
    assert net.sends(Ping, src=first_suspecter, dst="H5", since=t_crash)[0].time == probe

    failures = net.events_of("failed", "H5")
    survivors = set(net.running())
    assert {who for _, who, _ in failures} == survivors
    # The first suspecter's own timer ends exactly cleanup_time later; everyone else
    # removes it then (on hearing that verdict), or exactly cleanup_time after it heard
    # of the suspicion itself, whichever comes first.
    heard = {who: t for t, who, _ in suspicions}
    for t, who, _ in failures:
        assert t >= t_suspect + CFG.cleanup_time
        assert t in (t_suspect + CFG.cleanup_time, heard[who] + CFG.cleanup_time)
    (t_own,) = [t for t, who, _ in failures if who == first_suspecter]
    assert t_own == t_suspect + CFG.cleanup_time
    # The first removal is a member's own timer running out, and its log line says so.
    t_first, _, first = failures[0]
    assert t_first == t_suspect + CFG.cleanup_time
    assert first.detail == f"suspected by {first_suspecter}, no refutation within 3 s cleanup time"
    assert max(t for t, _, _ in failures) <= t_crash + DETECTION_BOUND + 0.5
    no_false_alarms(net, {"H5"})


def test_detection_times_follow_the_configuration():
    cfg = dataclasses.replace(CFG, ping_duration=0.5, ping_timeout=0.3, cleanup_time=1.2)
    net = CoreNet(6, cfg, seed=4)
    net.start_all()
    net.run_until(10.0)
    net.crash("H3")
    net.run_for(5)
    probe = first_probe_after(net, "H3", 10.0)
    assert probe < 10.0 + cfg.ping_duration
    t_suspect = net.events_of("suspected", "H3")[0][0]
    assert t_suspect == probe + 0.3
    # Indirect probes go out exactly half way through the ack timeout.
    reqs = net.sends(PingReq, since=10.0)
    assert reqs and reqs[0].time == probe + 0.15
    assert min(t for t, _, _ in net.events_of("failed", "H3")) == t_suspect + 1.2


# --- suspicion and refutation -------------------------------------------------------------


def test_a_suspect_that_is_alive_refutes_and_is_never_removed():
    net = started(8, seed=5)
    start = 20.0
    # For 1.5 s every ping to H4 is lost (direct and relayed): its monitors suspect it.
    net.drop_rules.append(
        lambda t, src, dst, msg: dst == "H4" and isinstance(msg, Ping) and start <= t < start + 1.5
    )
    net.run_until(40.0)

    suspicions = net.events_of("suspected", "H4")
    assert suspicions, "nobody suspected H4"
    t_suspect, suspecter, _ = suspicions[0]
    # H4 hears of it at once (the suspecter tells it directly) and refutes.
    refutations = net.events_of("self_refuted", "H4", observer="H4")
    assert refutations[0][0] == t_suspect
    assert refutations[0][2].detail == f"refuted a suspicion by {suspecter}"
    h4 = net.cores["H4"]
    assert h4.incarnation >= 1 and h4.stats.suspected_self >= 1

    # Everyone sees ALIVE(i + 1): the timer is cancelled and H4 is never removed.
    assert net.events_of("failed", "H4") == []
    for name in net.running():
        m = net.cores[name].members["H4"]
        assert (m.status, m.incarnation) == (Status.ALIVE, h4.incarnation)
    # Every member that heard the suspicion saw it refuted, well within the cleanup time.
    refuted = net.events_of("refuted", "H4")
    assert {who for _, who, _ in refuted} == {who for _, who, _ in suspicions}
    assert all(t < t_suspect + CFG.cleanup_time for t, _, _ in refuted)
    # The member that raised the suspicion counts a false positive.
    assert net.cores[suspecter].stats.false_positives >= 1
    assert [e for e in net.events if e[2].kind == "failed"] == []


def test_a_refutation_does_not_depend_on_gossip_luck():
    """Every member that heard the suspicion must hear the refutation within the
    cleanup time, even if no other member passes it on by random gossip (in a small
    cluster each member forwards an update to only a few random members)."""
    net = started(9, seed=18)
    start = 20.0
    net.drop_rules += [
        lambda t, src, dst, msg: dst == "H4" and isinstance(msg, Ping) and start <= t < start + 1.5,
        lambda t, src, dst, msg: (
            src != "H4"
            and isinstance(msg, Gossip)
            and any(u.name == "H4" and u.kind == UpdateKind.ALIVE for u in msg.updates)
        ),
    ]
    net.run_until(40.0)
    assert net.events_of("suspected", "H4")
    assert net.events_of("failed") == []
    h4 = net.cores["H4"]
    for name in net.running():
        m = net.cores[name].members["H4"]
        assert (m.status, m.incarnation) == (Status.ALIVE, h4.incarnation)


def test_an_indirect_probe_prevents_a_false_suspicion():
    net = started(6, seed=6)
    # H1 cannot reach H2 directly (a broken link), but others can.
    net.drop_rules.append(lambda t, src, dst, msg: {src, dst} == {"H1", "H2"})
    net.run_until(60.0)
    assert net.events_of("suspected", "H2") == []
    reqs = [d for d in net.sends(PingReq, src="H1") if d.message.target == "H2"]
    assert len(reqs) >= 3 * 30  # 3 relays, every round
    # Each indirect probe goes out half a timeout after its direct ping.
    direct = [d.time for d in net.sends(Ping, src="H1", dst="H2")]
    assert {round(r.time - CFG.ping_timeout / 2, 9) for r in reqs} <= {round(t, 9) for t in direct}


# --- the ring: monitors move as members fail and join -------------------------------------


def test_monitors_move_on_and_detection_stays_complete_after_successive_failures():
    net = started(10, seed=7)
    assert net.cores["H10"].monitors() == ["H1", "H2", "H3"]
    t = 20.0
    for victim, next_leader in (("H1", "H2"), ("H2", "H3"), ("H3", "H4"), ("H4", "H5")):
        t += 0.41
        net.run_until(t)
        net.crash(victim)
        net.run_for(DETECTION_BOUND + 1.0)
        survivors = set(net.running())
        removed_by = {who for _, who, _ in net.events_of("failed", victim)}
        assert removed_by == survivors, victim
        for name in survivors:
            assert net.view(name) == survivors
            assert net.cores[name].leader() == next_leader
        t = net.now
    # H10's duty moved past every failed successor, and H5 is still watched by three.
    assert net.cores["H10"].monitors() == ["H5", "H6", "H7"]
    watchers = [n for n in net.running() if "H5" in net.cores[n].monitors()]
    assert sorted(watchers) == ["H10", "H8", "H9"]
    no_false_alarms(net, {"H1", "H2", "H3", "H4"})


def test_a_joining_member_takes_its_place_on_the_ring():
    net = CoreNet(6, seed=8, extra=["X1"])
    for name in ("H1", "H2", "H3", "H4", "H5", "H6"):
        net.start(name, via="H1" if name != "H1" else None)
    net.run_until(10.0)
    assert net.cores["H6"].monitors() == ["H1", "H2", "H3"]
    net.start("X1", via="H3")
    net.run_for(2.0)
    # Not in the cluster file: it follows the file's members on the ring.
    for name in net.running():
        assert net.view(name) == set(net.nodes)
    assert net.cores["H6"].monitors() == ["X1", "H1", "H2"]
    assert net.cores["X1"].monitors() == ["H1", "H2", "H3"]
    assert net.cores["H1"].leader() == "H1"


@pytest.mark.parametrize("seed", [9, 10, 11])
def test_m_simultaneous_failures_are_all_detected_in_time(seed):
    net = started(10, seed)
    t_crash = 20.123
    net.run_until(t_crash)
    crashed = {"H3", "H4", "H5"}  # adjacent: H5's monitors were H2, H3, H4
    for name in crashed:
        net.crash(name)
    net.run_for(15)
    survivors = set(net.running())
    for victim in crashed:
        failures = net.events_of("failed", victim)
        assert {who for _, who, _ in failures} == survivors, victim
        assert max(t for t, _, _ in failures) <= t_crash + DETECTION_BOUND + 0.5
    for name in survivors:
        assert net.view(name) == survivors
    assert net.cores["H2"].monitors() == ["H6", "H7", "H8"]
    no_false_alarms(net, crashed)


# --- dissemination ------------------------------------------------------------------------


def test_news_reaches_all_of_forty_members_within_o_log_n_random_sends(monkeypatch):
    # No anti-entropy in this test: gossip alone must carry the news.
    monkeypatch.setattr(core_module, "SYNC_INTERVAL_FACTOR", 10_000)
    net = CoreNet(40, seed=12, extra=["X1"])
    for i, name in enumerate(list(net.nodes)[:40]):
        net.start(name, via=None if i == 0 else "H1")
    net.run_until(15.0)
    assert all(len(net.view(n)) == 40 for n in net.running())

    limit = net.cores["H1"].retransmit_limit()
    assert limit == 8  # 4 * ceil(log10(41))

    # A join reaches everyone within a second.
    net.start("X1", via="H17")
    net.run_for(1.0)
    assert all("X1" in net.view(n) for n in net.running())

    # A failure reaches everyone within the detection bound.
    net.run_until(20.3)
    net.crash("H20")
    net.run_for(DETECTION_BOUND + 0.5)
    survivors = set(net.running())
    assert {who for _, who, _ in net.events_of("failed", "H20")} == survivors

    # Each member pushes the verdict to at most `limit` random members: O(log N) each,
    # O(N log N) in all, never O(N^2).
    net.run_for(10)
    for name in survivors:
        pushes = [
            d
            for d in net.sends(Gossip, src=name, since=20.3)
            if any(u.name == "H20" and u.kind == UpdateKind.FAILED for u in d.message.updates)
        ]
        assert len(pushes) <= limit, name


# --- restarts, departures and tombstones --------------------------------------------------


def test_a_restarted_member_rejoins_above_its_tombstone():
    net = started(6, seed=13)
    net.crash("H3")
    net.run_for(DETECTION_BOUND + 1)
    assert all(net.status(n, "H3") == Status.FAILED for n in net.running())
    restart_at = net.now
    # A new process: a fresh core at incarnation 0, with a view holding its tombstone.
    h3 = net.start("H3", via="H1")
    assert h3.incarnation == 1
    net.run_for(1.0)
    rejoined = net.events_of("rejoined", "H3")
    assert {who for _, who, _ in rejoined} == set(net.running()) - {"H3"}
    assert all(t == restart_at for t, _, _ in rejoined)  # it told everyone directly
    for name in net.running():
        assert net.view(name) == set(net.nodes)
        m = net.cores[name].members["H3"]
        assert (m.status, m.incarnation) == (Status.ALIVE, 1)


def test_a_restart_without_its_tombstone_is_told_it_failed_and_comes_back():
    net = started(6, seed=14)
    net.crash("H3")
    net.run_for(DETECTION_BOUND + 1)
    t_restart = net.now
    # The view it gets has lost H3's record (say the introducer's was collected).
    snapshot = [r for r in net.cores["H1"].snapshot() if r.name != "H3"]
    h3 = net.start("H3", snapshot=snapshot)
    assert h3.incarnation == 0  # nothing told it about its previous life
    net.run_for(5.0)
    # Its announcement ALIVE(0) is stale against FAILED(0); a member it pings tells it.
    told = [
        d
        for d in net.sends(Gossip, dst="H3", since=t_restart)
        if any(u.name == "H3" and u.kind == UpdateKind.FAILED for u in d.message.updates)
    ]
    assert told
    assert h3.incarnation == 1 and h3.stats.declared_failed_self >= 1
    for name in net.running():
        assert net.view(name) == set(net.nodes)
        assert net.cores[name].members["H3"].incarnation == 1


def test_leave_removes_the_member_everywhere_as_left():
    net = started(6, seed=15)
    t_leave = 20.5
    net.run_until(t_leave)
    net.leave("H2")
    left = net.events_of("left", "H2")
    assert {who for _, who, _ in left} == set(net.nodes)
    assert all(t == t_leave for t, _, _ in left)
    net.run_for(30)
    others = set(net.nodes) - {"H2"}
    for name in others:
        assert net.status(name, "H2") == Status.LEFT
        assert net.view(name) == others
    # A departure is not a failure: nobody suspects it or declares it failed.
    no_false_alarms(net, set())
    # `join` brings it back, above the incarnation it left with.
    h2 = net.cores["H2"]
    net.carry_out("H2", h2.start(net.now, net.cores["H1"].snapshot()))
    assert h2.incarnation == 1
    net.run_for(2)
    assert {who for _, who, _ in net.events_of("rejoined", "H2")} == others
    for name in net.nodes:
        assert net.view(name) == set(net.nodes)


def test_tombstones_are_collected_everywhere():
    cfg = dataclasses.replace(CFG, tombstone_time=20.0)
    net = CoreNet(6, cfg, seed=16)
    net.start_all()
    net.run_until(10.0)
    net.crash("H6")
    net.run_for(DETECTION_BOUND + 1)
    t_failed = max(t for t, _, _ in net.events_of("failed", "H6"))
    net.run_until(t_failed + 19.0)
    assert all("H6" in net.cores[n].members for n in net.running())
    net.run_until(t_failed + 20.0 + CFG.ping_duration + 0.01)
    assert all("H6" not in net.cores[n].members for n in net.running())
    assert all("H6" not in {r.name for r in net.cores[n].snapshot()} for n in net.running())
    no_false_alarms(net, {"H6"})


def test_a_quiet_cluster_has_no_false_alarms_and_every_member_pings_m_others():
    net = started(10, seed=17, settle=5.0)
    net.run_until(65.0)
    no_false_alarms(net, set())
    for name in net.nodes:
        core = net.cores[name]
        # About one round per second, M pings a round.
        assert 58 * 3 <= core.stats.pings_sent <= 66 * 3
        targets = {d.dst for d in net.sends(Ping, src=name, since=10.0)}
        assert set(core.monitors()) <= targets
