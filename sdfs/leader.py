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
clients retry (``membership.peers.call_leader``).  When READY it answers Locate /
ListFiles and records finished puts (PutDone).

Writes need more: the majority lease of :mod:`sdfs.lease` (kept by
:class:`~sdfs.leasekeeper.LeaseKeeper`).  A READY leader asks a
majority of the configured nodes for it every ``RENEW_INTERVAL``; when it gets it
in a new term, it reads their floors and rebuilds the metadata once more (what it
gathered before may predate the last writes of the leader before it), and only
then grants versions (PutBegin), each recorded on a majority first, deletes
everywhere (DeleteFile), and re-replicates files that lost copies as soon as a
failure is detected (and every ``REPAIR_INTERVAL`` besides).  Without the lease (a
minority side of a partition) puts and deletes are refused with a one-line "no
majority" error, or NOT_READY while a majority is in view and the lease is being
taken, and nothing is repaired.

A node that does not answer the rebuild's inventory round (slow, or cut off for a
moment) is asked again every ``INVENTORY_RETRY_INTERVAL`` until it answers or
leaves, and what it holds is folded in then.  A node whose holdings changed behind
the leader's back (its store was deleted) reports them with an ``Inventory``, which
replaces what the leader thought it held.

Inventories come in pages (sdfs.pages), each asked for with its own RPC_TIMEOUT and
folded as it arrives, so a node holding 10^5 versions answers in tens of small
frames rather than one over the frame limit, and its rebuild window stretches for as
long as its pages keep coming.  A node that was away longer than the tombstone grace
period (``outdated``, sdfs.tombstones) only confirms copies the others vouch for.

The leader's tables are bounded: ``repair_log`` keeps the last REPAIR_LOG_SIZE
repairs, and entries for names that no longer stand for a file are purged
(:meth:`~sdfs.metadata.Metadata.purge`) every GRANT_SWEEP_INTERVAL.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
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
    DropReplica,
    FileList,
    Floor,
    FloorsPage,
    Grant,
    Inventory,
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
from net.meters import Histogram
from net.rpc import RPC_TIMEOUT, RpcError
from sdfs.checks import check_record, check_size
from sdfs.inventories import fold_outdated, inventory_pages, usable
from sdfs.lease import LEASE, RENEW_INTERVAL
from sdfs.leasekeeper import LEASE_REQUESTS, LeaseKeeper
from sdfs.metadata import Metadata, Repair, placement, write_quorum
from sdfs.names import check_name
from sdfs.pages import PAGE_NAMES

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
# How often expired grants, and entries of names that no longer exist, are forgotten.
GRANT_SWEEP_INTERVAL = 60.0
# Repair orders out at once.  A node that held 80,000 files fails: ordering them all
# at once opens 80,000 calls (refused past the per-peer connection cap, and starving
# every other request); in batches, each file waits only for the ones before it.
MAX_REPAIRS_IN_FLIGHT = 64
# Repairs remembered in repair_log (for logs and tests): the newest ones.
REPAIR_LOG_SIZE = 1000


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
        self.repair_log: deque[dict[str, Any]] = deque(maxlen=REPAIR_LOG_SIZE)
        # For /metrics (web.metrics), over every stint as leader in this process: a
        # put's grant-to-commit seconds (PutBegin to PutDone: the writer's transfer to
        # the replicas and their quorum), and repairs by outcome with the bytes copied.
        self.put_seconds = Histogram()
        self.repairs: Counter[str] = Counter()
        self.repaired_bytes = 0
        self._reported_lost: set[str] = set()
        # Repairs under way: file name -> (the source copying it, a scope to cancel).
        self._repairs: dict[str, tuple[str, trio.CancelScope]] = {}
        # Failures and departures seen so far: a repair that fails after one of them
        # is planned again at once, from what is known now (its source may be gone).
        self._failures = 0
        self._wake_repair = trio.Event()
        self._capped = False  # the last plan stopped at MAX_REPAIRS_IN_FLIGHT
        self._changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        # The majority lease (sdfs.lease, sdfs.leasekeeper): writes need it.
        self.lease = LeaseKeeper(config, name, view, log, clock)

    # --- life cycle --------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.lease.start()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._leadership_loop)
            nursery.start_soon(self._lease_loop)
            nursery.start_soon(self.lease.renew_loop, lambda: self.view.leader() == self.name)
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
                self.lease.drop()
            with trio.move_on_after(1.0):
                await self._changed.wait()
            self._changed = trio.Event()

    async def _become_leader(self) -> None:
        self.state = LeaderState.REBUILDING
        # Take the lease first: then one gather serves reads and writes alike.  While a
        # majority is in view, wait for the promises to the leader before us to run out
        # (at most LEASE); without one (a minority side) gather at once, for reads.
        waited_until = self.clock() + LEASE + RENEW_INTERVAL
        took = await self.lease.take()
        while not took and self.clock() < waited_until and self.view.leader() == self.name:
            if not self.lease.majority_in_view():
                break
            await trio.sleep(RENEW_INTERVAL / 2)
            took = await self.lease.take()
        built = await self._rebuild(floors=took)
        if built is None:
            self.state = LeaderState.FOLLOWER
            return
        self.state = LeaderState.READY
        if built and took and self.lease.valid():
            self.lease.written = self.lease.term

    async def _rebuild(self, floors: bool) -> bool | None:
        """Gather every live node's inventory (and with ``floors``, the floors of the
        members that promised our lease) into a new metadata.  None if leadership moved
        on meanwhile (nothing changed); False if a promiser's floors did not come (the
        inventories serve reads, but no write may follow); True otherwise."""
        started = self.clock()
        metadata = Metadata(self.replication, self.config.versions_kept)
        answered: list[str] = []
        silent: list[str] = []
        # Outdated nodes' records wait until every up-to-date node's are in.
        held_back: dict[str, list[VersionRecord]] = {}

        async def gather(node: str) -> None:
            try:
                async for records, outdated in inventory_pages(self.view, node, "", self.log):
                    if outdated:
                        held_back.setdefault(node, []).extend(records)
                    else:
                        metadata.add_inventory(node, records, started)
            except RpcError:
                silent.append(node)  # what it sent so far stays counted: it is true
                held_back.pop(node, None)
                return
            answered.append(node)

        floor_pages: list[FloorsPage] = []
        floors_missing: list[str] = []

        async def read_floors(node: str) -> None:
            try:
                floor_pages.extend(await self.lease.floors(node))
            except RpcError:
                floors_missing.append(node)

        async with trio.open_nursery() as n:
            for node in self.view.ring():
                n.start_soon(gather, node)
            if floors:
                for node in self.lease.voters:
                    n.start_soon(read_floors, node)
        if floors_missing:
            self.log.warning(
                "no lease floors from %s; asking again", ", ".join(sorted(floors_missing))
            )
        for page in floor_pages:
            for f in page.floors:
                metadata.floor(f.name, f.version, started)
        # If every node that answered is outdated, the whole cluster was down longer
        # than the grace period: nobody purged a tombstone they missed since.
        everyone = len(held_back) == len(answered)
        owed = {
            node: fold_outdated(metadata, node, records, everyone, self.clock(), self.log)
            for node, records in held_back.items()
        }
        if self.view.leader() != self.name:  # leadership moved on while we gathered
            return None
        self.metadata = metadata
        self.log.warning(
            "%s is the SDFS leader%s: metadata rebuilt from %d nodes (%d files) in %.2f s%s",
            self.name,
            f" (term {self.lease.term}, {len(floor_pages)} floor pages)" if floors else "",
            len(answered),
            metadata.count(),
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
        for node, (stale, dropped) in owed.items():
            self._nursery.start_soon(self._send_tombstones, node, stale, dropped)
        return not floors_missing

    # --- the lease (sdfs.lease) ---------------------------------------------------------

    def lease_term(self) -> int | None:
        """The term of the write lease this node holds now, or None (not the leader, a
        minority side, or still rebuilding under a new term)."""
        return self.lease.held()

    async def _lease_loop(self) -> None:
        """As READY leader without a lease we wrote under: take it in a new term, and
        rebuild under it."""
        while True:
            if self.view.leader() == self.name and self.state is LeaderState.READY:
                if self.lease.held() is None:
                    await self._retake_lease()
            elif self.view.leader() != self.name:
                self.lease.drop()
            await trio.sleep(RENEW_INTERVAL)

    async def _retake_lease(self) -> None:
        if not self.lease.valid() and not await self.lease.take():
            return
        # Held in this term but not rebuilt under it yet: what we gathered may predate
        # the last grants of the leader before us.
        self.state = LeaderState.REBUILDING
        built = await self._rebuild(floors=True)
        if built is None:
            return
        self.state = LeaderState.READY
        if built and self.lease.valid():
            self.lease.written = self.lease.term
            self._wake_repair.set()

    async def _absorb(
        self, metadata: Metadata, node: str, after: str = ""
    ) -> tuple[list[tuple[str, int]], list[VersionRecord], int]:
        """Fold ``node``'s inventory (from ``after`` on) into ``metadata`` page by page:
        (the tombstones it missed, the copies it must drop, versions folded)."""
        stale: list[tuple[str, int]] = []
        drop: list[VersionRecord] = []
        count = 0
        async for records, outdated in inventory_pages(self.view, node, after, self.log):
            count += len(records)
            if outdated:
                missed, dropped = fold_outdated(
                    metadata, node, records, False, self.clock(), self.log
                )
                stale += missed
                drop += dropped
            else:
                stale += metadata.add_inventory(node, records, self.clock())
            self._wake_repair.set()
        return stale, drop, count

    async def _ask_until_answered(self, metadata: Metadata, node: str, since: float) -> None:
        """``node`` missed the rebuild: ask again until it answers, leaves, or this
        metadata is no longer the leader's."""
        while True:
            await trio.sleep(INVENTORY_RETRY_INTERVAL)
            if self.metadata is not metadata or node not in self.view.ring():
                return  # leadership moved on, or it left (a rejoin is absorbed then)
            try:
                stale, drop, count = await self._absorb(metadata, node)
            except RpcError:
                continue
            self.log.warning(
                "added %s's inventory (%d versions), %.2f s after it missed the rebuild",
                node,
                count,
                self.clock() - since,
            )
            await self._send_tombstones(node, stale, drop)
            return

    async def _absorb_inventory(self, node: str, after: str = "") -> None:
        """A node (re)joined, or reported a lost store whose first page came with the
        report: learn what it holds (from ``after`` on); tell it what was deleted
        meanwhile."""
        metadata = self.metadata
        if metadata is None:
            return
        try:
            stale, drop, _ = await self._absorb(metadata, node, after)
        except RpcError:
            return
        await self._send_tombstones(node, stale, drop)

    async def _send_tombstones(
        self, node: str, stale: list[tuple[str, int]], drop: Sequence[VersionRecord] = ()
    ) -> None:
        for name, tombstone in stale:
            if self.metadata is not None:
                self.metadata.touch(name, self.clock())
            with contextlib.suppress(RpcError):
                await self.view.call(node, DeleteReplica(name, tombstone))
        for r in drop:
            with contextlib.suppress(RpcError):
                await self.view.call(node, DropReplica(r.name, r.version, r.put_id))

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
            if isinstance(request, LEASE_REQUESTS):
                return self.lease.answer(request)
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
            return await self._grant(metadata, request)
        if isinstance(request, PutDone):
            record = check_record(request.record)
            self._time_put(metadata, record.put_id)
            metadata.put_done(record, request.holders)
            return StoreAck(True)
        if isinstance(request, PutBeginBatch):
            return await self._grant_batch(metadata, request)
        if isinstance(request, PutDoneBatch):
            if len(request.puts) > MAX_PUT_BATCH:
                raise Invalid(f"a batch of {len(request.puts)} puts; at most {MAX_PUT_BATCH}")
            for done in request.puts:  # all checked before any is recorded
                check_record(done.record)
            for done in request.puts:
                self._time_put(metadata, done.record.put_id)
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
            limit = PAGE_NAMES if request.limit <= 0 else min(request.limit, PAGE_NAMES)
            names, next_after = metadata.names_page(pattern or "*", request.after, limit)
            return FileList(tuple(names), next_after)
        if isinstance(request, DeleteFile):
            return await self._delete_everywhere(metadata, check_name(request.name))
        if isinstance(request, Inventory):  # a node's holdings changed (its store was lost)
            if request.node not in self.view.ring():
                raise NotFound(f"{request.node} is not a member")
            self.log.warning(
                "%s reports it now holds %d versions%s; re-replicating what it lost",
                request.node,
                len(request.records),
                " and more" if request.next_after else "",
            )
            metadata.node_gone(request.node)
            records = usable(request.node, request.records, self.log)
            if request.outdated:
                stale, drop = fold_outdated(
                    metadata, request.node, records, False, self.clock(), self.log
                )
            else:
                drop, stale = [], metadata.add_inventory(request.node, records, self.clock())
            self._wake_repair.set()
            assert self._nursery is not None  # tombstones go out after the answer
            self._nursery.start_soon(self._send_tombstones, request.node, stale, drop)
            if request.next_after:  # the rest, page by page
                self._nursery.start_soon(self._absorb_inventory, request.node, request.next_after)
            return StoreAck(True)
        raise TypeError(f"not a leader request: {type(request).__name__}")

    def _time_put(self, metadata: Metadata, put_id: str) -> None:
        granted = metadata.granted_at(put_id)
        if granted is not None:  # once per put: put_done closes its grant
            self.put_seconds.observe(self.clock() - granted)

    async def _grant(self, metadata: Metadata, request: PutBegin) -> PutGrant:
        name = check_name(request.name)
        check_size(request.size, f"put {name}: size")
        self.lease.writable()
        ring = self._writable_ring()
        put_id = uuid.uuid4().hex
        version = metadata.grant(name, put_id, self.clock())
        try:
            await self.lease.journal([Floor(name, version)])
        except ClusterError:
            metadata.abort(put_id)
            raise
        return PutGrant(name, version, put_id, tuple(placement(name, ring, self.replication)))

    async def _grant_batch(self, metadata: Metadata, request: PutBeginBatch) -> PutGrantBatch:
        """A grant per file, as PutBegin gives one; all or none (a bad name refuses all)."""
        if len(request.files) > MAX_PUT_BATCH:
            raise Invalid(f"a batch of {len(request.files)} files; at most {MAX_PUT_BATCH}")
        for want in request.files:
            check_size(want.size, f"put {check_name(want.name)}: size")
        self.lease.writable()
        ring = self._writable_ring()
        now = self.clock()
        grants = []
        for want in request.files:
            put_id = uuid.uuid4().hex
            version = metadata.grant(want.name, put_id, now)
            replicas = tuple(placement(want.name, ring, self.replication))
            grants.append(Grant(want.name, version, put_id, replicas))
        try:
            await self.lease.journal([Floor(g.name, g.version) for g in grants])
        except ClusterError:
            for g in grants:
                metadata.abort(g.put_id)
            raise
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
        self.lease.writable()
        try:
            version = metadata.delete(name, self.clock())
        except KeyError:
            raise NotFound(f"no such SDFS file: {name}") from None
        await self.lease.journal([Floor(name, version)])
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
            if self.lease_term() is None:
                continue  # a minority side (or a new term's rebuild) repairs nothing
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
            room = MAX_REPAIRS_IN_FLIGHT - len(self._repairs)
            planned = metadata.repairs(ring, self.clock(), limit=max(room, 0))
            self._capped = len(planned) >= room
            for repair in planned:
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
            self.repairs["failed"] += 1
            metadata.repair_failed(repair.name)
            self.log.warning(
                "re-replication of %s from %s failed: %s", repair.name, repair.source, e
            )
            return
        finally:
            self._repairs.pop(repair.name, None)
            if self._capped and len(self._repairs) <= MAX_REPAIRS_IN_FLIGHT // 2:
                self._capped = False
                self._wake_repair.set()  # the next batch
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
        self.repairs["done" if copied else "failed"] += 1
        self.repaired_bytes += size * len(copied)
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
                purged = self.metadata.purge(self.clock(), self.config.tombstone_grace)
                if purged:
                    self.log.info(
                        "forgot %d entries of deleted or never-written files (first: %s)",
                        len(purged),
                        purged[0],
                    )
