"""One cluster node: membership, the file store, its control port, and the console commands.

A node listens on one port number twice: UDP for the failure detector's
datagrams and TCP for requests (the introducer's snapshot requests, SDFS
requests and file streams between nodes, and console commands).  It joins
through the introducer as soon as it starts, retrying in the background while
the introducer is unreachable, so it answers ``list_self`` at
once either way.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import trio

from config.topology import ClusterConfig, Node
from inference.client import InferenceClient
from inference.service import INFERENCE_REQUESTS, InferenceService
from membership.core import MembershipCore
from membership.service import MembershipService
from net import console_items
from net.codec import DatagramCodec
from net.errors import ClusterError, Conflict, NotReady, one_line
from net.messages import (
    ChainStream,
    ConsoleProgress,
    ConsoleReply,
    ConsoleRequest,
    DashboardRequest,
    ErrorReply,
    GetStream,
    JoinRequest,
    MembershipSnapshot,
    PutStream,
    SnapshotRequest,
)
from net.progress import Progress, throttled
from net.rpc import Connection, RpcError, RpcServer, call, frame_codec
from net.transport import Address, MeteredTransport, UdpTransport
from node import commands
from node.commands import CommandError, Context, Parsed
from node.dashboard import DashboardSource
from node.sdfs_files import SdfsFiles
from sdfs.service import SDFS_REQUESTS, SdfsService
from sdfs.transfer import TransferServer, make_transfer

# Console progress frames go out at most this often.
PROGRESS_INTERVAL = 0.25

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
        data_dir: Path,
        *,
        test_mode: bool = False,
        drop_rate: float = 0.0,
        rng: random.Random | None = None,
        http_port: int | None = None,
    ) -> None:
        self.config = config
        self.me = me
        # The dashboard and /metrics (web/): --http-port, else the cluster file's.
        self.http_port = http_port if http_port is not None else me.http_port
        self.test_mode = test_mode
        self.drop_rate = drop_rate if test_mode else 0.0
        self.rng = rng or random.Random()
        self.log = logging.getLogger(f"node.{me.name}")
        self.core = MembershipCore(me, config.membership, config.ring_index(), self.rng)
        self.frames = frame_codec(config.secret_bytes)
        self.data_dir = data_dir
        self.sdfs = SdfsService(
            config,
            me,
            data_dir / "sdfs",
            self.core,
            self.frames,
            make_transfer(config, self.frames),
            logging.getLogger(f"sdfs.{me.name}"),
        )
        self.transfers = TransferServer(
            self.sdfs.store.incoming,
            self.sdfs.store.root,
            node_name=me.name,
            arrivals=self.sdfs.store.arrivals,
        )
        files = SdfsFiles(self.sdfs.client, self.sdfs.store)
        self.inference = InferenceService(
            config,
            me,
            self.core,
            self.frames,
            files,
            data_dir,
            logging.getLogger(f"inference.{me.name}"),
            lease=self.sdfs.leader.lease_term,
        )
        self.context = Context(self.sdfs.client, self, InferenceClient(self.inference.view, files))
        # The dashboard's data (web/): answered while leading, fetched for the page.
        self.dashboard = DashboardSource(self)
        self.transport: MeteredTransport | None = None
        self.membership: MembershipService | None = None
        self.server: RpcServer | None = None
        self._join_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._join_lock = trio.Lock()
        self.ready = trio.Event()

    # --- life cycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        udp = await UdpTransport.bind(self.me.host, self.me.port)
        self.transport = MeteredTransport(udp, self.drop_rate, random.Random(self.rng.random()))
        codec = DatagramCodec(self.config.secret_bytes, self.config.membership.max_datagram)
        self.membership = MembershipService(self.core, self.transport, codec, self.log)
        self.membership.listeners.append(self.sdfs.on_membership_event)
        self.membership.listeners.append(self.inference.on_membership_event)
        server = self.server = RpcServer(
            self.frames,
            self.handle_request,
            stream_handler=self.handle_stream,
            streams=(PutStream, ChainStream, GetStream, ConsoleRequest),
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(server.serve, self.me.host, self.me.port)
                await nursery.start(self.membership.run)
                await nursery.start(self.sdfs.run)
                await nursery.start(self.inference.run)
                if self.http_port is not None:
                    await nursery.start(self._serve_http, self.http_port)
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
            with trio.CancelScope(shield=True):
                await self.sdfs.transfer.aclose()

    async def _serve_http(
        self, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The dashboard and /metrics on ``[http] bind``:port (web.app)."""
        # Imported here: a node without an HTTP port never loads the web stack.
        from config.secret import dashboard_token
        from config.topology import is_loopback
        from web import server
        from web.app import build_app

        bind = self.config.http.bind
        token = None if is_loopback(bind) else dashboard_token(self.config.secret_bytes)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, build_app(self, token), bind, port)
            self.log.info(
                "%s: dashboard at http://%s:%d/ and metrics at /metrics%s",
                self.me.name,
                self.me.host if bind in ("0.0.0.0", "::") else bind,
                port,
                "" if token is None else " (token: python -m config.secret dashboard-token)",
            )
            task_status.started()

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
                except ClusterError as e:
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
                raise Conflict(f"{self.me.name} is already a member")
            assert self.membership is not None
            request = JoinRequest(self.me.name, self.me.host, self.me.port, self.core.incarnation)
            host, port = self.config.introducer
            try:
                reply = await call(self.config.introducer, self.frames, request, INTRODUCER_TIMEOUT)
            except RpcError as e:
                raise NotReady(f"cannot join: introducer {host}:{port}: {e}") from None
            if isinstance(reply, ErrorReply):
                raise ClusterError(f"introducer refused the join: {reply.error}")
            if not isinstance(reply, MembershipSnapshot):
                raise ClusterError(f"introducer sent {type(reply).__name__}, not a snapshot")
            await self.membership.join(reply.members)

    async def leave(self) -> None:
        if self._join_scope is not None:
            self._join_scope.cancel()
        async with self._join_lock:
            if not self.core.active:
                raise Conflict(f"{self.me.name} is not a member; use 'join'")
            assert self.membership is not None
            await self.membership.leave()

    # --- requests ----------------------------------------------------------------

    async def handle_request(self, request: Any, addr: Address) -> Any:
        if isinstance(request, SnapshotRequest):
            return MembershipSnapshot(self.core.snapshot() if self.core.active else ())
        if isinstance(request, SDFS_REQUESTS):
            return await self.sdfs.handle(request, addr)
        if isinstance(request, INFERENCE_REQUESTS):
            return await self.inference.handle(request, addr)
        if isinstance(request, DashboardRequest):
            return await self.dashboard.answer(request)
        return ErrorReply(f"unexpected request {type(request).__name__}")

    async def handle_stream(self, request: Any, conn: Connection) -> Any:
        if isinstance(request, ConsoleRequest):
            return await self._console_request(request, conn)
        return await self.transfers.handle(request, conn)

    async def _console_request(self, request: ConsoleRequest, conn: Connection) -> ConsoleReply:
        """Run a console command for a remote console, streaming progress frames meanwhile.

        Commands that read or write a LOCAL path are refused: the console runs those
        itself and streams the bytes, so this node never opens a path named in a
        request."""
        pending: list[ConsoleProgress] = []
        wake = trio.Event()

        def send(done: int, total: int, label: str) -> None:
            pending[:] = [ConsoleProgress(done, total, label)]
            wake.set()

        progress = throttled(send, PROGRESS_INTERVAL, trio.current_time)

        async def sender() -> None:
            nonlocal wake
            while True:
                await wake.wait()
                wake = trio.Event()
                while pending:
                    await conn.send(pending.pop())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            try:
                parsed = commands.parse(request.command, list(request.args))
                data = await commands.run(parsed, self.context, progress, remote=True)
                reply = ConsoleReply(True, data)
            except CommandError as e:
                reply = ConsoleReply(False, {}, str(e))
            except Exception as e:  # a handler bug: the console hears one line, as for any
                self.log.exception("console command %r failed", request.command[:40])
                reply = ConsoleReply(
                    False, {}, one_line(f"internal error: {type(e).__name__}: {e}")
                )
            nursery.cancel_scope.cancel()
        if reply.ok:  # a list too long for one frame goes ahead in pieces
            pieces, data = console_items.split(reply.data)
            for piece in pieces:
                await conn.send(piece)
            reply = ConsoleReply(True, data)
        return reply

    async def execute(self, parsed: Parsed, progress: Progress | None = None) -> dict[str, Any]:
        """Run a command typed at this node's own console; CommandError carries a one-line
        reason.  LOCAL paths name files on this machine, as for any console."""
        return await commands.run(parsed, self.context, progress)

    # --- what the command table's handlers use (node.commands.NodeOps) ------------

    def list_self(self) -> dict[str, Any]:
        return {
            "name": self.me.name,
            "host": self.me.host,
            "port": self.me.port,
            "incarnation": self.core.incarnation,
            "member": self.core.active,
            # What peers (or strangers) sent that was dropped, by reason: TCP frames
            # and UDP datagrams that were oversize, forged (bad_mac), malformed or out
            # of range; and what went wrong on our side instead of ending the node.
            "rejected": {
                "frames": dict(self.frames.rejected),
                "datagrams": dict(self.membership.codec.rejected) if self.membership else {},
            },
            "errors": {
                "rpc": dict(self.server.errors) if self.server else {},
                "membership": dict(self.membership.errors) if self.membership else {},
            },
        }

    def bps(self) -> dict[str, Any]:
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

    def fpr(self) -> dict[str, Any]:
        s = self.core.stats
        return {
            "false_positive_rate": s.false_positives / s.pings_sent if s.pings_sent else 0.0,
            "pings_sent": s.pings_sent,
            "false_positives": s.false_positives,
            "suspected_self": s.suspected_self,
            "declared_failed_self": s.declared_failed_self,
        }

    def stored(self) -> dict[str, Any]:
        return {"node": self.me.name, "files": self.sdfs.store.names()}

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
