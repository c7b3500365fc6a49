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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from config.topology import ClusterConfig, Node
from console.commands import CommandError, check, help_text
from inference.client import InferenceClient
from inference.service import INFERENCE_REQUESTS, InferenceService
from membership.core import MembershipCore
from membership.service import MembershipService
from net.codec import Codec
from net.messages import (
    ConsoleProgress,
    ConsoleReply,
    ConsoleRequest,
    ErrorReply,
    GetStream,
    JoinRequest,
    MembershipSnapshot,
    PutStream,
    SnapshotRequest,
)
from net.rpc import Connection, RpcError, RpcServer, call, frame_codec
from net.transport import Address, MeteredTransport, UdpTransport
from node.inference_commands import inference_command
from node.sdfs_files import SdfsFiles
from sdfs.service import SDFS_REQUESTS, SdfsService
from sdfs.transfer import make_transfer
from sdfs.transfer_server import TransferServer

Progress = Callable[[int, int, str], None]
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
    ) -> None:
        self.config = config
        self.me = me
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
        files = SdfsFiles(self.sdfs)
        self.inference = InferenceService(
            config,
            me,
            self.core,
            self.frames,
            files,
            data_dir,
            logging.getLogger(f"inference.{me.name}"),
        )
        self.inference_client = InferenceClient(self.inference.view, files)
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
        self.membership.listeners.append(self.sdfs.on_membership_event)
        self.membership.listeners.append(self.inference.on_membership_event)
        server = RpcServer(
            self.frames,
            self.handle_request,
            stream_handler=self.handle_stream,
            streams=(PutStream, GetStream, ConsoleRequest),
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(server.serve, self.me.host, self.me.port)
                await nursery.start(self.membership.run)
                await nursery.start(self.sdfs.run)
                await nursery.start(self.inference.run)
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
        if isinstance(request, SDFS_REQUESTS):
            return await self.sdfs.handle(request, addr)
        if isinstance(request, INFERENCE_REQUESTS):
            return await self.inference.handle(request, addr)
        return ErrorReply(f"unexpected request {type(request).__name__}")

    async def handle_stream(self, request: Any, conn: Connection) -> Any:
        if isinstance(request, ConsoleRequest):
            return await self._console_request(request, conn)
        return await self.transfers.handle(request, conn)

    async def _console_request(self, request: ConsoleRequest, conn: Connection) -> ConsoleReply:
        """Run a console command, streaming progress frames to the client meanwhile."""
        last = [0.0]
        pending: list[ConsoleProgress] = []
        wake = trio.Event()

        def progress(done: int, total: int, label: str) -> None:
            now = trio.current_time()
            if done < total and now - last[0] < PROGRESS_INTERVAL:
                return
            last[0] = now
            pending[:] = [ConsoleProgress(done, total, label)]
            wake.set()

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
                data = await self.execute(request.command, list(request.args), progress)
                reply = ConsoleReply(True, data)
            except CommandError as e:
                reply = ConsoleReply(False, {}, str(e))
            nursery.cancel_scope.cancel()
        return reply

    async def execute(
        self, command: str, args: list[str], progress: Progress | None = None
    ) -> dict[str, Any]:
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
        if cmd.group == "sdfs":
            return await self._sdfs_command(command, args, progress)
        if cmd.group == "inference":
            if not self.core.active:
                raise CommandError(f"{self.me.name} is not in the cluster; use 'join' first")
            return await inference_command(self.inference_client, command, args, progress)
        if command == "help":
            return {"help": help_text(args[0] if args else None)}
        raise CommandError(f"{command} is not handled by nodes")  # pragma: no cover

    async def _sdfs_command(
        self, command: str, args: list[str], progress: Progress | None
    ) -> dict[str, Any]:
        s = self.sdfs
        if command == "put":
            return await s.put(_local(args[0]), args[1], progress)
        if command == "put-dir":
            return await s.put_dir(_local(args[0]), args[1], progress)
        if command == "get":
            return await s.get(args[0], _local(args[1]), progress)
        if command == "delete":
            return await s.delete(args[0])
        if command == "ls":
            return await s.ls(args[0])
        if command == "ls-all":
            return await s.ls_all(args[0] if args else "*")
        if command == "store":
            return s.stored()
        if command == "get-versions":
            if not args[1].isdigit():
                raise CommandError(f"N must be a whole number, got {args[1]!r}")
            return await s.get_versions(args[0], int(args[1]), _local(args[2]))
        raise CommandError(f"{command} is not an SDFS command")  # pragma: no cover

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


def _local(path: str) -> Path:
    """A LOCAL argument: relative to this process's directory, ~ expanded."""
    if "\0" in path:
        raise CommandError("local path contains a NUL character")
    return Path(path).expanduser()
