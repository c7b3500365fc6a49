"""SDFS on one node: the replica it stores, the leader's duties, and the client side.

Every node runs this service.  It has three roles:

* replica: it keeps versions in its :class:`~sdfs.store.ReplicaStore` and answers
  Ingest / CommitVersion / AbortPut / StatRequest / InventoryRequest /
  DeleteReplica / ReplicateOrder / PeerInfoRequest;
* leader (only on the first live member in ring order): it rebuilds
  :class:`~sdfs.metadata.Metadata` from every live node's inventory when it
  becomes leader, grants versions, answers Locate / ListFiles / DeleteFile, and
  re-replicates files that lost copies as soon as a failure is detected;
* client: ``put``, ``get``, ``delete``, ``ls``, ... as the console commands run
  them on this node.  A client retries leader requests on its own while
  leadership moves (``LEADER_RETRY_WINDOW``).

A put is two-phase.  The data goes to every replica the leader named and lands
PENDING; once W replicas hold it, the client commits it on them and only then
reports success, so a put reported failed never becomes visible, and an
acknowledged one is on W nodes' disks before the user hears of it.  Stragglers
are committed in the background.  See :mod:`sdfs.metadata` for quorums and
placement.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from config.topology import ClusterConfig, Node
from console.commands import CommandError
from membership.core import Event, MembershipCore
from membership.peers import Peers
from net.codec import Codec
from net.messages import (
    AbortPut,
    CommitVersion,
    DeleteFile,
    DeleteReplica,
    ErrorReply,
    FileList,
    Ingest,
    Inventory,
    InventoryRequest,
    ListFiles,
    Locate,
    LocatedVersion,
    Location,
    PeerInfo,
    PeerInfoRequest,
    PutBegin,
    PutDone,
    PutGrant,
    ReplicateOrder,
    StatReply,
    StatRequest,
    StoreAck,
    VersionRecord,
    VersionState,
)
from net.rpc import RpcError
from net.transport import Address
from sdfs.metadata import Metadata, Repair, placement, read_quorum, write_quorum
from sdfs.names import BadName, check_name
from sdfs.store import ReplicaStore, StoreError, relative_data_path
from sdfs.transfer import (
    LocalTransfer,
    Peer,
    TcpTransfer,
    Transfer,
    TransferError,
    TransferResult,
)

Progress = Callable[[int, int, str], None]

# How long a client keeps retrying a leader request while leadership moves: a
# failure takes up to ping_duration + ping_timeout + cleanup_time (5 s) to be
# detected, then the new leader gathers inventories.
LEADER_RETRY_WINDOW = 30.0
# RPC timeouts: small requests, and requests that hash or copy a file (plus
# time per byte at a pessimistic 20 MB/s).
RPC_TIMEOUT = 5.0
BYTES_PER_SECOND_FLOOR = 20e6
# How often the leader checks for under-replicated files besides failure events.
REPAIR_INTERVAL = 2.0
# A pending copy whose put never finished is dropped after this long.
PENDING_TTL = 600.0

SDFS_REQUESTS = (
    PutBegin,
    PutDone,
    AbortPut,
    Locate,
    DeleteFile,
    ListFiles,
    Ingest,
    CommitVersion,
    StatRequest,
    InventoryRequest,
    DeleteReplica,
    ReplicateOrder,
    PeerInfoRequest,
)


def _io_timeout(size: int) -> float:
    return RPC_TIMEOUT + size / BYTES_PER_SECOND_FLOOR


def _committed(record: VersionRecord) -> VersionRecord:
    return VersionRecord(
        record.name,
        record.version,
        record.put_id,
        record.size,
        record.sha256,
        int(VersionState.COMMITTED),
    )


def _why(reply: Any) -> str:
    if isinstance(reply, (StoreAck, ErrorReply)):
        return reply.error
    return f"unexpected {type(reply).__name__}"


class NotReady(Exception):
    """This node cannot serve a leader request now (not leader, or rebuilding)."""


class SdfsService:
    def __init__(
        self,
        config: ClusterConfig,
        me: Node,
        root: Path,
        membership: MembershipCore,
        frames: Codec,
        transfer: Transfer,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.me = me
        self.membership = membership
        self.frames = frames
        self.transfer = transfer
        # Copies to and from ourselves.  Over tcp they go through our own port like
        # any other (one read of the file feeds every replica, and what arrives is
        # checked once); scp to ourselves would need our own sshd: a local copy then.
        self.local: Transfer = transfer if isinstance(transfer, TcpTransfer) else LocalTransfer()
        self.log = logger or logging.getLogger(f"sdfs.{me.name}")
        self.store = ReplicaStore(root, keep=config.versions_kept)
        self.peers = Peers(membership, config, frames, self.handle)
        self.replication = config.replication
        self.metadata: Metadata | None = None
        self.leader_state = "follower"  # follower | rebuilding | ready
        self._peers: dict[str, Peer] = {}
        self._wake_repair = trio.Event()
        self._leadership_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.repair_log: list[dict[str, Any]] = []
        self._reported_lost: set[str] = set()

    # --- life cycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._leadership_loop)
            nursery.start_soon(self._repair_loop)
            nursery.start_soon(self._gc_loop)
            task_status.started()

    def on_membership_event(self, event: Event, now: float) -> None:
        """Membership listener: wake the loops that care (called on the trio thread)."""
        if event.kind in ("failed", "left"):
            self._peers.pop(event.name, None)
            if self.metadata is not None:
                self.metadata.node_gone(event.name)
            self._wake_repair.set()
        if event.kind in ("joined", "rejoined"):
            self._peers.pop(event.name, None)
            if self.leader_state == "ready" and event.name != self.me.name and self._nursery:
                self._nursery.start_soon(self._absorb_inventory, event.name)
        self._leadership_changed.set()

    # --- membership helpers ----------------------------------------------------

    async def _peer(self, name: str) -> Peer:
        peer = self._peers.get(name)
        if peer is None:
            reply = await self.peers.call(name, PeerInfoRequest())
            if not isinstance(reply, PeerInfo):
                raise TransferError(f"{name} did not say where it keeps files")
            host, port = self.peers.address(name)
            node = self.config.node_named(name)
            peer = Peer(
                name=name,
                host=host,
                port=port,
                ssh_port=node.ssh_port if node else None,
                incoming_dir=reply.incoming_dir,
                store_dir=reply.store_dir,
            )
            self._peers[name] = peer
        return peer

    def _transfer_for(self, node: str) -> Transfer:
        return self.local if node == self.me.name else self.transfer

    # --- leadership ------------------------------------------------------------

    async def _leadership_loop(self) -> None:
        while True:
            leader = self.peers.leader()
            if leader == self.me.name and self.leader_state == "follower":
                await self._become_leader()
            elif leader != self.me.name and self.leader_state != "follower":
                self.log.info("%s is no longer the SDFS leader (now %s)", self.me.name, leader)
                self.leader_state, self.metadata = "follower", None
            with trio.move_on_after(1.0):
                await self._leadership_changed.wait()
            self._leadership_changed = trio.Event()

    async def _become_leader(self) -> None:
        self.leader_state = "rebuilding"
        started = trio.current_time()
        inventories: dict[str, list[VersionRecord]] = {}
        silent: list[str] = []

        async def gather(node: str) -> None:
            try:
                reply = await self.peers.call(node, InventoryRequest(), timeout=RPC_TIMEOUT)
            except RpcError:
                silent.append(node)
                return
            if isinstance(reply, Inventory):
                inventories[node] = list(reply.records)

        async with trio.open_nursery() as n:
            for node in self.peers.ring():
                n.start_soon(gather, node)
        metadata = Metadata(self.replication, self.config.versions_kept)
        metadata.rebuild(inventories)
        if self.peers.leader() != self.me.name:  # leadership moved on while we gathered
            self.leader_state = "follower"
            return
        self.metadata = metadata
        self.leader_state = "ready"
        self.log.warning(
            "%s is the SDFS leader: metadata rebuilt from %d nodes (%d files) in %.2f s%s",
            self.me.name,
            len(inventories),
            len(metadata.names()),
            trio.current_time() - started,
            f"; no answer from {', '.join(sorted(silent))}" if silent else "",
        )
        self._wake_repair.set()

    async def _absorb_inventory(self, node: str) -> None:
        """A node (re)joined: learn what it holds; tell it what was deleted meanwhile."""
        try:
            reply = await self.peers.call(node, InventoryRequest())
        except RpcError:
            return
        if not isinstance(reply, Inventory) or self.metadata is None:
            return
        for name, tombstone in self.metadata.add_inventory(node, reply.records):
            with contextlib.suppress(RpcError):
                await self.peers.call(node, DeleteReplica(name, tombstone))

    def _require_leader(self) -> Metadata:
        if self.peers.leader() != self.me.name:
            raise NotReady(
                f"{self.me.name} is not the leader (the leader is {self.peers.leader()})"
            )
        if self.leader_state != "ready" or self.metadata is None:
            raise NotReady(f"{self.me.name} is rebuilding the file metadata")
        return self.metadata

    # --- repair (leader) -------------------------------------------------------

    async def _repair_loop(self) -> None:
        while True:
            with trio.move_on_after(REPAIR_INTERVAL):
                await self._wake_repair.wait()
            self._wake_repair = trio.Event()
            if self.leader_state != "ready" or self.metadata is None:
                continue
            ring = self.peers.ring()
            now = trio.current_time()
            lost = set(self.metadata.lost(ring))
            for name in sorted(lost - self._reported_lost):
                # Said once per file: when the whole cluster stops, every file is in
                # this state and its copies are still on the stopped nodes' disks.
                self.log.warning(
                    "SDFS file %s has no copy on any live node (its holders failed or left)",
                    name,
                )
            self._reported_lost = lost
            async with trio.open_nursery() as n:
                for repair in self.metadata.repairs(ring, now):
                    n.start_soon(self._run_repair, repair)

    async def _run_repair(self, repair: Repair) -> None:
        assert self.metadata is not None
        started = trio.current_time()
        size = sum(r.size for r in repair.records)
        try:
            reply = await self.peers.call(
                repair.source,
                ReplicateOrder(repair.records, repair.targets),
                timeout=_io_timeout(size * len(repair.targets)),
            )
        except RpcError as e:
            self.metadata.repair_failed(repair.name)
            self.log.warning(
                "re-replication of %s from %s failed: %s", repair.name, repair.source, e
            )
            return
        copied = tuple(reply.detail.get("copied", ())) if isinstance(reply, StoreAck) else ()
        current: Metadata | None = self.metadata  # leadership may have moved meanwhile
        if current is None:
            return
        current.repaired(repair.name, repair.records, copied)
        took = trio.current_time() - started
        errors = reply.detail.get("errors", {}) if isinstance(reply, StoreAck) else {}
        self.repair_log.append(
            {"name": repair.name, "targets": list(copied), "seconds": round(took, 3), "bytes": size}
        )
        self.log.warning(
            "re-replicated %s (%d version%s, %.1f MB) from %s to %s in %.2f s%s",
            repair.name,
            len(repair.records),
            "" if len(repair.records) == 1 else "s",
            size / 1e6,
            repair.source,
            ", ".join(copied) or "nobody",
            took,
            f"; failed: {errors}" if errors else "",
        )

    async def _gc_loop(self) -> None:
        while True:
            await trio.sleep(60)
            removed = await trio.to_thread.run_sync(self.store.gc_pending, PENDING_TTL)
            if removed:
                self.log.info("dropped %d pending copies of puts that never finished", removed)
            removed = await trio.to_thread.run_sync(self.store.gc_incoming, PENDING_TTL)
            if removed:
                self.log.info("dropped %d incoming files that were never ingested", removed)
            if self.metadata is not None:
                self.metadata.expire_grants(trio.current_time())

    # --- requests ----------------------------------------------------------------

    async def handle(self, request: Any, addr: Address) -> Any:
        try:
            return await self._handle(request)
        except NotReady as e:
            return ErrorReply(f"not ready: {e}")
        except (StoreError, BadName) as e:
            return StoreAck(False, str(e))

    async def _handle(self, request: Any) -> Any:
        if isinstance(request, PeerInfoRequest):
            return PeerInfo(self.me.name, str(self.store.incoming), str(self.store.root))
        if isinstance(request, StatRequest):
            return StatReply(self.me.name, tuple(self.store.records(request.name)))
        if isinstance(request, InventoryRequest):
            return Inventory(self.me.name, tuple(self.store.records()))
        if isinstance(request, Ingest):
            await trio.to_thread.run_sync(self.store.ingest, request.record, request.incoming)
            return StoreAck(True)
        if isinstance(request, CommitVersion):
            await trio.to_thread.run_sync(
                self.store.commit, request.name, request.version, request.put_id
            )
            return StoreAck(True)
        if isinstance(request, AbortPut):
            await trio.to_thread.run_sync(
                self.store.abort, request.name, request.version, request.put_id
            )
            if self.metadata is not None:
                self.metadata.abort(request.put_id)
            return StoreAck(True)
        if isinstance(request, DeleteReplica):
            await trio.to_thread.run_sync(self.store.delete, request.name, request.version)
            return StoreAck(True)
        if isinstance(request, ReplicateOrder):
            return await self._replicate(request)
        # Leader requests from here on.
        metadata = self._require_leader()
        if isinstance(request, PutBegin):
            return self._grant(metadata, request)
        if isinstance(request, PutDone):
            metadata.put_done(request.record, request.holders)
            return StoreAck(True)
        if isinstance(request, Locate):
            versions, deleted = metadata.locate(check_name(request.name))
            live = set(self.peers.ring())
            located = tuple(
                LocatedVersion(v.record, tuple(sorted(v.holders & live))) for v in versions
            )
            return Location(request.name, located, deleted)
        if isinstance(request, ListFiles):
            return FileList(tuple(metadata.names(request.pattern or "*")))
        if isinstance(request, DeleteFile):
            return await self._delete_everywhere(metadata, check_name(request.name))
        return ErrorReply(f"unexpected request {type(request).__name__}")

    def _grant(self, metadata: Metadata, request: PutBegin) -> Any:
        name = check_name(request.name)
        ring = self.peers.ring()
        w = write_quorum(self.replication)
        if len(ring) < w:
            return StoreAck(
                False,
                f"only {len(ring)} live node{'s' if len(ring) != 1 else ''}; "
                f"a put needs {w} (the write quorum)",
            )
        put_id = uuid.uuid4().hex
        version = metadata.grant(name, put_id, trio.current_time())
        return PutGrant(name, version, put_id, tuple(placement(name, ring, self.replication)))

    async def _delete_everywhere(self, metadata: Metadata, name: str) -> Any:
        try:
            version = metadata.delete(name)
        except KeyError:
            return StoreAck(False, f"no such SDFS file: {name}")
        acks: list[str] = []

        async def tell(node: str) -> None:
            try:
                reply = await self.peers.call(node, DeleteReplica(name, version))
            except RpcError:
                return
            if isinstance(reply, StoreAck) and reply.ok:
                acks.append(node)

        async with trio.open_nursery() as n:
            for node in self.peers.ring():
                n.start_soon(tell, node)
        w = write_quorum(self.replication)
        if len(acks) < min(w, len(self.peers.ring())):
            return StoreAck(False, f"delete reached only {len(acks)} nodes (need {w})")
        return StoreAck(True, detail={"version": version, "nodes": sorted(acks)})

    async def _replicate(self, order: ReplicateOrder) -> StoreAck:
        """Copy committed versions we hold to ``order.targets`` (a leader's repair order)."""
        errors: dict[str, str] = {}
        for record in order.records:
            targets = [t for t in order.targets if t not in errors]
            if not targets:
                break
            committed = _committed(record)

            def same(digest: str, record: VersionRecord = committed) -> VersionRecord:
                if digest != record.sha256:
                    raise StoreError(
                        f"our copy of {record.name} v{record.version} is damaged "
                        "(its checksum changed); not spreading it"
                    )
                return record

            path = self.store.data_path(record.name, record.version)
            _, _, failed = await self._send_version(path, targets, same)
            errors.update(failed)
        copied = sorted(t for t in order.targets if t not in errors)
        return StoreAck(
            bool(copied),
            "; ".join(f"{t}: {e}" for t, e in errors.items()),
            {"copied": copied, "errors": errors},
        )

    async def _push(
        self,
        path: Path,
        targets: Sequence[str],
        incoming: dict[str, str],
        progress: Progress | None,
        label: str,
    ) -> dict[str, TransferResult | str]:
        """Copy ``path`` into each target's incoming directory as ``incoming[target]``,
        reading it once per transport (ourselves: a local copy; the rest: one stream
        that goes to all of them).  A result or an error line per target."""
        results: dict[str, TransferResult | str] = {}
        peers: dict[str, Peer] = {}

        async def look_up(node: str) -> None:
            try:
                peers[node] = await self._peer(node)
            except (TransferError, RpcError) as e:
                results[node] = str(e)

        async with trio.open_nursery() as nursery:
            for node in targets:
                nursery.start_soon(look_up, node)
        groups: dict[int, tuple[Transfer, list[tuple[str, Peer]]]] = {}
        for node in targets:
            if node in peers:
                transfer = self._transfer_for(node)
                groups.setdefault(id(transfer), (transfer, []))[1].append((node, peers[node]))
        biggest = max(groups.values(), key=lambda g: len(g[1]), default=None)

        async def one(transfer: Transfer, members: list[tuple[str, Peer]]) -> None:
            report = progress if biggest and members is biggest[1] else None
            pairs = [(peer, incoming[node]) for node, peer in members]
            done = await transfer.push_many(path, pairs, report, label=label)
            for (node, _), result in zip(members, done, strict=True):
                results[node] = result if isinstance(result, TransferResult) else str(result)

        async with trio.open_nursery() as nursery:
            for transfer, members in groups.values():
                nursery.start_soon(one, transfer, members)
        return results

    async def _send_version(
        self,
        path: Path,
        targets: Sequence[str],
        record_for: Callable[[str], VersionRecord],
        progress: Progress | None = None,
    ) -> tuple[VersionRecord | None, list[str], dict[str, str]]:
        """Send ``path`` to ``targets`` and have each ingest it as ``record_for(sha256)``,
        the SHA-256 being that of the bytes sent.  Returns (that record, the targets
        that stored it, an error line for each that did not)."""
        incoming = {t: uuid.uuid4().hex for t in targets}
        label = f"{path.name} -> {', '.join(targets)}"
        results = await self._push(path, targets, incoming, progress, label)
        errors = {t: r for t, r in results.items() if isinstance(r, str)}
        digests = {r.sha256 for r in results.values() if isinstance(r, TransferResult)}
        if len(digests) > 1:
            changed = f"{path} changed while it was being sent"
            return None, [], {t: errors.get(t, changed) for t in targets}
        if not digests:
            return None, [], errors
        try:
            record = record_for(digests.pop())
        except StoreError as e:
            return None, [], {t: errors.get(t, str(e)) for t in targets}
        stored: list[str] = []

        async def ingest(target: str) -> None:
            try:
                reply = await self.peers.call(
                    target, Ingest(record, incoming[target]), timeout=_io_timeout(record.size)
                )
            except RpcError as e:
                errors[target] = str(e)
                return
            if isinstance(reply, StoreAck) and reply.ok:
                stored.append(target)
            else:
                errors[target] = f"refused {record.name} v{record.version}: {_why(reply)}"

        async with trio.open_nursery() as nursery:
            for target in targets:
                if target not in errors:
                    nursery.start_soon(ingest, target)
        return record, sorted(stored), errors

    # --- client operations -------------------------------------------------------

    async def _leader_request(self, request: Any, timeout: float = RPC_TIMEOUT) -> Any:
        """Ask the leader, retrying while leadership moves or the leader rebuilds."""
        deadline = trio.current_time() + LEADER_RETRY_WINDOW
        delay = 0.1
        last = "no leader known"
        while True:
            leader = self.peers.leader()
            if leader is not None:
                try:
                    reply = await self.peers.call(leader, request, timeout)
                except RpcError as e:
                    last = f"leader {leader}: {e}"
                else:
                    if not (isinstance(reply, ErrorReply) and reply.error.startswith("not ready")):
                        return reply
                    last = f"leader {leader}: {reply.error}"
            if trio.current_time() + delay > deadline:
                raise CommandError(
                    f"no SDFS leader answered for {LEADER_RETRY_WINDOW:g} s ({last})"
                )
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _need_member(self) -> None:
        if not self.membership.active:
            raise CommandError(f"{self.me.name} is not in the cluster; use 'join' first")

    def _check(self, name: str) -> None:
        self._need_member()
        try:
            check_name(name)
        except BadName as e:
            raise CommandError(str(e)) from None

    async def put(self, local: Path, name: str, progress: Progress | None = None) -> dict[str, Any]:
        self._check(name)
        if not local.is_file():
            what = "is a directory" if local.is_dir() else "does not exist"
            raise CommandError(f"local file {local} {what}")
        size = local.stat().st_size
        t0 = trio.current_time()
        # The SHA-256 is computed while the bytes go out (one read of the file), so the
        # leader hears it with PutDone, not here.
        for attempt in range(3):
            grant = await self._leader_request(PutBegin(name, size, "", self.me.name))
            t_grant = trio.current_time()
            if isinstance(grant, StoreAck):
                raise CommandError(f"put {name}: {grant.error}")
            if not isinstance(grant, PutGrant):
                raise CommandError(f"put {name}: the leader answered {type(grant).__name__}")
            record, holders, errors = await self._write_quorum(local, grant, size, progress)
            if record is not None and holders:
                break
            # Another put claimed this version number during a change of leader:
            # ask again for a fresh one.  Anything else is a real failure.
            if attempt == 2 or not any("another put" in e for e in errors):
                w = write_quorum(self.replication)
                detail = "; ".join(errors)
                raise CommandError(
                    f"put {name} failed: fewer than {w} replicas stored it ({detail})"
                )
        assert record is not None
        t_copies = trio.current_time()
        await self._report_put(_committed(record), holders)
        t_end = trio.current_time()
        self.log.info(
            "put %s v%d (%.1f MB) on %s in %.2f s (grant %.2f, copies+commit %.2f, report %.2f)",
            name,
            record.version,
            size / 1e6,
            ", ".join(holders),
            t_end - t0,
            t_grant - t0,
            t_copies - t_grant,
            t_end - t_copies,
        )
        return {"name": name, "version": record.version, "replicas": holders, "bytes": size}

    async def _write_quorum(
        self, local: Path, grant: PutGrant, size: int, progress: Progress | None
    ) -> tuple[VersionRecord | None, list[str], list[str]]:
        """Send to every replica; commit once W hold it.

        Returns (record, committed holders, errors); no holders if W was not reached,
        and then nothing of this put is left visible anywhere."""
        w = min(write_quorum(self.replication), len(grant.replicas))

        def pending(digest: str) -> VersionRecord:
            state = int(VersionState.PENDING)
            return VersionRecord(grant.name, grant.version, grant.put_id, size, digest, state)

        record, stored, failed = await self._send_version(local, grant.replicas, pending, progress)
        errors = [f"{node}: {e}" for node, e in sorted(failed.items())]
        for line in errors:
            self.log.warning("put %s v%d: copy to %s", grant.name, grant.version, line)
        if record is None:
            await self._abort(grant, [])  # no replica stored anything under it
            return None, [], errors
        if len(stored) < w:
            await self._abort(record, stored)
            return record, [], errors
        committed = await self._commit(record, stored)
        if len(committed) < w:
            await self._abort(record, stored)
            return record, [], [*errors, "commit did not reach the write quorum"]
        return record, sorted(committed), errors

    async def _commit(self, record: VersionRecord, nodes: list[str]) -> list[str]:
        done: list[str] = []

        async def one(node: str) -> None:
            request = CommitVersion(record.name, record.version, record.put_id)
            try:
                reply = await self.peers.call(node, request)
            except RpcError:
                return
            if isinstance(reply, StoreAck) and reply.ok:
                done.append(node)

        async with trio.open_nursery() as n:
            for node in nodes:
                n.start_soon(one, node)
        return done

    async def _abort(self, put: VersionRecord | PutGrant, nodes: list[str]) -> None:
        """Drop ``put``'s pending copies on ``nodes`` and give its version number back."""
        request = AbortPut(put.name, put.version, put.put_id)
        leader = self.peers.leader()
        async with trio.open_nursery() as n:
            for node in [*nodes, *([leader] if leader else [])]:
                n.start_soon(self._quiet_call, node, request)

    async def _quiet_call(self, node: str, request: Any) -> None:
        with contextlib.suppress(RpcError):
            await self.peers.call(node, request)

    async def _report_put(
        self, record: VersionRecord, holders: list[str], quiet: bool = False
    ) -> None:
        """Tell the leader (whoever it is by now) that ``record`` is committed."""
        try:
            await self._leader_request(PutDone(record, tuple(holders)))
        except CommandError as e:
            # The data is committed on W nodes; a new leader will find it in their
            # inventories.  Only the listing may lag.
            if not quiet:
                self.log.warning(
                    "put of %s v%d: leader not told: %s", record.name, record.version, e
                )

    async def _locate(self, name: str) -> Location:
        self._check(name)
        reply = await self._leader_request(Locate(name))
        if not isinstance(reply, Location):
            raise CommandError(f"{name}: {_why(reply)}")
        if not reply.versions:
            suffix = " (deleted)" if reply.deleted else ""
            raise CommandError(f"no such SDFS file: {name}{suffix}")
        return reply

    async def _quorum_newest(self, location: Location) -> tuple[VersionRecord, list[str]]:
        """The newest committed version, confirmed by a read quorum of its holders."""
        newest = location.versions[0]
        best = newest.record
        holders = {newest.record.version: set(newest.holders)}
        candidates = list(newest.holders)
        random.shuffle(candidates)

        async def stat(node: str) -> None:
            nonlocal best
            try:
                reply = await self.peers.call(node, StatRequest(location.name))
            except RpcError:
                return
            if not isinstance(reply, StatReply):
                return
            for rec in reply.records:
                if rec.state == VersionState.COMMITTED:
                    holders.setdefault(rec.version, set()).add(node)
                    if rec.version > best.version:
                        best = rec

        async with trio.open_nursery() as n:
            for node in candidates[: read_quorum(self.replication)]:
                n.start_soon(stat, node)
        return best, sorted(holders.get(best.version, set()))

    async def _fetch(
        self, record: VersionRecord, holders: Sequence[str], local: Path, progress: Progress | None
    ) -> None:
        """Copy ``record`` from one of ``holders`` to ``local``, checked; tries each holder."""
        order = sorted(holders, key=lambda n: (n != self.me.name, random.random()))
        errors = []
        for node in order:
            try:
                peer = await self._peer(node)
                remote = os.path.join(
                    peer.store_dir, relative_data_path(record.name, record.version)
                )
                # The transfer checks size and checksum before the copy replaces
                # ``local``: a bad copy never appears there.
                await self._transfer_for(node).pull(
                    peer,
                    remote,
                    local,
                    progress,
                    label=f"{record.name} <- {node}",
                    expected_size=record.size,
                    expected_sha256=record.sha256,
                )
                return
            except (TransferError, RpcError, StoreError) as e:
                errors.append(f"{node}: {e}")
        if not errors:
            errors.append("no live node holds it")
        raise CommandError(f"get {record.name} v{record.version} failed: " + "; ".join(errors))

    async def get(self, name: str, local: Path, progress: Progress | None = None) -> dict[str, Any]:
        location = await self._locate(name)
        if local.is_dir():
            raise CommandError(f"local path {local} is a directory")
        record, holders = await self._quorum_newest(location)
        await self._fetch(record, holders, local, progress)
        return {"name": name, "version": record.version, "bytes": record.size}

    async def get_versions(self, name: str, count: int, local: Path) -> dict[str, Any]:
        if count < 1:
            raise CommandError("N must be at least 1")
        location = await self._locate(name)
        if local.is_dir():
            raise CommandError(f"local path {local} is a directory")
        chosen = location.versions[:count]
        tmp = local.with_name(f".{local.name}.versions-{uuid.uuid4().hex[:8]}")
        parts: list[Path] = []
        try:
            for v in chosen:
                part = local.with_name(f".{local.name}.v{v.record.version}-{uuid.uuid4().hex[:8]}")
                parts.append(part)
                await self._fetch(v.record, v.holders, part, None)
            with tmp.open("wb") as out:
                for v, part in zip(chosen, parts, strict=True):
                    out.write(f"===== {name} version {v.record.version} =====\n".encode())
                    last = b""
                    with part.open("rb") as f:
                        while chunk := f.read(1 << 20):
                            out.write(chunk)
                            last = chunk
                    if last and not last.endswith(b"\n"):
                        out.write(b"\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, local)
        finally:
            for p in [*parts, tmp]:
                p.unlink(missing_ok=True)
        return {"name": name, "versions": [v.record.version for v in chosen]}

    async def delete(self, name: str) -> dict[str, Any]:
        self._check(name)
        reply = await self._leader_request(DeleteFile(name))
        if isinstance(reply, StoreAck) and reply.ok:
            return {"ok": True}
        raise CommandError(_why(reply))

    async def ls(self, name: str) -> dict[str, Any]:
        location = await self._locate(name)
        return {
            "name": name,
            "replicas": list(location.versions[0].holders),
            "versions": [v.record.version for v in location.versions],
            "bytes": location.versions[0].record.size,
        }

    async def ls_all(self, pattern: str = "*") -> dict[str, Any]:
        self._need_member()
        reply = await self._leader_request(ListFiles(pattern))
        if not isinstance(reply, FileList):
            raise CommandError(_why(reply))
        return {"files": list(reply.names)}

    def stored(self) -> dict[str, Any]:
        return {"node": self.me.name, "files": self.store.names()}

    async def put_dir(
        self, localdir: Path, prefix: str, progress: Progress | None = None
    ) -> dict[str, Any]:
        if not localdir.is_dir():
            raise CommandError(f"local directory {localdir} does not exist")
        prefix = prefix.strip("/")
        files = sorted(p for p in localdir.rglob("*") if p.is_file() and not p.is_symlink())
        rel = [p.relative_to(localdir).as_posix() for p in files]
        names = [f"{prefix}/{r}" if prefix else r for r in rel]
        for name in names:
            self._check(name)
        done: list[str] = []
        limiter = trio.CapacityLimiter(4)

        async def one(path: Path, name: str) -> None:
            async with limiter:
                await self.put(path, name)
            done.append(name)
            if progress is not None:
                progress(len(done), len(names), "files")

        async with trio.open_nursery() as n:
            for path, name in zip(files, names, strict=True):
                n.start_soon(one, path, name)
        return {"files": sorted(done)}
