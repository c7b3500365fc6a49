"""Members by name, for the services built on membership (SDFS, IDunno).

Both need the same few things: the live members in ring order, the leader (the
first of them), a member's address, and a request to a member by name, answered
in-process when that member is this node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from config.topology import ClusterConfig
from membership.core import MembershipCore
from net.codec import Codec
from net.rpc import RpcError, call
from net.transport import Address

LocalHandler = Callable[[Any, Address], Awaitable[Any]]


class Peers:
    def __init__(
        self,
        core: MembershipCore,
        config: ClusterConfig,
        frames: Codec,
        local: LocalHandler,
    ) -> None:
        self.core = core
        self.config = config
        self.frames = frames
        self.me = core.me
        # Requests to this node go straight to the service's own handler.
        self._local = local

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

    async def call(self, name: str, request: Any, timeout: float = 5.0) -> Any:
        """One request to member ``name``; RpcError if it cannot be reached."""
        if name == self.me.name:
            return await self._local(request, self.me.address)
        return await call(self.address(name), self.frames, request, timeout)
