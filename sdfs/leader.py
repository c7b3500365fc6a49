"""The SDFS leader role: the file metadata, version grants, lookups, deletes and repairs.

Only the first live member in ring order acts on these; every node runs the loop
that notices when it becomes (or stops being) that member.

States (:class:`LeaderState`)::

    FOLLOWER --(we are first in the ring)--> REBUILDING --(inventories in)--> READY
       ^                                         |                             |
       +------(someone else is first)------------+-----------------------------+

On becoming leader it asks every live node for its inventory and folds them into
:class:`~sdfs.metadata.Metadata` (which holds nothing that cannot be rebuilt that
way); until that is done every leader request is answered NOT_READY, which
clients retry (``membership.peers.call_leader``).  When READY it grants versions
(PutBegin), records finished puts (PutDone), answers Locate / ListFiles, deletes
everywhere (DeleteFile), and re-replicates files that lost copies as soon as a
failure is detected (and every ``REPAIR_INTERVAL`` besides).

A node that does not answer the rebuild's inventory round (slow, or cut off for a
moment) is asked again every ``INVENTORY_RETRY_INTERVAL`` until it answers or
leaves, and what it holds is folded in then.  A node whose holdings changed behind
the leader's back (its store was deleted) reports them with an ``Inventory``, which
replaces what the leader thought it held.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import uuid
from collections.abc import Callable
from typing import Any

import trio

from config.topology import ClusterConfig
from membership.core import Event
from membership.peers import ClusterView
from net.errors import ClusterError, Invalid, NoQuorum, NotFound, NotReady, to_failure
from net.limits import check_pattern
from net.messages import (
    AbortPut,
    DeleteFile,
    DeleteReplica,
    FileList,
    Grant,
    Inventory,
    InventoryRequest,
    ListFiles,
    Locate,
    LocatedVersion,
    Location,
    PutBegin,
    PutBeginBatch,
    PutDone,
    PutDoneBatch,
    PutGrant,
    PutGrantBatch,
    ReplicateOrder,
    StoreAck,
    VersionRecord,
)
from net.rpc import RPC_TIMEOUT, RpcError
from sdfs.checks import check_record, check_size, usable_records
from sdfs.metadata import Metadata, Repair, placement, write_quorum
from sdfs.names import check_name

# Inventory: a node's report of its holdings after they changed outside the protocol.
LEADER_REQUESTS = (
    PutBegin,
    PutDone,
    Locate,
    ListFiles,
    DeleteFile,
    Inventory,
    PutBeginBatch,
    PutDoneBatch,
)
# Most files one PutBeginBatch or PutDoneBatch may name (a put-dir asks for fewer).
MAX_PUT_BATCH = 4096

# How often the leader checks for under-replicated files besides failure events.
REPAIR_INTERVAL = 2.0
# A repair order is given up after RPC_TIMEOUT plus its bytes at this speed: only a
# backstop for a source that is alive but stuck, since a copy that stalls fails by its
# own idle timeout and a source that dies is cancelled on its failure.  Low, so a big
# file on a slow link is never given up while it still moves.
REPAIR_BYTES_PER_SECOND_FLOOR = 100e3
# How often a node that missed the rebuild's inventory round is asked again: the
# round's own window (RPC_TIMEOUT), so a node that was only slow is counted a few
# seconds late rather than at its next join.
INVENTORY_RETRY_INTERVAL = 5.0
# How often expired grants are forgotten.
GRANT_SWEEP_INTERVAL = 60.0


class LeaderState(enum.Enum):
    FOLLOWER = "follower"
    REBUILDING = "rebuilding"
    READY = "ready"


class SdfsLeader:
    def __init__(
        self,
        config: ClusterConfig,
        name: str,
        view: ClusterView,
        log: logging.Logger,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.config = config
        self.name = name
        self.view = view
        self.log = log
        self.clock = clock
        self.replication = config.replication
        self.state = LeaderState.FOLLOWER
        self.metadata: Metadata | None = None
        self.repair_log: list[dict[str, Any]] = []
        self._reported_lost: set[str] = set()
        # Repairs under way: file name -> (the source copying it, a scope to cancel).
        self._repairs: dict[str, tuple[str, trio.CancelScope]] = {}
        # Failures and departures seen so far: a repair that fails after one of them
        # is planned again at once, from what is known now (its source may be gone).
        self._failures = 0
        self._wake_repair = trio.Event()
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None

    # --- life cycle --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._leadership_loop)
            nursery.start_soon(self._repair_loop)
            nursery.start_soon(self._sweep_loop)
            task_status.started()

    def on_membership_event(self, event: Event) -> None:
        if event.kind in ("failed", "left"):
            if self.metadata is not None:
                self.metadata.node_gone(event.name)
            self._failures += 1
            for source, scope in self._repairs.values():
                if source == event.name:
                    scope.cancel()  # ordered again from another holder
            self._wake_repair.set()
        joined = event.kind in ("joined", "rejoined") and event.name != self.name
        if joined and self.state is LeaderState.READY and self._nursery is not None:
            self._nursery.start_soon(self._absorb_inventory, event.name)
        self._changed.set()

    # --- leadership ----------------------------------------------------------------

    async def _leadership_loop(self) -> None:
        while True:
            leader = self.view.leader()
            if leader == self.name and self.state is LeaderState.FOLLOWER:
                await self._become_leader()
            elif leader != self.name and self.state is not LeaderState.FOLLOWER:
                self.log.info("%s is no longer the SDFS leader (now %s)", self.name, leader)
                self.state, self.metadata = LeaderState.FOLLOWER, None
            with trio.move_on_after(1.0):
                await self._changed.wait()
            self._changed = trio.Event()

    async def _become_leader(self) -> None:
        self.state = LeaderState.REBUILDING
        started = self.clock()
        inventories: dict[str, list[VersionRecord]] = {}
        silent: list[str] = []

        async def gather(node: str) -> None:
            try:
                reply = await self.view.call(node, InventoryRequest(), RPC_TIMEOUT)
            except RpcError:
                silent.append(node)
                return
            if isinstance(reply, Inventory):
                inventories[node] = self._usable(node, reply.records)

        async with trio.open_nursery() as n:
            for node in self.view.ring():
                n.start_soon(gather, node)
        metadata = Metadata(self.replication, self.config.versions_kept)
        metadata.rebuild(inventories)
        if self.view.leader() != self.name:  # leadership moved on while we gathered
            self.state = LeaderState.FOLLOWER
            return
        self.metadata = metadata
        self.state = LeaderState.READY
        self.log.warning(
            "%s is the SDFS leader: metadata rebuilt from %d nodes (%d files) in %.2f s%s",
            self.name,
            len(inventories),
            len(metadata.names()),
            self.clock() - started,
            f"; no answer from {', '.join(sorted(silent))} (asking again every "
            f"{INVENTORY_RETRY_INTERVAL:g} s)"
            if silent
            else "",
        )
        self._wake_repair.set()
        assert self._nursery is not None
        for node in sorted(silent):
            self._nursery.start_soon(self._ask_until_answered, metadata, node, started)

    async def _ask_until_answered(self, metadata: Metadata, node: str, since: float) -> None:
        """``node`` missed the rebuild: ask again until it answers, leaves, or this
        metadata is no longer the leader's."""
        while True:
            await trio.sleep(INVENTORY_RETRY_INTERVAL)
            if self.metadata is not metadata or node not in self.view.ring():
                return  # leadership moved on, or it left (a rejoin is absorbed then)
            try:
                reply = await self.view.call(node, InventoryRequest(), RPC_TIMEOUT)
            except RpcError:
                continue
            if isinstance(reply, Inventory) and self.metadata is metadata:
                stale = self._fold(metadata, node, reply.records)
                self.log.warning(
                    "added %s's inventory (%d versions), %.2f s after it missed the rebuild",
                    node,
                    len(reply.records),
                    self.clock() - since,
                )
                await self._send_tombstones(node, stale)
                return

    async def _absorb_inventory(self, node: str) -> None:
        """A node (re)joined: learn what it holds; tell it what was deleted meanwhile."""
        try:
            reply = await self.view.call(node, InventoryRequest())
        except RpcError:
            return
        if not isinstance(reply, Inventory) or self.metadata is None:
            return
        await self._send_tombstones(node, self._fold(self.metadata, node, reply.records))

    def _fold(
        self,
        metadata: Metadata,
        node: str,
        records: tuple[VersionRecord, ...],
        *,
        replace: bool = False,
    ) -> list[tuple[str, int]]:
        """Count ``records`` as ``node``'s (instead of what it held before, if
        ``replace``); returns the tombstones it missed."""
        if replace:
            metadata.node_gone(node)
        stale = metadata.add_inventory(node, self._usable(node, records))
        self._wake_repair.set()
        return stale

    async def _send_tombstones(self, node: str, stale: list[tuple[str, int]]) -> None:
        for name, tombstone in stale:
            with contextlib.suppress(RpcError):
                await self.view.call(node, DeleteReplica(name, tombstone))

    def _usable(
        self, node: str, records: tuple[VersionRecord, ...] | list[VersionRecord]
    ) -> list[VersionRecord]:
        """The records of ``node``'s inventory that may be folded in (sdfs.checks);
        a bad one (a name like ../x, a version beyond 2**53) is left out and logged."""
        good, refused = usable_records(records)
        if refused:
            self.log.warning(
                "left %d record%s of %s's inventory out: %s",
                len(refused),
                "" if len(refused) == 1 else "s",
                node,
                refused[0],
            )
        return good

    def _ready(self) -> Metadata:
        leader = self.view.leader()
        if leader != self.name:
            raise NotReady(f"{self.name} is not the leader (the leader is {leader})")
        if self.state is not LeaderState.READY or self.metadata is None:
            raise NotReady(f"{self.name} is rebuilding the file metadata")
        return self.metadata

    # --- requests --------------------------------------------------------------------

    async def handle(self, request: Any) -> Any:
        try:
            return await self._handle(request)
        except ClusterError as e:
            return to_failure(e)

    def aborted(self, request: AbortPut) -> None:
        """A writer gave a granted version back (sent to the leader with the replicas)."""
        if self.metadata is not None:
            self.metadata.abort(request.put_id)

    async def _handle(self, request: Any) -> Any:
        metadata = self._ready()
        if isinstance(request, PutBegin):
            return self._grant(metadata, request)
        if isinstance(request, PutDone):
            metadata.put_done(check_record(request.record), request.holders)
            return StoreAck(True)
        if isinstance(request, PutBeginBatch):
            return self._grant_batch(metadata, request)
        if isinstance(request, PutDoneBatch):
            if len(request.puts) > MAX_PUT_BATCH:
                raise Invalid(f"a batch of {len(request.puts)} puts; at most {MAX_PUT_BATCH}")
            for done in request.puts:  # all checked before any is recorded
                check_record(done.record)
            for done in request.puts:
                metadata.put_done(done.record, done.holders)
            return StoreAck(True)
        if isinstance(request, Locate):
            versions, deleted = metadata.locate(check_name(request.name))
            live = set(self.view.ring())
            located = tuple(
                LocatedVersion(v.record, tuple(sorted(v.holders & live))) for v in versions
            )
            return Location(request.name, located, deleted)
        if isinstance(request, ListFiles):
            pattern = check_pattern(request.pattern, "the ls-all pattern")
            return FileList(tuple(metadata.names(pattern or "*")))
        if isinstance(request, DeleteFile):
            return await self._delete_everywhere(metadata, check_name(request.name))
        if isinstance(request, Inventory):  # a node's holdings changed (its store was lost)
            if request.node not in self.view.ring():
                raise NotFound(f"{request.node} is not a member")
            self.log.warning(
                "%s reports it now holds %d versions; re-replicating what it lost",
                request.node,
                len(request.records),
            )
            stale = self._fold(metadata, request.node, request.records, replace=True)
            assert self._nursery is not None  # tombstones go out after the answer
            self._nursery.start_soon(self._send_tombstones, request.node, stale)
            return StoreAck(True)
        raise TypeError(f"not a leader request: {type(request).__name__}")

    def _grant(self, metadata: Metadata, request: PutBegin) -> PutGrant:
        name = check_name(request.name)
        check_size(request.size, f"put {name}: size")
        ring = self._writable_ring()
        put_id = uuid.uuid4().hex
        version = metadata.grant(name, put_id, self.clock())
        return PutGrant(name, version, put_id, tuple(placement(name, ring, self.replication)))

    def _grant_batch(self, metadata: Metadata, request: PutBeginBatch) -> PutGrantBatch:
        """A grant per file, as PutBegin gives one; all or none (a bad name refuses all)."""
        if len(request.files) > MAX_PUT_BATCH:
            raise Invalid(f"a batch of {len(request.files)} files; at most {MAX_PUT_BATCH}")
        for want in request.files:
            check_size(want.size, f"put {check_name(want.name)}: size")
        ring = self._writable_ring()
        now = self.clock()
        grants = []
        for want in request.files:
            put_id = uuid.uuid4().hex
            version = metadata.grant(want.name, put_id, now)
            replicas = tuple(placement(want.name, ring, self.replication))
            grants.append(Grant(want.name, version, put_id, replicas))
        return PutGrantBatch(tuple(grants))

    def _writable_ring(self) -> list[str]:
        """The live ring, if it holds a write quorum; NoQuorum otherwise."""
        ring = list(self.view.ring())
        w = write_quorum(self.replication)
        if len(ring) < w:
            raise NoQuorum(
                f"only {len(ring)} live node{'s' if len(ring) != 1 else ''}; "
                f"a put needs {w} (the write quorum)"
            )
        return ring

    async def _delete_everywhere(self, metadata: Metadata, name: str) -> StoreAck:
        try:
            version = metadata.delete(name)
        except KeyError:
            raise NotFound(f"no such SDFS file: {name}") from None
        acks: list[str] = []

        async def tell(node: str) -> None:
            try:
                reply = await self.view.call(node, DeleteReplica(name, version))
            except RpcError:
                return
            if isinstance(reply, StoreAck) and reply.ok:
                acks.append(node)

        ring = self.view.ring()
        async with trio.open_nursery() as n:
            for node in ring:
                n.start_soon(tell, node)
        w = write_quorum(self.replication)
        if len(acks) < min(w, len(ring)):
            raise NoQuorum(f"delete reached only {len(acks)} nodes (need {w})")
        return StoreAck(True, detail={"version": version, "nodes": sorted(acks)})

    # --- repair --------------------------------------------------------------------------

    async def _repair_loop(self) -> None:
        while True:
            with trio.move_on_after(REPAIR_INTERVAL):
                await self._wake_repair.wait()
            self._wake_repair = trio.Event()
            metadata = self.metadata
            if self.state is not LeaderState.READY or metadata is None:
                continue
            ring = self.view.ring()
            lost = set(metadata.lost(ring))
            for name in sorted(lost - self._reported_lost):
                # Said once per file: when the whole cluster stops, every file is in
                # this state and its copies are still on the stopped nodes' disks.
                self.log.warning(
                    "SDFS file %s has no copy on any live node (its holders failed or left)",
                    name,
                )
            self._reported_lost = lost
            assert self._nursery is not None
            for repair in metadata.repairs(ring, self.clock()):
                # A repair runs as long as its copy does (a big file on a slow link
                # takes minutes): the loop goes on meanwhile, and never orders the same
                # file twice at once.
                if repair.name not in self._repairs:
                    scope = trio.CancelScope()
                    self._repairs[repair.name] = (repair.source, scope)
                    self._nursery.start_soon(
                        self._run_repair, metadata, repair, scope, self._failures
                    )

    async def _run_repair(
        self, metadata: Metadata, repair: Repair, scope: trio.CancelScope, failures: int
    ) -> None:
        started = self.clock()
        size = sum(r.size for r in repair.records)
        try:
            with scope:
                reply = await self.view.call(
                    repair.source,
                    ReplicateOrder(repair.records, repair.targets),
                    RPC_TIMEOUT + size * len(repair.targets) / REPAIR_BYTES_PER_SECOND_FLOOR,
                )
            if scope.cancelled_caught:
                raise RpcError(f"{repair.source} left the cluster")
        except RpcError as e:
            metadata.repair_failed(repair.name)
            self.log.warning(
                "re-replication of %s from %s failed: %s", repair.name, repair.source, e
            )
            return
        finally:
            self._repairs.pop(repair.name, None)
            if self._failures != failures:
                # Someone failed while this order ran (its source, or a target): plan
                # again now, from what is known now, rather than at the next interval.
                # Without new failures the interval paces retries against a source
                # that refuses but is not yet known to be dead.
                self._wake_repair.set()
        copied = tuple(reply.detail.get("copied", ())) if isinstance(reply, StoreAck) else ()
        # The metadata this repair was ordered from: if leadership moved meanwhile it is
        # no longer anyone's, and updating it is harmless.
        metadata.repaired(repair.name, repair.records, copied)
        took = self.clock() - started
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

    async def _sweep_loop(self) -> None:
        while True:
            await trio.sleep(GRANT_SWEEP_INTERVAL)
            if self.metadata is not None:
                self.metadata.expire_grants(self.clock())
