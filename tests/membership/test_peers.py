"""Peers and call_leader (membership.peers) on the in-memory RPC, at exact virtual times.

H3 asks; H1 (the first on the ring) leads, H2 follows.  H3's membership is a bare
MembershipCore that knows all three (no membership traffic: these tests are about
the RPC layer), and its Peers reach H1 and H2 through a MemoryRpc.  Every server
answers from a script, so each test fixes what the leader says on each attempt and
asserts exactly when each attempt happened.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
import trio

from config.topology import ClusterConfig, Node
from membership import peers as peers_module
from membership.core import MembershipCore
from membership.peers import Peers, call_leader
from net.errors import ErrorKind, NotFound, NotReady
from net.memrpc import MemoryRpc
from net.messages import (
    ConsoleReply,
    ConsoleRequest,
    ErrorReply,
    Failure,
    Gossip,
    MemberRecord,
    Status,
    Update,
    UpdateKind,
)
from net.rpc import RPC_TIMEOUT, RpcError, frame_codec
from net.transport import Address

NODES = tuple(Node(f"H{i}", "10.0.0.1", 8000 + i) for i in range(1, 4))
H1, H2, H3 = NODES
CONFIG = ClusterConfig(nodes=NODES, secret="peers-secret")
FRAMES = frame_codec(CONFIG.secret_bytes)
REQUEST = ConsoleRequest("leader-only")
OK = ConsoleReply(True, {"done": True})
NOT_READY = Failure(int(ErrorKind.NOT_READY), "rebuilding the file table")

# The back-off these tests' times are computed from.
assert (peers_module.LEADER_RETRY_FIRST, peers_module.LEADER_RETRY_MAX) == (0.1, 1.0)
assert peers_module.LEADER_RETRY_WINDOW == 30.0


class Script:
    """A server that answers from a list (the last answer repeats) and notes when."""

    def __init__(self, name: str, answers: Sequence[Any]) -> None:
        self.name = name
        self.answers = list(answers)
        self.asked: list[float] = []

    async def __call__(self, request: Any, addr: Address) -> Any:
        self.asked.append(trio.current_time())
        return self.answers[min(len(self.asked), len(self.answers)) - 1]


def member_core(me: Node = H3) -> MembershipCore:
    """A core that knows H1..H3 alive, as after a join; its own sends go nowhere."""
    core = MembershipCore(me, CONFIG.membership, CONFIG.ring_index())
    records = [MemberRecord(n.name, n.host, n.port, 0, int(Status.ALIVE)) for n in NODES]
    core.start(trio.current_time(), records)
    return core


def declare_failed(core: MembershipCore, name: str) -> None:
    """The news a member would gossip once it removed ``name``."""
    update = Update(int(UpdateKind.FAILED), name, 0, by="H2")
    core.on_message(Gossip("H2", (update,)), H2.address, trio.current_time())


class World:
    """H3's Peers on a MemoryRpc where H1 and H2 answer from scripts."""

    def __init__(self, nursery: trio.Nursery, h1: Sequence[Any], h2: Sequence[Any] = (OK,)):
        self.rpc = MemoryRpc(nursery)
        self.h1, self.h2 = Script("H1", h1), Script("H2", h2)
        self.rpc.serve(H1.address, frame_codec(CONFIG.secret_bytes), self.h1)
        self.rpc.serve(H2.address, frame_codec(CONFIG.secret_bytes), self.h2)
        self.local = Script("H3", [ConsoleReply(True, {"local": True})])
        self.core = member_core()
        self.peers = Peers(self.core, CONFIG, FRAMES, self.local, self.rpc.caller(H3.address))
        self.start = trio.current_time()

    def times(self, script: Script) -> list[float]:
        return [round(t - self.start, 9) for t in script.asked]

    def now(self) -> float:
        return round(trio.current_time() - self.start, 9)


# --- call_leader --------------------------------------------------------------------------


async def test_a_leader_that_answers_is_asked_once(nursery, autojump_clock):
    w = World(nursery, [OK])
    assert w.peers.leader() == "H1"
    assert await w.peers.call_leader(REQUEST) == OK
    assert (w.times(w.h1), w.now()) == ([0.0], 0.0)


async def test_not_ready_twice_then_success_follows_the_back_off(nursery, autojump_clock):
    w = World(nursery, [NOT_READY, NOT_READY, OK])
    assert await w.peers.call_leader(REQUEST) == OK
    assert w.times(w.h1) == [0.0, 0.1, 0.3]
    assert w.now() == 0.3


async def test_a_crashed_leader_for_the_whole_window_gives_not_ready(nursery, autojump_clock):
    w = World(nursery, [OK])
    w.rpc.crash(H1.address)
    with pytest.raises(NotReady) as caught:
        await w.peers.call_leader(REQUEST)
    # Refusals are immediate, so the attempts fall on the back-off alone: 0.1, 0.2,
    # 0.4, 0.8, then every second; the one at 30.5 would be past the window.
    attempts = [0.0, 0.1, 0.3, 0.7, 1.5] + [k + 0.5 for k in range(2, 30)]
    assert w.now() == attempts[-1] == 29.5
    assert w.rpc.failures == {"refused": len(attempts)}
    assert str(caught.value) == (
        "no leader answered for 30 s (leader H1: cannot reach 10.0.0.1:8001: Connection refused)"
    )


async def test_a_leader_behind_a_partition_gives_not_ready_at_the_window(nursery, autojump_clock):
    w = World(nursery, [OK])
    w.rpc.partition([H3.address], [H1.address, H2.address])
    with pytest.raises(NotReady) as caught:
        await w.peers.call_leader(REQUEST)
    # Each attempt waits out its 5 s timeout, then the back-off.  The last one starts
    # at 27.5 with only 2.5 s of the window left, and gets only those.
    assert w.now() == 30.0
    assert w.rpc.failures == {"timeout": 6}  # at 0, 5.1, 10.3, 15.7, 21.5, 27.5
    assert str(caught.value) == (
        "no leader answered for 30 s (leader H1: 10.0.0.1:8001 did not answer within 2.5 s)"
    )
    assert w.h1.asked == []


async def test_a_typed_failure_is_raised_at_once_without_retry(nursery, autojump_clock):
    w = World(nursery, [Failure(int(ErrorKind.NOT_FOUND), "no such file: a.jpg")])
    with pytest.raises(NotFound, match=r"^no such file: a\.jpg$"):
        await w.peers.call_leader(REQUEST)
    assert (w.times(w.h1), w.now()) == ([0.0], 0.0)


async def test_an_error_reply_is_returned_for_the_caller_to_judge(nursery, autojump_clock):
    crash = ErrorReply("internal error: KeyError: 'x'")
    w = World(nursery, [crash])
    assert await w.peers.call_leader(REQUEST) == crash
    assert w.times(w.h1) == [0.0]


async def test_leadership_moving_mid_retry_is_followed(nursery, autojump_clock):
    w = World(nursery, [OK], [OK])
    w.rpc.crash(H1.address)

    async def h1_removed_at_one() -> None:
        await trio.sleep(1.0)
        declare_failed(w.core, "H1")

    nursery.start_soon(h1_removed_at_one)
    assert await w.peers.call_leader(REQUEST) == OK
    # Refused at 0, 0.1, 0.3 and 0.7; at 1.0 H3 learns H1 failed, so the attempt at
    # 1.5 goes to H2, the new leader.
    assert w.rpc.failures == {"refused": 4}
    assert w.times(w.h2) == [1.5]
    assert w.peers.leader() == "H2"


async def test_refresh_is_awaited_between_attempts_and_its_time_counts(autojump_clock):
    class ClientView:
        """A client outside the cluster: it learns the leader only by refreshing."""

        def __init__(self) -> None:
            self.known: str | None = None
            self.log: list[tuple[float, str]] = []
            self.calls = 0
            self.start = trio.current_time()

        def ring(self) -> list[str]:
            return [] if self.known is None else [self.known]

        def leader(self) -> str | None:
            return self.known

        def address(self, name: str) -> Address:
            return H1.address

        async def call(self, name: str, request: Any, timeout: float = RPC_TIMEOUT) -> Any:
            self.log.append((round(trio.current_time() - self.start, 9), f"call {name}"))
            self.calls += 1
            return NOT_READY if self.calls < 3 else OK

        async def refresh(self) -> None:
            await trio.sleep(0.05)  # reading membership takes a while
            self.log.append((round(trio.current_time() - self.start, 9), "refreshed"))
            self.known = "H1"

    view = ClientView()
    assert await call_leader(view, REQUEST, refresh=view.refresh) == OK
    # No leader at 0; then each retry is back-off, refresh (0.05 s), attempt.
    assert view.log == [
        (0.15, "refreshed"),
        (0.15, "call H1"),
        (0.4, "refreshed"),
        (0.4, "call H1"),
        (0.85, "refreshed"),
        (0.85, "call H1"),
    ]


async def test_the_reason_given_is_the_last_one_even_when_no_leader_is_known(autojump_clock):
    class ForgetfulView:
        """Knows H1 until its first call fails, then no leader at all."""

        def __init__(self) -> None:
            self.known: str | None = "H1"

        def ring(self) -> list[str]:
            return []

        def leader(self) -> str | None:
            return self.known

        def address(self, name: str) -> Address:
            return H1.address

        async def call(self, name: str, request: Any, timeout: float = RPC_TIMEOUT) -> Any:
            self.known = None
            raise RpcError("cannot reach 10.0.0.1:8001: Connection refused")

    start = trio.current_time()
    with pytest.raises(NotReady, match=r"^no leader answered for 2 s \(no leader known\)$"):
        await call_leader(ForgetfulView(), REQUEST, window=2.0)
    assert trio.current_time() - start == pytest.approx(1.5)  # 0, .1, .3, .7, 1.5


# --- Peers.call ---------------------------------------------------------------------------


async def test_a_call_to_itself_goes_to_the_local_handler_not_the_network(nursery, autojump_clock):
    w = World(nursery, [OK])
    reply = await w.peers.call("H3", REQUEST)
    assert reply == ConsoleReply(True, {"local": True})
    assert w.times(w.local) == [0.0]
    assert (w.rpc.delivered, w.rpc.failed, sum(w.rpc.served.values())) == (0, 0, 0)
    assert not w.rpc.serving(H3.address)  # H3 is not even on the network
    # Others go over it.
    assert await w.peers.call("H2", REQUEST) == OK
    assert w.rpc.delivered == 1


async def test_a_local_handler_that_raises_answers_as_a_remote_one_does(
    nursery, autojump_clock, caplog
):
    caplog.set_level(logging.ERROR, logger="membership.peers")
    w = World(nursery, [OK])

    async def broken(request: Any, addr: Address) -> Any:
        raise KeyError("x")

    peers = Peers(w.core, CONFIG, FRAMES, broken, w.rpc.caller(H3.address))
    assert await peers.call("H3", REQUEST) == ErrorReply("internal error: KeyError: 'x'")
    assert "local handler failed on ConsoleRequest" in caplog.text


async def test_peers_take_the_network_call_unchanged(nursery, autojump_clock):
    w = World(nursery, [OK])
    peers = Peers(w.core, CONFIG, FRAMES, w.local, caller=w.rpc.call)
    assert await peers.call_leader(REQUEST) == OK
    assert w.times(w.h1) == [0.0]


async def test_an_unknown_member_is_an_rpc_error(nursery, autojump_clock):
    w = World(nursery, [OK])
    with pytest.raises(RpcError, match="unknown node H9"):
        await w.peers.call("H9", REQUEST)


async def test_a_node_outside_the_cluster_is_told_at_once_not_after_the_window(autojump_clock):
    """Nothing changes for a node that left until someone types join: no 30 s wait."""
    core = MembershipCore(H3, CONFIG.membership, CONFIG.ring_index())  # never joined
    rpc_calls: list[Any] = []

    async def never(addr: Address, frames: Any, request: Any, timeout: float) -> Any:
        rpc_calls.append(request)
        raise AssertionError("no request should leave a node that is not a member")

    async def local(request: Any, addr: Address) -> Any:
        raise AssertionError("not a member: nothing to ask itself either")

    peers = Peers(core, CONFIG, FRAMES, local, never)
    start = trio.current_time()
    with pytest.raises(NotReady, match=r"^H3 is not in the cluster; use 'join' first$"):
        await peers.call_leader(REQUEST)
    assert trio.current_time() == start and rpc_calls == []
