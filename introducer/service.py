"""The admission service: hands a joining node the current membership.

The introducer is not a member and keeps no authority over membership; running
members never need it.  To answer a join it asks a live member for that member's
view (a fresh snapshot per join, so a restarted or long-idle introducer is never
stale), adds the nodes it admitted in the last few seconds (their own
announcements may not have reached that member yet, and two nodes admitted at the
same moment must learn of each other), and returns the result, tombstones
included, so a restarted node can choose an incarnation above its previous life.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from config.topology import ClusterConfig
from membership.checks import MAX_COUNTER, host_problem
from net.messages import (
    ErrorReply,
    JoinRequest,
    MemberRecord,
    MembershipSnapshot,
    SnapshotRequest,
    Status,
)
from net.rpc import RpcError, call, frame_codec
from net.transport import Address

log = logging.getLogger("introducer")

# How long a newly admitted node is added to snapshots by the introducer itself:
# long enough for its own announcement to reach every member many times over.
RECENT_JOIN_WINDOW = 10.0
# Per-member wait when asking for a snapshot; members answer in milliseconds.
SNAPSHOT_TIMEOUT = 0.5
# Members tried per refresh before answering from what we already know.
MAX_SNAPSHOT_TRIES = 5


class Introducer:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.codec = frame_codec(config.secret_bytes)
        self.view: dict[str, MemberRecord] = {}
        self.recent: dict[str, tuple[MemberRecord, float]] = {}
        self.admitted = 0
        self._lock = trio.Lock()

    def _candidates(self) -> list[Address]:
        """Members to ask for a view: live ones we know first, then configured nodes."""
        seen: set[Address] = set()
        out: list[Address] = []
        live = [r for r in self.view.values() if r.status <= Status.SUSPECT]
        for addr in [(r.host, r.port) for r in live] + [n.address for n in self.config.nodes]:
            if addr not in seen and addr[1]:
                seen.add(addr)
                out.append(addr)
        return out

    async def refresh(self, exclude: Address | None = None) -> str | None:
        """Replace our view with a live member's; returns who answered, if anyone."""
        tries = 0
        for addr in self._candidates():
            if addr == exclude:
                continue
            if tries >= MAX_SNAPSHOT_TRIES:
                break
            tries += 1
            try:
                reply = await call(addr, self.codec, SnapshotRequest(), SNAPSHOT_TIMEOUT)
            except RpcError as e:
                log.debug("no snapshot from %s:%d: %s", addr[0], addr[1], e)
                continue
            if isinstance(reply, MembershipSnapshot) and reply.members:
                self.view = {r.name: r for r in reply.members}
                return f"{addr[0]}:{addr[1]}"
        return None

    def _snapshot(self, now: float) -> tuple[MemberRecord, ...]:
        merged = dict(self.view)
        for name, (record, at) in list(self.recent.items()):
            if now - at > RECENT_JOIN_WINDOW:
                del self.recent[name]
                continue
            known = merged.get(name)
            if known is None or known.incarnation < record.incarnation:
                merged[name] = record
        return tuple(merged.values())

    async def admit(self, req: JoinRequest) -> MembershipSnapshot:
        async with self._lock:
            source = await self.refresh(exclude=(req.host, req.port))
            now = trio.current_time()
            snapshot = self._snapshot(now)
            # The joiner will take an incarnation above any record of its past life.
            past = [r.incarnation for r in snapshot if r.name == req.name]
            incarnation = max([req.incarnation, *[p + 1 for p in past]])
            record = MemberRecord(req.name, req.host, req.port, incarnation, int(Status.ALIVE))
            self.recent[req.name] = (record, now)
            self.view[req.name] = record
            self.admitted += 1
            live = sum(1 for r in snapshot if r.status <= Status.SUSPECT and r.name != req.name)
            log.info(
                "admitted %s at %s:%d (view from %s, %d other live members)",
                req.name,
                req.host,
                req.port,
                source or "no member: it is the first",
                live,
            )
            return MembershipSnapshot(snapshot)

    async def handle(self, request: Any, addr: Address) -> Any:
        if isinstance(request, JoinRequest):
            if not request.name or not 1 <= request.port <= 65535:
                return ErrorReply("a join needs a name and a port in 1..65535")
            if host_problem(request.host):
                return ErrorReply(f"a join needs a usable address: {host_problem(request.host)}")
            if not 0 <= request.incarnation <= MAX_COUNTER:
                # Admitted, it would make the next join of this name ask for 2**64.
                return ErrorReply(f"a join needs an incarnation in 0..{MAX_COUNTER}")
            return await self.admit(request)
        if isinstance(request, SnapshotRequest):
            return MembershipSnapshot(self._snapshot(trio.current_time()))
        return ErrorReply(f"the introducer does not handle {type(request).__name__}")
