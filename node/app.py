"""One cluster node: membership, its control port, and the console commands.

A node listens on one port number twice: UDP for the failure detector's
datagrams and TCP for requests (the introducer's snapshot requests and console
commands).  It joins through the introducer as soon as it starts, retrying in the
background while the introducer is unreachable, so it answers ``list_self`` at
once either way.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import trio

from config.topology import ClusterConfig, Node
from console.commands import CommandError, check, help_text
from membership.core import MembershipCore
from membership.service import MembershipService
from net.codec import Codec
from net.messages import (
    ConsoleReply,
    ConsoleRequest,
    ErrorReply,
    JoinRequest,
    MembershipSnapshot,
    SnapshotRequest,
)
from net.rpc import RpcError, RpcServer, call, frame_codec
from net.transport import Address, MeteredTransport, UdpTransport

# Backoff between attempts to reach the introducer at start-up: quick at first
# (it may be starting too), then every few seconds, logged each time.
JOIN_RETRY_INITIAL = 0.5
JOIN_RETRY_MAX = 5.0
INTRODUCER_TIMEOUT = 5.0


class NodeApp:
    def __init__(
        self,
        config: ClusterConfig,
        me: Node,
        *,
        test_mode: bool = False,
        drop_rate: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.me = me
        self.test_mode = test_mode
        self.drop_rate = drop_rate if test_mode else 0.0
        self.rng = rng or random.Random()
        self.log = logging.getLogger(f"node.{me.name}")
        self.core = MembershipCore(me, config.membership, config.ring_index(), self.rng)
        self.frames = frame_codec(config.secret_bytes)
        self.transport: MeteredTransport | None = None
        self.membership: MembershipService | None = None
        self._join_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._join_lock = trio.Lock()
        self.ready = trio.Event()

    # --- life cycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        udp = await UdpTransport.bind(self.me.host, self.me.port)
        self.transport = MeteredTransport(udp, self.drop_rate, random.Random(self.rng.random()))
        codec = Codec(self.config.secret_bytes, self.config.membership.max_datagram)
        self.membership = MembershipService(self.core, self.transport, codec, self.log)
        server = RpcServer(self.frames, self.handle_request)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(server.serve, self.me.host, self.me.port)
                await nursery.start(self.membership.run)
                self.log.info(
                    "%s listening on %s:%d (udp+tcp)%s",
                    self.me.name,
                    self.me.host,
                    self.me.port,
                    f", test mode, drop rate {self.drop_rate:g}" if self.test_mode else "",
                )
                self.ready.set()
                task_status.started()
                nursery.start_soon(self._join_until_admitted)
        finally:
            udp.close()

    async def shutdown(self) -> None:
        """Leave the cluster politely (so peers need not wait for detection), then stop."""
        if self.core.active:
            await self.leave()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # --- joining and leaving ----------------------------------------------------

    async def _join_until_admitted(self) -> None:
        delay = JOIN_RETRY_INITIAL
        attempts = 0
        last_error = ""
        with trio.CancelScope() as scope:
            self._join_scope = scope
            while not self.core.active:
                attempts += 1
                try:
                    await self.join()
                    if attempts > 1:
                        self.log.warning("%s joined after %d attempts", self.me.name, attempts)
                    break
                except CommandError as e:
                    # Say it once (and again if the reason changes), not at every retry.
                    level = logging.DEBUG if str(e) == last_error else logging.WARNING
                    self.log.log(level, "%s; retrying every %.0f s or less", e, JOIN_RETRY_MAX)
                    last_error = str(e)
                await trio.sleep(delay)
                delay = min(delay * 2, JOIN_RETRY_MAX)
        self._join_scope = None

    async def join(self) -> None:
        async with self._join_lock:
            if self.core.active:
                raise CommandError(f"{self.me.name} is already a member")
            assert self.membership is not None
            request = JoinRequest(self.me.name, self.me.host, self.me.port, self.core.incarnation)
            host, port = self.config.introducer
            try:
                reply = await call(self.config.introducer, self.frames, request, INTRODUCER_TIMEOUT)
            except RpcError as e:
                raise CommandError(f"cannot join: introducer {host}:{port}: {e}") from None
            if isinstance(reply, ErrorReply):
                raise CommandError(f"introducer refused the join: {reply.error}")
            if not isinstance(reply, MembershipSnapshot):
                raise CommandError(f"introducer sent {type(reply).__name__}, not a snapshot")
            await self.membership.join(reply.members)

    async def leave(self) -> None:
        if self._join_scope is not None:
            self._join_scope.cancel()
        async with self._join_lock:
            if not self.core.active:
                raise CommandError(f"{self.me.name} is not a member; use 'join'")
            assert self.membership is not None
            await self.membership.leave()

    # --- requests ----------------------------------------------------------------

    async def handle_request(self, request: Any, addr: Address) -> Any:
        if isinstance(request, SnapshotRequest):
            return MembershipSnapshot(self.core.snapshot() if self.core.active else ())
        if isinstance(request, ConsoleRequest):
            try:
                data = await self.execute(request.command, list(request.args))
            except CommandError as e:
                return ConsoleReply(False, {}, str(e))
            return ConsoleReply(True, data)
        return ErrorReply(f"unexpected request {type(request).__name__}")

    async def execute(self, command: str, args: list[str]) -> dict[str, Any]:
        """Run one console command; CommandError carries a one-line reason."""
        cmd = check(command, args)
        if cmd.local and command != "help":
            raise CommandError(f"{command} is a console command; nodes do not run it")
        if cmd.test_mode_only and not self.test_mode:
            raise CommandError(f"{command} is only available in test mode (start the node with -t)")
        if command == "join":
            await self.join()
            return {"ok": True}
        if command == "leave":
            await self.leave()
            return {"ok": True}
        if command == "list_mem":
            return self.list_mem()
        if command == "list_self":
            return {
                "name": self.me.name,
                "host": self.me.host,
                "port": self.me.port,
                "incarnation": self.core.incarnation,
                "member": self.core.active,
            }
        if command == "bps":
            assert self.transport is not None
            sent, received = self.transport.rates()
            return {
                "bytes_sent_per_s": round(sent, 1),
                "bytes_received_per_s": round(received, 1),
                "bytes_sent": self.transport.sent.total,
                "bytes_received": self.transport.received.total,
                "dropped_out": self.transport.dropped_out,
                "dropped_in": self.transport.dropped_in,
            }
        if command == "fpr":
            s = self.core.stats
            return {
                "false_positive_rate": s.false_positives / s.pings_sent if s.pings_sent else 0.0,
                "pings_sent": s.pings_sent,
                "false_positives": s.false_positives,
                "suspected_self": s.suspected_self,
                "declared_failed_self": s.declared_failed_self,
            }
        if command == "help":
            return {"help": help_text(args[0] if args else None)}
        raise CommandError(f"{command} is not handled by nodes")  # pragma: no cover

    def list_mem(self) -> dict[str, Any]:
        members = self.core.live_members() if self.core.active else []
        return {
            "self": self.me.name,
            "leader": self.core.leader() if self.core.active else None,
            "members": [
                {
                    "name": m.name,
                    "host": m.host,
                    "port": m.port,
                    "status": m.status.label,
                    "incarnation": m.incarnation,
                }
                for m in members
            ],
        }
