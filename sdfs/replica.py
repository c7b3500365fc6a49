"""The replica role: what every node does with the versions it stores.

It answers the requests about its own :class:`~sdfs.store.ReplicaStore`: where it
keeps files (PeerInfoRequest), what it holds (StatRequest, InventoryRequest), taking
an arrival as a pending version (Ingest), committing or aborting a put
(CommitVersion, AbortPut), tombstoning a file (DeleteReplica), and copying what it
holds to other nodes when the leader orders a repair (ReplicateOrder: through
``sdfs.copies.push``, so a big file goes to several targets in a chain).  It also
collects what puts that never finished left behind, and notices when its store's
directory was deleted under it: it says so, starts again with an empty store, and
reports its (now empty) holdings to the leader, which re-replicates what was there.

A refusal is a :class:`~net.messages.Failure` whose kind says what went wrong (a
version taken by another put is CONFLICT, so the writer asks for a fresh number).
Disk work runs through ``blocking`` (a worker thread by default; inline on virtual
time in tests) so the event loop
never waits on the disk.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from membership.peers import ClusterView
from net.blocking import Blocking, to_thread
from net.errors import ClusterError, expect, to_failure
from net.messages import (
    AbortPut,
    BatchAck,
    CommitBatch,
    CommitVersion,
    DeleteReplica,
    DropReplica,
    Ingest,
    Inventory,
    InventoryRequest,
    PeerInfo,
    PeerInfoRequest,
    ReplicateOrder,
    StatReply,
    StatRequest,
    StoreAck,
    StoreBatch,
    VersionRecord,
    VersionState,
)
from net.rpc import RpcError
from sdfs import storebatch
from sdfs.checks import check_record, check_version
from sdfs.copies import PeerDirectory, Transfers, ingest, push
from sdfs.names import check_name
from sdfs.pages import PAGE_RECORDS
from sdfs.store import ReplicaStore
from sdfs.tombstones import is_outdated, stamp

# The default tombstone grace period (config.topology.ClusterConfig.tombstone_grace).
TOMBSTONE_GRACE = 864_000.0

REPLICA_REQUESTS = (
    PeerInfoRequest,
    StatRequest,
    InventoryRequest,
    Ingest,
    CommitVersion,
    AbortPut,
    DeleteReplica,
    ReplicateOrder,
    DropReplica,
    StoreBatch,
    CommitBatch,
)

# A pending copy whose put never finished, or an arrival never ingested, is dropped
# after this long (the writer died or gave up long ago).
PENDING_TTL = 600.0
GC_INTERVAL = 60.0
# How often the store's directories are checked (two stats): a store deleted under a
# running node is noticed, and its copies re-replicated, within seconds.
STORE_CHECK_INTERVAL = 5.0


def committed(record: VersionRecord) -> VersionRecord:
    return VersionRecord(
        record.name,
        record.version,
        record.put_id,
        record.size,
        record.sha256,
        int(VersionState.COMMITTED),
    )


class Replica:
    def __init__(
        self,
        name: str,
        store: ReplicaStore,
        view: ClusterView,
        peers: PeerDirectory,
        transfers: Transfers,
        log: logging.Logger,
        blocking: Blocking = to_thread,
        grace: float = TOMBSTONE_GRACE,
    ) -> None:
        self.name = name
        self.store = store
        self.view = view
        self.peers = peers
        self.transfers = transfers
        self.log = log
        self.blocking = blocking
        self.grace = grace
        # Away longer than the grace period (sdfs.tombstones): until a whole inventory
        # has been served (and a GC interval has passed), say so with every page.
        self.outdated = is_outdated(store.root, grace)
        self._served_all_at: float | None = None
        purged = store.purge_tombstones(grace)
        if self.outdated:
            log.warning(
                "%s: the SDFS store was last in the cluster more than the tombstone grace "
                "period (%g s) ago: only copies other nodes vouch for will count",
                name,
                grace,
            )
        else:
            stamp(store.root)
        if purged:
            log.info("%s: purged %d tombstones older than %g s", name, purged, grace)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        report_due = False  # our holdings changed behind the leader's back: tell it
        next_gc = trio.current_time() + GC_INTERVAL
        while True:
            await trio.sleep(STORE_CHECK_INTERVAL)
            try:
                lost = await self.blocking.run(self.store.recover_if_deleted)
                if lost is not None:
                    self.log.error(
                        "%s: the SDFS store %s was deleted while the node ran; %d copies "
                        "(of %d files) are gone; started again with an empty store",
                        self.name,
                        self.store.root,
                        len(lost),
                        len({r.name for r in lost}),
                    )
                    report_due = True
                if trio.current_time() >= next_gc:
                    next_gc += GC_INTERVAL
                    await self._collect()
                    self._upkeep_tombstones()
            except OSError as e:  # the disk failed: keep serving, try again next round
                self.log.error("%s: SDFS store upkeep failed: %s", self.name, e)
            if report_due:
                report_due = not await self._report_holdings()

    def _upkeep_tombstones(self) -> None:
        """Stamp the store as in the cluster (or stop being outdated: a GC interval
        after a whole inventory was served, sdfs.tombstones)."""
        served = self._served_all_at
        if self.outdated and served is not None and trio.current_time() - served >= GC_INTERVAL:
            self.outdated = False
            self.log.warning("%s: the SDFS store is up to date again", self.name)
        if not self.outdated:
            stamp(self.store.root)

    async def _collect(self) -> None:
        removed = await self.blocking.run(self.store.gc_pending, PENDING_TTL)
        if removed:
            self.log.info("dropped %d pending copies of puts that never finished", removed)
        removed = await self.blocking.run(self.store.gc_incoming, PENDING_TTL)
        if removed:
            self.log.info("dropped %d incoming files that were never ingested", removed)
        removed = await self.blocking.run(self.store.purge_tombstones, self.grace)
        if removed:
            self.log.info("purged %d tombstones older than %g s", removed, self.grace)

    async def _report_holdings(self) -> bool:
        """Send the leader what we hold now; whether it took it."""
        # The first page; the leader asks for the rest (a page is never near the frame
        # limit, however much is stored).
        records, next_after = self.store.records_page()
        try:
            reply = await self.view.call_leader(
                Inventory(self.name, tuple(records), next_after, self.outdated)
            )
            expect(reply, StoreAck, f"report what {self.name} holds")
        except (ClusterError, RpcError) as e:
            self.log.warning("could not tell the leader what %s holds now: %s", self.name, e)
            return False
        return True

    async def handle(self, request: Any) -> Any:
        try:
            return await self._handle(request)
        except ClusterError as e:
            return to_failure(e)

    async def _handle(self, request: Any) -> Any:
        store = self.store
        if isinstance(request, PeerInfoRequest):
            return PeerInfo(self.name, str(store.incoming), str(store.root))
        if isinstance(request, StatRequest):
            return StatReply(self.name, tuple(store.records(check_name(request.name))))
        if isinstance(request, InventoryRequest):
            limit = PAGE_RECORDS if request.limit <= 0 else min(request.limit, PAGE_RECORDS)
            records, next_after = store.records_page(request.after, limit)
            if not next_after and self._served_all_at is None:
                self._served_all_at = trio.current_time()
            return Inventory(self.name, tuple(records), next_after, self.outdated)
        # Every name and number is checked before the store sees it (sdfs.checks).
        if isinstance(request, Ingest):
            record = check_record(request.record)
            await self.blocking.run(store.ingest, record, request.incoming)
        elif isinstance(request, CommitVersion):
            name = check_name(request.name)
            version = check_version(request.version)
            await self.blocking.run(store.commit, name, version, request.put_id)
        elif isinstance(request, AbortPut):
            name = check_name(request.name)
            version = check_version(request.version)
            await self.blocking.run(store.abort, name, version, request.put_id)
        elif isinstance(request, DeleteReplica):
            name = check_name(request.name)
            await self.blocking.run(store.delete, name, check_version(request.version))
        elif isinstance(request, DropReplica):
            name = check_name(request.name)
            version = check_version(request.version)
            await self.blocking.run(store.drop, name, version, request.put_id)
        elif isinstance(request, StoreBatch):
            return await self._store_batch(request)
        elif isinstance(request, CommitBatch):
            return await self._commit_batch(request)
        elif isinstance(request, ReplicateOrder):
            for r in request.records:  # all or nothing: a bad order is refused whole
                check_record(r)
            return await self._replicate(request)
        else:
            raise TypeError(f"not a replica request: {type(request).__name__}")
        return StoreAck(True)

    async def _store_batch(self, request: StoreBatch) -> BatchAck:
        """Ingest every item of a put-dir batch, in one group commit (sdfs.store)."""
        results: list[ClusterError | None] = [None] * len(request.items)
        todo: list[int] = []
        for i, item in enumerate(request.items):
            try:  # a bad item is refused alone; the others go on
                check_record(item.record)
                todo.append(i)
            except ClusterError as e:
                results[i] = e
        items = [request.items[i] for i in todo]
        stored = await self.blocking.run(
            storebatch.ingest_batch, self.store, [(it.record, it.incoming, it.data) for it in items]
        )
        for i, error in zip(todo, stored, strict=True):
            results[i] = error
        return batch_ack(results)

    async def _commit_batch(self, request: CommitBatch) -> BatchAck:
        results: list[ClusterError | None] = [None] * len(request.puts)
        todo: list[int] = []
        for i, put in enumerate(request.puts):
            try:
                check_name(put.name)
                check_version(put.version)
                todo.append(i)
            except ClusterError as e:
                results[i] = e
        puts = [(p.name, p.version, p.put_id) for p in (request.puts[i] for i in todo)]
        done = await self.blocking.run(storebatch.commit_batch, self.store, puts)
        for i, error in zip(todo, done, strict=True):
            results[i] = error
        return batch_ack(results)

    async def _replicate(self, order: ReplicateOrder) -> StoreAck:
        """Copy committed versions we hold to ``order.targets`` (a leader's repair order)."""
        errors: dict[str, str] = {}
        for record in order.records:
            targets = [t for t in order.targets if t not in errors]
            if not targets:
                break
            record = committed(record)
            path = self.store.data_path(record.name, record.version)
            incoming, digests, failed = await push(self.peers, self.transfers, path, targets)
            errors.update({t: e.text for t, e in failed.items()})
            damaged = [t for t, d in digests.items() if d != record.sha256]
            for t in damaged:
                errors[t] = (
                    f"our copy of {record.name} v{record.version} is damaged "
                    "(its checksum changed); not spreading it"
                )
                del incoming[t]
            _, refused = await ingest(self.view, record, incoming)
            errors.update({t: e.text for t, e in refused.items()})
        copied = sorted(t for t in order.targets if t not in errors)
        return StoreAck(
            bool(copied),
            "; ".join(f"{t}: {e}" for t, e in errors.items()),
            {"copied": copied, "errors": errors},
        )


def batch_ack(results: list[ClusterError | None]) -> BatchAck:
    """Per item: -1 and "" for done, else the error's kind and its line."""
    return BatchAck(
        tuple(-1 if e is None else int(e.kind) for e in results),
        tuple("" if e is None else to_failure(e).error for e in results),
    )
