"""Several pure MembershipCores wired together, driven with explicit ``now`` values.

No trio, no clock, no sockets: :class:`CoreNet` is a small discrete-event loop.  It
asks every core for ``next_deadline()``, ticks the ones that are due, and delivers
what they send at once (a zero-delay network), in FIFO order, until nothing more
happens at that instant.  Every message goes through the real codec (seal, then
open), so a message that would not fit in a datagram or would not decode fails the
test instead of passing silently.

Because the cores' random generators are seeded and nothing else is random, a run is
fully deterministic, and tests can assert exact times.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from config.topology import MembershipConfig, Node
from membership.core import Action, Event, MembershipCore, Send
from net.codec import DatagramCodec
from net.messages import MemberRecord, Status
from net.transport import Address

SECRET = b"test-secret"


@dataclass(frozen=True)
class Delivery:
    """One datagram: when, from whom, to whom, what, and whether it arrived."""

    time: float
    src: str
    dst: str
    message: Any
    delivered: bool


DropRule = Callable[[float, str, str, Any], bool]


class CoreNet:
    """N members H1..HN on a ring, each a bare :class:`MembershipCore`."""

    def __init__(
        self,
        n: int,
        config: MembershipConfig | None = None,
        seed: int = 1,
        extra: Iterable[str] = (),
    ) -> None:
        self.config = config or MembershipConfig()
        ring_nodes = [Node(f"H{i}", "10.0.0.1", 8000 + i) for i in range(1, n + 1)]
        # Extra members are not in the cluster file: they sort after it, by name.
        extra_nodes = [Node(name, "10.0.0.2", 9000 + i) for i, name in enumerate(extra)]
        self.nodes = {node.name: node for node in ring_nodes + extra_nodes}
        self.ring = {node.name: i for i, node in enumerate(ring_nodes)}
        self.by_addr: dict[Address, str] = {nd.address: nd.name for nd in self.nodes.values()}
        self.rng = random.Random(seed)
        self.cores: dict[str, MembershipCore] = {}
        self.crashed: set[str] = set()
        self.drop_rules: list[DropRule] = []
        self.now = 0.0
        self.codec = DatagramCodec(SECRET, self.config.max_datagram, clock=lambda: self.now)
        self.events: list[tuple[float, str, Event]] = []
        self.sent: list[Delivery] = []

    # --- building ----------------------------------------------------------------

    def new_core(self, name: str) -> MembershipCore:
        return MembershipCore(
            self.nodes[name], self.config, self.ring, random.Random(self.rng.random())
        )

    def start(
        self, name: str, via: str | None = None, snapshot: Iterable[MemberRecord] | None = None
    ) -> MembershipCore:
        """Start (or restart) ``name`` now, with ``via``'s view or the given snapshot."""
        core = self.new_core(name)
        self.cores[name] = core
        self.crashed.discard(name)
        if snapshot is None:
            snapshot = self.cores[via].snapshot() if via is not None else ()
        self.carry_out(name, core.start(self.now, snapshot))
        return core

    def start_all(self) -> None:
        """Every node joins at time ``now``, each through the previous one's view."""
        previous: str | None = None
        for name in self.nodes:
            self.start(name, previous)
            previous = name

    def crash(self, name: str) -> None:
        """The member stops at once and says nothing more (kill -9)."""
        self.crashed.add(name)

    def leave(self, name: str) -> None:
        self.carry_out(name, self.cores[name].leave(self.now))

    # --- running -------------------------------------------------------------------

    def running(self) -> list[str]:
        return [n for n in self.cores if n not in self.crashed]

    def carry_out(self, owner: str, actions: list[Action]) -> None:
        """Record events and deliver sends (and whatever they cause) at ``now``."""
        queue: collections.deque[tuple[str, Action]] = collections.deque(
            (owner, a) for a in actions
        )
        while queue:
            who, action = queue.popleft()
            if isinstance(action, Event):
                self.events.append((self.now, who, action))
                continue
            assert isinstance(action, Send)
            dst = self.by_addr.get(action.addr)
            # The real codec both ways: an oversize message raises here.
            msg = self.codec.open(self.codec.seal(action.message))
            arrived = (
                dst is not None
                and dst in self.cores
                and dst not in self.crashed
                and who not in self.crashed
                and not any(rule(self.now, who, dst, msg) for rule in self.drop_rules)
            )
            self.sent.append(Delivery(self.now, who, dst or "?", msg, arrived))
            if arrived:
                assert dst is not None
                src = self.nodes[who].address
                queue.extend((dst, a) for a in self.cores[dst].on_message(msg, src, self.now))

    def next_deadline(self) -> float:
        return min((self.cores[n].next_deadline() for n in self.running()), default=math.inf)

    def run_until(self, t: float) -> None:
        """Advance virtual time to ``t``, doing every timer that falls due on the way."""
        steps = 0
        while True:
            due = self.next_deadline()
            if due > t:
                break
            self.now = max(self.now, due)
            for name in self.running():
                core = self.cores[name]
                if core.next_deadline() <= self.now:
                    self.carry_out(name, core.tick(self.now))
            steps += 1
            assert steps < 1_000_000, "a core keeps asking for time without progress"
        self.now = max(self.now, t)

    def run_for(self, dt: float) -> None:
        self.run_until(self.now + dt)

    def inject(self, dst: str, msg: Any, src: Address = ("10.9.9.9", 9999)) -> list[Action]:
        """Hand ``dst`` a message as if from ``src``; its answers are returned, not sent."""
        return self.cores[dst].on_message(msg, src, self.now)

    # --- looking -------------------------------------------------------------------

    def view(self, name: str) -> set[str]:
        return {m.name for m in self.cores[name].live_members()}

    def status(self, observer: str, name: str) -> Status | None:
        m = self.cores[observer].members.get(name)
        return m.status if m is not None else None

    def events_of(
        self, kind: str, name: str | None = None, observer: str | None = None
    ) -> list[tuple[float, str, Event]]:
        return [
            (t, who, e)
            for t, who, e in self.events
            if e.kind == kind
            and (name is None or e.name == name)
            and (observer is None or who == observer)
        ]

    def sends(
        self,
        kind: type[Any] | None = None,
        src: str | None = None,
        dst: str | None = None,
        since: float = -math.inf,
    ) -> list[Delivery]:
        return [
            d
            for d in self.sent
            if (kind is None or isinstance(d.message, kind))
            and (src is None or d.src == src)
            and (dst is None or d.dst == dst)
            and d.time >= since
        ]
