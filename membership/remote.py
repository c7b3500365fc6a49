"""The cluster as seen from outside it: a console or a script that talks to one node.

A process that is not a member (``python -m console``, a Python client) still needs
the live members in ring order, the leader and their addresses, to put and get
files itself rather than have a node open paths for it.  :class:`RemoteView` asks
one node for its membership snapshot (the same ``SnapshotRequest`` the introducer
uses) and implements :class:`~membership.peers.ClusterView` from it.  When a call
fails it re-reads the snapshot, from the node it was given or, if that one is gone,
from any member it knew, so a client rides out the failure of its own entry point.
"""

from __future__ import annotations

import contextlib
from typing import Any

from membership.peers import LEADER_RETRY_WINDOW, call_leader
from net.codec import Codec
from net.errors import NotReady
from net.messages import MemberRecord, MembershipSnapshot, SnapshotRequest, Status
from net.rpc import RPC_TIMEOUT, RpcError, call
from net.transport import Address

_LIVE = (int(Status.ALIVE), int(Status.SUSPECT))


class RemoteView:
    def __init__(self, entry: Address, frames: Codec) -> None:
        self.entry = entry
        self.frames = frames
        self._members: list[MemberRecord] = []

    async def refresh(self) -> None:
        """Re-read the members from the entry node (or any member known before)."""
        sources = [self.entry] + [
            (m.host, m.port) for m in self._members if (m.host, m.port) != self.entry
        ]
        last = ""
        for addr in sources:
            try:
                reply = await call(addr, self.frames, SnapshotRequest(), RPC_TIMEOUT)
            except RpcError as e:
                last = str(e)
                continue
            if isinstance(reply, MembershipSnapshot) and reply.members:
                self._members = [m for m in reply.members if m.status in _LIVE]
                return
            last = f"{addr[0]}:{addr[1]} is not in the cluster"
        raise NotReady(f"cannot learn the members: {last}")

    def ring(self) -> list[str]:
        return [m.name for m in self._members]

    def leader(self) -> str | None:
        return self._members[0].name if self._members else None

    def address(self, name: str) -> Address:
        for m in self._members:
            if m.name == name:
                return (m.host, m.port)
        raise RpcError(f"unknown node {name}")

    async def call(self, name: str, request: Any, timeout: float = RPC_TIMEOUT) -> Any:
        return await call(self.address(name), self.frames, request, timeout)

    async def call_leader(
        self, request: Any, timeout: float = RPC_TIMEOUT, window: float = LEADER_RETRY_WINDOW
    ) -> Any:
        async def refresh() -> None:
            # Keep what we knew if no one answers; the next attempt says why it fails.
            with contextlib.suppress(NotReady):
                await self.refresh()

        return await call_leader(self, request, timeout, window, refresh)
