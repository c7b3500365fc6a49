"""The SWIM failure detector as a pure state machine.

Theory of operation
-------------------
Members sit on a ring whose order every process knows (the cluster file's order;
members not in the file follow, sorted by name).  Every ``ping_duration`` a member
pings the ``monitors`` (M) live members that follow it on the ring.  A ping not
acked within ``ping_timeout / 2`` is retried through ``indirect_probes`` random
relays (PingReq); if no ack of either kind arrives within ``ping_timeout``, the
target becomes *suspect*.  Every member that learns of a suspicion starts its own
``cleanup_time`` timer; a suspect that hears of it refutes by raising its
incarnation and announcing itself alive, directly to every live member and by
gossip.  A suspicion not refuted in time becomes *failed* and the member is
removed everywhere.

News (joins, suspicions, refutations, failures, departures) travels as
:class:`Update` records, pushed at once to ``gossip_fanout`` random members when it
is fresh, and again every ``gossip_interval`` until each update has gone to
``retransmit_mult * ceil(log10(N + 1))`` random members; while queued it also
rides on every ping and ack.  A slow anti-entropy exchange (``Sync``) repairs any
member that missed news for good.

Partitions and reconnection
---------------------------
Nothing above ever contacts a removed member again, so after a partition each
side would stay alone for good.  As Serf does, a member remembers the members it
removed as failed (not those that left) for ``reconnect_timeout``, and every
``reconnect_interval`` sends one of them, at random, a :class:`Merge`: its live
members as ALIVE records.  A receiver that is alive merges them and answers with
its own.  A listed member that the receiver holds as failed at the listed
incarnation or above cannot simply be taken back (only the member may raise its
incarnation, invariant 2), so the receiver tells that member its verdict
directly; the member refutes at once, and sends the refutation to its accuser as
well as to its own live members.  Both sides thus learn each other at the first
Merge after the heal, within a round trip or two and a few gossip pushes.

Because monitors are recomputed from the live members at every round, a failure
shifts the monitoring duty to the next live predecessors: detection stays
complete after any number of successive failures, and with up to M
simultaneous ones (a member is missed only if all M of its predecessors fail with
it).

Invariants
----------
1. An update about member X wins over what we know of X only if it is newer by
   SWIM's order: ALIVE(i) beats anything with incarnation < i; SUSPECT(i) beats
   ALIVE(j <= i) and SUSPECT(j < i); FAILED(i) and LEFT(i) beat ALIVE/SUSPECT(j <= i).
   Everything else is stale and ignored.
2. Only X raises X's incarnation.  News that X is suspect or failed at an
   incarnation >= X's own makes X (if it is running) take incarnation + 1.
3. Failed and departed members stay as tombstones for ``tombstone_time`` so stale
   news cannot bring them back, and so a restarted process can join above them.
   Failed ones stay on the reconnect list for ``reconnect_timeout`` (much longer),
   address only.
4. The core never awaits, never reads a clock and never touches a socket: every
   call takes ``now`` and returns the :class:`Send`s and :class:`Event`s to carry out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from config.topology import MembershipConfig, Node
from membership.gossip import BroadcastQueue, encoded_size
from net.messages import (
    Ack,
    Gossip,
    MemberRecord,
    Merge,
    Ping,
    PingReq,
    Status,
    Update,
    UpdateKind,
)
from net.transport import Address

# Bytes a ping/ack/gossip takes besides its updates (tag, seq, name, the codec's
# freshness header and MAC: 42, ...), rounded up; the rest of max_datagram is the
# piggyback budget.
_HEADER_ALLOWANCE = 128
# How often a member pushes a sample of its whole view to a random member.
SYNC_INTERVAL_FACTOR = 15  # in ping durations: 15 s at the LAN default


@dataclass
class Member:
    name: str
    host: str
    port: int
    incarnation: int
    status: Status
    changed_at: float
    # Who suspected it, for the log line that explains a failure.
    suspected_by: str = ""

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def live(self) -> bool:
        return self.status in (Status.ALIVE, Status.SUSPECT)

    def record(self) -> MemberRecord:
        return MemberRecord(self.name, self.host, self.port, self.incarnation, int(self.status))


@dataclass(frozen=True)
class Send:
    """Send ``message`` to ``addr``."""

    addr: Address
    message: Any


@dataclass(frozen=True)
class Event:
    """Something changed; ``detail`` is the log line's cause, for a person."""

    kind: str  # joined, suspected, refuted, failed, left, rejoined, self_refuted
    name: str
    incarnation: int
    detail: str


Action = Send | Event


@dataclass
class _Probe:
    target: str
    incarnation: int  # the target's incarnation when the ping went out
    sent_at: float
    indirect_at: float
    deadline: float
    relays: int = 0
    indirect_sent: bool = False


@dataclass
class _Relay:
    requester: Address
    requester_seq: int
    target: str
    expires: float


@dataclass
class _Lost:
    """A member removed as failed, kept to try reaching it again (Serf's failedMembers)."""

    host: str
    port: int
    since: float


@dataclass
class Stats:
    pings_sent: int = 0
    # Suspicions this member raised (a member that answered no probe, direct or relayed).
    suspicions: int = 0
    # Members removed from this member's view as failed (its own verdict or one heard).
    failures: int = 0
    # Suspicions this member raised against members that then proved alive.
    false_positives: int = 0
    # Times this member heard itself suspected or declared failed while alive.
    suspected_self: int = 0
    declared_failed_self: int = 0
    stale_updates: int = 0
    unknown_senders: int = 0
    # Merges sent to members removed as failed, and received.
    merges_sent: int = 0
    merges_received: int = 0


def _update_for(m: Member, by: str = "") -> Update:
    kind = {
        Status.ALIVE: UpdateKind.ALIVE,
        Status.SUSPECT: UpdateKind.SUSPECT,
        Status.FAILED: UpdateKind.FAILED,
        Status.LEFT: UpdateKind.LEFT,
    }[m.status]
    if kind == UpdateKind.ALIVE:
        return Update(int(kind), m.name, m.incarnation, m.host, m.port)
    return Update(int(kind), m.name, m.incarnation, by=by)


class MembershipCore:
    """One member's view of the cluster, and the SWIM protocol that keeps it."""

    def __init__(
        self,
        me: Node,
        config: MembershipConfig,
        ring_position: Mapping[str, int],
        rng: random.Random | None = None,
    ) -> None:
        self.me = me
        self.config = config
        self._ring_position = dict(ring_position)
        self.rng = rng or random.Random()
        self.incarnation = 0
        self.active = False
        self.members: dict[str, Member] = {}
        self.broadcasts = BroadcastQueue()
        self.stats = Stats()
        self._seq = 0
        self._probes: dict[int, _Probe] = {}
        self._relays: dict[int, _Relay] = {}
        self._suspicion_deadline: dict[str, float] = {}
        self._raised: set[tuple[str, int]] = set()
        self._next_round = math.inf
        self._next_gossip = math.inf
        self._next_sync = math.inf
        self._next_reconnect = math.inf
        self._lost: dict[str, _Lost] = {}
        self._reset_self(0.0)

    # --- queries ---------------------------------------------------------------

    def _ring_key(self, name: str) -> tuple[int, int, str]:
        pos = self._ring_position.get(name)
        return (0, pos, "") if pos is not None else (1, 0, name)

    def live_members(self) -> list[Member]:
        """Alive and suspect members, self included, in ring order."""
        live = [m for m in self.members.values() if m.live]
        return sorted(live, key=lambda m: self._ring_key(m.name))

    def leader(self) -> str | None:
        """The first live member in ring order."""
        live = self.live_members()
        return live[0].name if live else None

    def monitors(self) -> list[str]:
        """The M live members that follow this one on the ring."""
        live = [m.name for m in self.live_members()]
        if self.me.name not in live:
            return []
        i = live.index(self.me.name)
        others = live[i + 1 :] + live[:i]
        return others[: self.config.monitors]

    def snapshot(self) -> tuple[MemberRecord, ...]:
        """Every member we know of, tombstones included, in ring order."""
        ordered = sorted(self.members.values(), key=lambda m: self._ring_key(m.name))
        return tuple(m.record() for m in ordered)

    def retransmit_limit(self) -> int:
        n = max(1, sum(1 for m in self.members.values() if m.live))
        return self.config.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def next_deadline(self) -> float:
        """When :meth:`tick` next has work to do."""
        if not self.active:
            return math.inf
        times = [self._next_round, self._next_sync, self._next_reconnect]
        if len(self.broadcasts):
            times.append(self._next_gossip)
        for p in self._probes.values():
            times.append(p.deadline if p.indirect_sent else p.indirect_at)
        times.extend(self._suspicion_deadline.values())
        return min(times)

    # --- joining and leaving ---------------------------------------------------

    def _reset_self(self, now: float) -> None:
        self.members = {
            self.me.name: Member(
                self.me.name, self.me.host, self.me.port, self.incarnation, Status.ALIVE, now
            )
        }

    def start(self, now: float, snapshot: Iterable[MemberRecord] = ()) -> list[Action]:
        """Join: take the view the introducer handed us and announce ourselves.

        Our incarnation goes above anything the view says about us, so a restarted
        process overrides the record of its previous life.
        """
        records = list(snapshot)
        for r in records:
            if r.name == self.me.name:
                self.incarnation = max(self.incarnation, r.incarnation + 1)
        self.active = True
        self.broadcasts.clear()
        self._probes.clear()
        self._relays.clear()
        self._suspicion_deadline.clear()
        self._lost.clear()
        self._reset_self(now)
        actions: list[Action] = []
        for r in records:
            if r.name == self.me.name:
                continue
            try:
                status = Status(r.status)
            except ValueError:
                continue
            m = Member(r.name, r.host, r.port, r.incarnation, status, now)
            self.members[r.name] = m
            if status == Status.SUSPECT:
                self._suspicion_deadline[r.name] = now + self.config.cleanup_time
        hello = _update_for(self.members[self.me.name])
        self.broadcasts.push(hello)
        # Announce ourselves to every live member we were told of, once: a join must
        # not depend on luck, and it costs one small datagram per member.
        for m in self.live_members():
            if m.name != self.me.name:
                actions.append(Send(m.address, Gossip(self.me.name, (hello,))))
        # Spread our phase: members started together should not ping in lockstep.
        self._next_round = now + self.rng.uniform(0, self.config.ping_duration)
        self._next_gossip = now
        self._next_sync = now + self.rng.uniform(0.5, 1.0) * self._sync_interval()
        # In phase with our rounds (already spread), without another random draw.
        self._next_reconnect = self._next_round + self.config.reconnect_interval
        live = sum(1 for m in self.members.values() if m.live)
        detail = f"this node joined at incarnation {self.incarnation}; {live} live members known"
        actions.append(Event("joined", self.me.name, self.incarnation, detail))
        actions.extend(self._push(now))
        return actions

    def leave(self, now: float) -> list[Action]:
        """Leave on purpose: tell every live member, then go quiet."""
        if not self.active:
            return []
        me = self.members[self.me.name]
        me.status = Status.LEFT
        update = _update_for(me)
        targets = [m for m in self.live_members() if m.name != self.me.name]
        actions: list[Action] = [Send(m.address, Gossip(self.me.name, (update,))) for m in targets]
        actions.append(Event("left", self.me.name, self.incarnation, "left on request"))
        self.active = False
        self.broadcasts.clear()
        self._probes.clear()
        self._relays.clear()
        self._suspicion_deadline.clear()
        self._lost.clear()
        self._next_round = self._next_gossip = self._next_sync = math.inf
        self._next_reconnect = math.inf
        # Keep our incarnation: a later join goes above it.
        self.incarnation += 1
        self._reset_self(now)
        self.members[self.me.name].status = Status.LEFT
        return actions

    # --- incoming messages -----------------------------------------------------

    def on_message(self, msg: Any, src: Address, now: float) -> list[Action]:
        if not self.active:
            return []
        actions: list[Action] = []
        if isinstance(msg, Ping):
            actions += self._apply_all(msg.updates, now, src)
            actions += self._check_sender(msg.sender, msg.incarnation, src)
            ack = Ack(msg.seq, self.me.name, self.incarnation, self._piggyback(msg.sender))
            actions.append(Send(src, ack))
        elif isinstance(msg, Ack):
            actions += self._apply_all(msg.updates, now, src)
            probe = self._probes.get(msg.seq)
            if probe is not None and probe.target == msg.sender:
                del self._probes[msg.seq]
            relay = self._relays.pop(msg.seq, None)
            if relay is not None and relay.target == msg.sender:
                fwd = Ack(relay.requester_seq, msg.sender, msg.incarnation, ())
                actions.append(Send(relay.requester, fwd))
        elif isinstance(msg, PingReq):
            seq = self._next_seq()
            self._relays[seq] = _Relay(src, msg.seq, msg.target, now + self.config.ping_timeout)
            ping = Ping(seq, self.me.name, self.incarnation, self._piggyback(msg.target))
            actions.append(Send((msg.host, msg.port), ping))
        elif isinstance(msg, Gossip):
            actions += self._apply_all(msg.updates, now, src)
        elif isinstance(msg, Merge):
            actions += self._merge(msg, src, now)
        actions += self._push_if_fresh(now)
        return actions

    def _check_sender(self, name: str, incarnation: int, src: Address) -> list[Action]:
        """A message from a member we removed: tell it, so it can refute and return."""
        m = self.members.get(name)
        if m is None:
            self.stats.unknown_senders += 1
            return []
        if m.status == Status.FAILED and incarnation <= m.incarnation:
            return [Send(src, Gossip(self.me.name, (_update_for(m, by=self.me.name),)))]
        return []

    # --- applying news ---------------------------------------------------------

    def _apply_all(
        self, updates: Iterable[Update], now: float, src: Address | None = None
    ) -> list[Action]:
        actions: list[Action] = []
        for u in updates:
            actions += self._apply(u, now, src)
        return actions

    def _apply(self, u: Update, now: float, src: Address | None = None) -> list[Action]:
        """Apply one piece of news; ``src`` sent it (to answer news about ourselves)."""
        try:
            kind = UpdateKind(u.kind)
        except ValueError:
            self.stats.stale_updates += 1
            return []
        if u.name == self.me.name:
            return self._about_me(kind, u, now, src)
        m = self.members.get(u.name)
        if kind == UpdateKind.ALIVE:
            return self._apply_alive(m, u, now)
        if m is None:
            if kind in (UpdateKind.FAILED, UpdateKind.LEFT):
                # A tombstone for a member we never saw: it blocks stale news of it.
                status = Status.FAILED if kind == UpdateKind.FAILED else Status.LEFT
                self.members[u.name] = Member(u.name, "", 0, u.incarnation, status, now)
            return []
        if kind == UpdateKind.SUSPECT:
            newer = (m.status == Status.ALIVE and u.incarnation >= m.incarnation) or (
                m.status == Status.SUSPECT and u.incarnation > m.incarnation
            )
            if not newer:
                self.stats.stale_updates += 1
                return []
            m.status, m.incarnation, m.changed_at = Status.SUSPECT, u.incarnation, now
            m.suspected_by = u.by
            self._suspicion_deadline[m.name] = now + self.config.cleanup_time
            self.broadcasts.push(u)
            return [Event("suspected", m.name, m.incarnation, f"suspected by {u.by or '?'}")]
        # FAILED or LEFT
        if not (m.live and u.incarnation >= m.incarnation):
            self.stats.stale_updates += 1
            return []
        status = Status.FAILED if kind == UpdateKind.FAILED else Status.LEFT
        m.status, m.incarnation, m.changed_at = status, u.incarnation, now
        self._suspicion_deadline.pop(m.name, None)
        self._drop_probes_of(m.name)
        self.broadcasts.push(u)
        if status == Status.LEFT:
            self._lost.pop(m.name, None)
            return [Event("left", m.name, m.incarnation, "it announced its departure")]
        self._remember_lost(m, now)
        self.stats.failures += 1
        return [Event("failed", m.name, m.incarnation, f"declared failed by {u.by or '?'}")]

    def _apply_alive(self, m: Member | None, u: Update, now: float) -> list[Action]:
        if m is None:
            self.members[u.name] = Member(u.name, u.host, u.port, u.incarnation, Status.ALIVE, now)
            self._lost.pop(u.name, None)
            self.broadcasts.push(u)
            return [Event("joined", u.name, u.incarnation, f"at {u.host}:{u.port}")]
        if u.incarnation <= m.incarnation:
            self.stats.stale_updates += 1
            return []
        self._lost.pop(m.name, None)
        old_status, old_inc = m.status, m.incarnation
        m.status, m.incarnation, m.changed_at = Status.ALIVE, u.incarnation, now
        if u.host:
            m.host, m.port = u.host, u.port
        self._suspicion_deadline.pop(m.name, None)
        self.broadcasts.push(u)
        if (m.name, old_inc) in self._raised:
            self._raised.discard((m.name, old_inc))
            self.stats.false_positives += 1
        if old_status == Status.SUSPECT:
            return [Event("refuted", m.name, m.incarnation, f"refuted suspicion at {old_inc}")]
        if old_status in (Status.FAILED, Status.LEFT):
            detail = f"was {old_status.label} at {old_inc}"
            return [Event("rejoined", m.name, m.incarnation, detail)]
        return []

    def _about_me(
        self, kind: UpdateKind, u: Update, now: float, src: Address | None = None
    ) -> list[Action]:
        if kind == UpdateKind.ALIVE and u.incarnation <= self.incarnation:
            return []
        # A sender that is not one of our live members (one we removed, say, across a
        # partition that has healed) would never hear our refutation by gossip: it
        # gets it directly.
        outsider = src is not None and src not in {
            m.address for m in self.live_members() if m.name != self.me.name
        }
        if kind != UpdateKind.ALIVE and u.incarnation < self.incarnation:
            if outsider and src is not None:
                # Old news of us, from someone who missed our refutation: tell it.
                current = _update_for(self.members[self.me.name])
                return [Send(src, Gossip(self.me.name, (current,)))]
            return []
        # Someone believes we are suspect, failed, gone, or alive at an incarnation
        # of a previous life: overrule it.
        if kind == UpdateKind.SUSPECT:
            self.stats.suspected_self += 1
        elif kind == UpdateKind.FAILED:
            self.stats.declared_failed_self += 1
        self.incarnation = u.incarnation + 1
        me = self.members[self.me.name]
        me.incarnation = self.incarnation
        alive = _update_for(me)
        self.broadcasts.push(alive)
        # Tell every live member at once, as a join does: any of them may be running
        # a cleanup timer on us, and gossip alone reaches only most of them in time
        # (below 10 members each update goes to just 4 random members per holder).
        actions: list[Action] = [
            Send(m.address, Gossip(self.me.name, (alive,)))
            for m in self.live_members()
            if m.name != self.me.name
        ]
        if outsider and src is not None:
            actions.append(Send(src, Gossip(self.me.name, (alive,))))
        what = {
            UpdateKind.ALIVE: "an older life",
            UpdateKind.SUSPECT: "a suspicion",
            UpdateKind.FAILED: "a failure verdict",
            UpdateKind.LEFT: "a stale departure",
        }[kind]
        by = f" by {u.by}" if u.by else ""
        detail = f"refuted {what}{by}"
        return [Event("self_refuted", self.me.name, self.incarnation, detail), *actions]

    # --- timers ----------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Do whatever is due at ``now``: probes, suspicion expiries, gossip, rounds."""
        if not self.active:
            return []
        actions: list[Action] = []
        actions += self._check_probes(now)
        actions += self._expire_suspicions(now)
        if now >= self._next_round:
            actions += self._probe_round(now)
            self._next_round += self.config.ping_duration
            if self._next_round <= now:
                self._next_round = now + self.config.ping_duration
            self._collect_garbage(now)
        if now >= self._next_sync:
            actions += self._sync(now)
            self._next_sync = now + self._sync_interval()
        if now >= self._next_reconnect:
            actions += self._reconnect(now)
            # Keep the phase: the next attempt is on the same grid, after now.
            interval = self.config.reconnect_interval
            behind = math.floor((now - self._next_reconnect) / interval) + 1
            self._next_reconnect += behind * interval
        if now >= self._next_gossip:
            actions += self._push(now)
        else:
            actions += self._push_if_fresh(now)
        return actions

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _probe_round(self, now: float) -> list[Action]:
        actions: list[Action] = []
        pending = {p.target for p in self._probes.values()}
        for name in self.monitors():
            if name in pending:
                continue
            m = self.members[name]
            seq = self._next_seq()
            timeout = self.config.ping_timeout
            self._probes[seq] = _Probe(name, m.incarnation, now, now + timeout / 2, now + timeout)
            self.stats.pings_sent += 1
            ping = Ping(seq, self.me.name, self.incarnation, self._piggyback(name))
            actions.append(Send(m.address, ping))
        return actions

    def _check_probes(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for seq, p in list(self._probes.items()):
            m = self.members.get(p.target)
            if m is None or not m.live:
                del self._probes[seq]
                continue
            if not p.indirect_sent and now >= p.indirect_at:
                p.indirect_sent = True
                relays = [
                    r
                    for r in self.live_members()
                    if r.name not in (self.me.name, p.target) and r.status == Status.ALIVE
                ]
                chosen = self.rng.sample(relays, min(len(relays), self.config.indirect_probes))
                p.relays = len(chosen)
                req = PingReq(seq, self.me.name, m.name, m.host, m.port)
                actions += [Send(r.address, req) for r in chosen]
            if now >= p.deadline:
                del self._probes[seq]
                actions += self._suspect(m, p, now)
        for seq, r in list(self._relays.items()):
            if now >= r.expires:
                del self._relays[seq]
        return actions

    def _suspect(self, m: Member, p: _Probe, now: float) -> list[Action]:
        if m.status != Status.ALIVE or m.incarnation != p.incarnation:
            return []  # already suspect, or it refuted meanwhile
        self.stats.suspicions += 1
        m.status, m.changed_at, m.suspected_by = Status.SUSPECT, now, self.me.name
        self._suspicion_deadline[m.name] = now + self.config.cleanup_time
        self._raised.add((m.name, m.incarnation))
        u = _update_for(m, by=self.me.name)
        self.broadcasts.push(u)
        detail = (
            f"no ack from {m.name} within {self.config.ping_timeout:g} s, "
            f"nor through {p.relays} indirect probe{'s' if p.relays != 1 else ''}"
        )
        # Tell the suspect at once: the sooner it hears, the sooner it refutes.
        return [
            Event("suspected", m.name, m.incarnation, detail),
            Send(m.address, Gossip(self.me.name, (u,))),
        ]

    def _expire_suspicions(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for name, deadline in list(self._suspicion_deadline.items()):
            if now < deadline:
                continue
            del self._suspicion_deadline[name]
            m = self.members.get(name)
            if m is None or m.status != Status.SUSPECT:
                continue
            m.status, m.changed_at = Status.FAILED, now
            self.stats.failures += 1
            self._drop_probes_of(name)
            self._remember_lost(m, now)
            self.broadcasts.push(_update_for(m, by=self.me.name))
            who = m.suspected_by or "?"
            detail = (
                f"suspected by {who}, no refutation within "
                f"{self.config.cleanup_time:g} s cleanup time"
            )
            actions.append(Event("failed", name, m.incarnation, detail))
        return actions

    def _drop_probes_of(self, name: str) -> None:
        for seq in [s for s, p in self._probes.items() if p.target == name]:
            del self._probes[seq]

    def _collect_garbage(self, now: float) -> None:
        horizon = now - self.config.tombstone_time
        for name in [n for n, m in self.members.items() if not m.live and m.changed_at < horizon]:
            if name != self.me.name:
                del self.members[name]
        self._raised = {(n, i) for (n, i) in self._raised if n in self.members}
        horizon = now - self.config.reconnect_timeout
        for name in [n for n, lost in self._lost.items() if lost.since < horizon]:
            del self._lost[name]

    # --- gossip ----------------------------------------------------------------

    def _budget(self) -> int:
        return self.config.max_datagram - _HEADER_ALLOWANCE

    def _piggyback(
        self, dest: str | None, count: bool = False, only: frozenset[str] | None = None
    ) -> tuple[Update, ...]:
        """Queued news for a message to ``dest``; only random pushes ``count``."""
        limit = self.retransmit_limit()
        return self.broadcasts.take(self._budget(), limit, prefer=dest, count=count, only=only)

    def _gossip_targets(self, k: int) -> list[Member]:
        others = [m for m in self.members.values() if m.live and m.name != self.me.name]
        return self.rng.sample(others, min(k, len(others)))

    def _push(self, now: float, only: frozenset[str] | None = None) -> list[Action]:
        """Send queued news (or only the updates about ``only``) to a few random members."""
        if only is None:
            self._next_gossip = now + self.config.gossip_interval
        actions: list[Action] = []
        for m in self._gossip_targets(self.config.gossip_fanout):
            updates = self._piggyback(m.name, count=True, only=only)
            if not updates:
                break
            actions.append(Send(m.address, Gossip(self.me.name, updates)))
        return actions

    def _push_if_fresh(self, now: float) -> list[Action]:
        # Fresh news goes out at once instead of waiting for the next interval:
        # detection latency then hardly depends on the gossip interval.  Only the
        # fresh news: the rest keeps its schedule, or a burst of news (many joins at
        # once) would spend every queued update's random sends within one instant,
        # while the senders' views still lack the members joining in that burst.
        fresh = self.broadcasts.fresh()
        if fresh:
            return self._push(now, only=fresh)
        return []

    def _sync_interval(self) -> float:
        return SYNC_INTERVAL_FACTOR * self.config.ping_duration

    def _sync(self, now: float) -> list[Action]:
        """Anti-entropy: push a sample of our whole view to one random member.

        Gossip is probabilistic; this makes convergence certain in the end (two
        members that joined at the same moment through different paths, a member
        that missed every retransmission of some news) at about one datagram per
        member per 15 s.
        """
        targets = self._gossip_targets(1)
        if not targets:
            return []
        records = [_update_for(m, by=m.suspected_by) for m in self.members.values()]
        self.rng.shuffle(records)
        chosen: list[Update] = []
        used = 0
        for u in records:
            size = encoded_size(u)
            if used + size > self._budget():
                break
            chosen.append(u)
            used += size
        return [Send(targets[0].address, Gossip(self.me.name, tuple(chosen)))]

    # --- reconnecting after a partition ---------------------------------------------

    def lost(self) -> list[str]:
        """Members removed as failed that we still try to reach, by name."""
        return sorted(self._lost, key=self._ring_key)

    def next_reconnect(self) -> float:
        """When the next Merge goes to a member removed as failed (if any is left)."""
        return self._next_reconnect

    def _remember_lost(self, m: Member, now: float) -> None:
        if m.host and m.port and m.name != self.me.name:
            self._lost[m.name] = _Lost(m.host, m.port, now)

    def _merge_records(self) -> tuple[Update, ...]:
        """Our live members as ALIVE updates, ourselves first, within one datagram.

        Suspects are left out: a suspect that is really gone would come back on the
        other side only to be detected again.
        """
        others = [
            m for m in self.live_members() if m.name != self.me.name and m.status == Status.ALIVE
        ]
        chosen = [_update_for(self.members[self.me.name])]
        used = encoded_size(chosen[0])
        updates = [_update_for(m) for m in others]
        if sum(encoded_size(u) for u in updates) + used > self._budget():
            self.rng.shuffle(updates)  # too many for one datagram: a different sample each time
        for u in updates:
            size = encoded_size(u)
            if used + size > self._budget():
                break
            chosen.append(u)
            used += size
        return tuple(chosen)

    def _reconnect(self, now: float) -> list[Action]:
        """Send our view to one random member removed as failed: is it back?"""
        if not self._lost:
            return []
        name = self.rng.choice(sorted(self._lost))
        lost = self._lost[name]
        self.stats.merges_sent += 1
        merge = Merge(self.me.name, True, self._merge_records())
        return [Send((lost.host, lost.port), merge)]

    def _merge(self, msg: Merge, src: Address, now: float) -> list[Action]:
        """Take in another member's view; answer with ours if asked.

        A listed member we hold as failed at that incarnation or above gets our
        verdict directly, so it refutes (to us too: we are not among its live
        members) and comes back here at a higher incarnation.
        """
        self.stats.merges_received += 1
        actions: list[Action] = []
        for u in msg.members:
            if u.kind != UpdateKind.ALIVE or not u.host:
                self.stats.stale_updates += 1
                continue
            m = self.members.get(u.name)
            if (
                u.name != self.me.name
                and m is not None
                and m.status == Status.FAILED
                and u.incarnation <= m.incarnation
            ):
                verdict = _update_for(m, by=self.me.name)
                actions.append(Send((u.host, u.port), Gossip(self.me.name, (verdict,))))
                continue
            actions += self._apply(u, now, src)
        if msg.reply:
            actions.append(Send(src, Merge(self.me.name, False, self._merge_records())))
        return actions
