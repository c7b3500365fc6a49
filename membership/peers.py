"""Members by name, for the services built on membership (SDFS, IDunno) and their clients.

They all need the same few things: the live members in ring order, the leader (the
first of them), a member's address, a request to a member by name (answered
in-process when that member is this node), and a request to *the leader* that
rides out a change of leader.  :class:`ClusterView` is that interface;
:class:`Peers` implements it inside a node, from its own membership list.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from config.topology import ClusterConfig
from net.codec import Codec
from net.errors import ErrorKind, NotReady, from_failure
from net.messages import ErrorReply, Failure
from net.rpc import RPC_TIMEOUT, RpcError, call
from net.transport import Address

if TYPE_CHECKING:  # a console imports this module for call_leader: keep it light
    from membership.core import MembershipCore

log = logging.getLogger(__name__)

LocalHandler = Callable[[Any, Address], Awaitable[Any]]
Caller = Callable[[Address, Codec, Any, float], Awaitable[Any]]

# How long a request to the leader keeps being retried while leadership moves: a
# failure takes up to ping_duration + ping_timeout + cleanup_time (5 s by default) to
# be detected, then the new leader rebuilds its state from the others.
LEADER_RETRY_WINDOW = 30.0
# Back-off between attempts: quick at first (a rebuild takes a fraction of a second),
# then once a second.
LEADER_RETRY_FIRST = 0.1
LEADER_RETRY_MAX = 1.0


class Members(Protocol):
    """The members and how to reach each one: what :func:`call_leader` needs."""

    def ring(self) -> list[str]: ...

    def leader(self) -> str | None: ...

    def address(self, name: str) -> Address: ...

    async def call(self, name: str, request: Any, timeout: float = RPC_TIMEOUT) -> Any: ...


class ClusterView(Members, Protocol):
    """What a service or a client needs to know about the members and to reach them."""

    async def call_leader(
        self, request: Any, timeout: float = RPC_TIMEOUT, window: float = LEADER_RETRY_WINDOW
    ) -> Any:
        """``request`` to the leader, retried across changes of leader (:func:`call_leader`)."""
        ...


async def call_leader(
    view: Members,
    request: Any,
    timeout: float = RPC_TIMEOUT,
    window: float = LEADER_RETRY_WINDOW,
    refresh: Callable[[], Awaitable[None]] | None = None,
    max_delay: float = LEADER_RETRY_MAX,
) -> Any:
    """Send ``request`` to the leader and return its reply, whoever the leader is by then.

    Retried with back-off while there is no leader, the leader cannot be reached, or it
    answers NOT_READY (it is rebuilding, or it no longer is the leader).  Any other
    :class:`~net.messages.Failure` is raised as its typed error at once.  After
    ``window`` seconds: :class:`~net.errors.NotReady` with the last reason.  ``refresh``
    is awaited before each retry (a client outside the cluster re-reads membership).

    ``window`` bounds the whole call: an attempt that starts near its end gets only the
    time that is left, not the full ``timeout``, so the caller hears NotReady after at
    most ``window`` seconds (plus what ``refresh`` takes).  ``max_delay`` caps the
    back-off (a caller whose every late second idles a worker polls more often).
    """
    deadline = trio.current_time() + window
    delay = LEADER_RETRY_FIRST
    last = "no leader known"
    while True:
        leader = view.leader()
        if leader is None:
            last = "no leader known"
        else:
            left = deadline - trio.current_time()
            try:
                reply = await view.call(leader, request, min(timeout, left))
            except RpcError as e:
                last = f"leader {leader}: {e}"
            else:
                if not isinstance(reply, Failure):
                    return reply
                if reply.kind != ErrorKind.NOT_READY:
                    raise from_failure(reply)
                last = f"leader {leader}: {reply.error}"
        if trio.current_time() + delay >= deadline:  # no attempt with no time left
            raise NotReady(f"no leader answered for {window:g} s ({last})")
        await trio.sleep(delay)
        delay = min(delay * 2, max_delay)
        if refresh is not None:
            await refresh()


class Peers:
    """A :class:`ClusterView` inside a node, from its own membership list."""

    def __init__(
        self,
        core: MembershipCore,
        config: ClusterConfig,
        frames: Codec,
        local: LocalHandler,
        caller: Caller = call,
    ) -> None:
        self.core = core
        self.config = config
        self.frames = frames
        self.me = core.me
        # Requests to this node go straight to the service's own handler.
        self._local = local
        # How requests reach other members: TCP (net.rpc.call), or an in-memory
        # network in tests.
        self._caller = caller

    def ring(self) -> list[str]:
        """Live members (alive or suspect) in ring order; empty when not a member."""
        return [m.name for m in self.core.live_members()] if self.core.active else []

    def leader(self) -> str | None:
        return self.core.leader() if self.core.active else None

    def address(self, name: str) -> Address:
        m = self.core.members.get(name)
        if m is not None and m.port:
            return m.address
        node = self.config.node_named(name)
        if node is None:
            raise RpcError(f"unknown node {name}")
        return node.address

    async def call(self, name: str, request: Any, timeout: float = RPC_TIMEOUT) -> Any:
        """One request to member ``name``; RpcError if it cannot be reached.

        A request to this node is answered in-process, and answered as the network
        would: a handler that raises gives ``ErrorReply("internal error: ...")`` (as
        :class:`net.rpc.RpcServer` does), not an exception in the caller's task, so a
        caller on the leader sees what a caller elsewhere sees.
        """
        if name == self.me.name:
            try:
                return await self._local(request, self.me.address)
            except Exception as e:
                log.exception("local handler failed on %s", type(request).__name__)
                return ErrorReply(f"internal error: {type(e).__name__}: {e}")
        return await self._caller(self.address(name), self.frames, request, timeout)

    async def call_leader(
        self, request: Any, timeout: float = RPC_TIMEOUT, window: float = LEADER_RETRY_WINDOW
    ) -> Any:
        if not self.core.active:
            # Not waiting out the window: nothing changes until someone types join.
            raise NotReady(f"{self.me.name} is not in the cluster; use 'join' first")
        return await call_leader(self, request, timeout, window)
