"""``put-dir``: a directory's files into SDFS in batches, several batches in flight.

One file at a time a put costs a grant, a connection per replica, an ingest and a
commit per replica and a report: fourteen round trips for a 1 KB file.  Here the
leader grants up to ``GRANT_FILES`` files at once; the grants are grouped by replica
set (placement is per name, and 5 nodes with 4 replicas have only 5 sets) into
batches; and each batch costs one StoreBatch and one CommitBatch per replica (each a
group commit to disk there, sdfs.store) and one PutDoneBatch.  Small files travel
inline in the StoreBatch frame (authenticated like every frame); larger ones stream
to each replica first (``sdfs.copies.push``, the single put's transfer: at
``pipeline_min_bytes`` and above, 1 MiB by default, in a chain through the
replicas, sdfs.transfer.chain), several at once, so a directory of images moves at
the speed of its bytes.  The inline batches keep their fan-out: a batch frame is a
round trip per replica, and chaining it would add a hop's latency to each.

:class:`~sdfs.putbatch.BatchCoordinator` decides each batch; what fails for a
cluster reason (a replica died mid-batch, a version raced a change of leader) is
put again alone by :meth:`SdfsClient.put`, with a fresh grant; what still fails is
named, file by file, in :class:`PutDirFailed`.  Nothing is reported done before it
is committed on W replicas, as with a single put.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from net.errors import ClusterError, ErrorKind, Invalid, expect
from net.messages import (
    BatchAck,
    BatchItem,
    CommitBatch,
    Done,
    Grant,
    PutBeginBatch,
    PutDoneBatch,
    PutGrantBatch,
    PutKey,
    PutWant,
    StoreBatch,
)
from net.progress import Progress, human_bytes
from net.rpc import RpcError
from sdfs.copies import io_timeout, push, reply_error
from sdfs.metadata import write_quorum
from sdfs.names import check_name
from sdfs.putbatch import BatchCoordinator, node_errors
from sdfs.putcoord import NodeError

if TYPE_CHECKING:
    from sdfs.client import SdfsClient

# Files up to this size travel inline in the StoreBatch frame (a MAC and a msgpack copy
# per byte, which for a file this small costs less than a stream's set-up and its
# fsync per file on every replica); larger ones stream (sdfs.copies.push).
INLINE_MAX = 1024 * 1024
# Inline bytes in one StoreBatch.  A frame this large, the first of its connection,
# holds part of each replica's budget for unauthenticated frames while it arrives
# (net.rpc.UNVERIFIED_BYTES, 64 MiB): BATCHES_IN_FLIGHT of them hold a quarter of it,
# and a put-dir that meets a full budget only sees those batches retried alone.
BATCH_BYTES = 2 * 1024 * 1024
# Per item beyond its bytes: the record and msgpack's framing of it.
ITEM_OVERHEAD = 256
# Most files in one batch (streamed files count here, not in BATCH_BYTES).
BATCH_FILES = 128
# Most files, and bytes of names, in one PutBeginBatch.
GRANT_FILES = 1024
GRANT_BYTES = 60 * 1024
# Batches in flight at once: enough to keep every replica's disk and the leader busy
# while one batch waits on its slowest replica.
BATCHES_IN_FLIGHT = 8
# Large files streaming at once (each to all of its replicas).
STREAMS_IN_FLIGHT = 4
# A batch request gets io_timeout(its bytes) plus this much per file: a pessimistic
# disk's cost of creating a file, so a busy replica is not given up on too early.
SECONDS_PER_FILE = 0.02
# Files put again alone after their batch failed, at once.
RETRIES_IN_FLIGHT = 4
# At most this many failed files are named in the error line.
NAMED_FAILURES = 3


class PutDirFailed(ClusterError):
    """Some files of a put-dir were not stored; ``failed`` says why, file by file."""

    def __init__(self, stored: list[str], failed: dict[str, str], total: int) -> None:
        shown = "; ".join(f"{why}" for _, why in sorted(failed.items())[:NAMED_FAILURES])
        more = len(failed) - NAMED_FAILURES
        super().__init__(
            f"put-dir: {len(failed)} of {total} files failed, {len(stored)} stored: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
        self.stored = stored
        self.failed = failed


@dataclass(frozen=True)
class Entry:
    path: Path
    name: str
    size: int


@dataclass
class _Run:
    """One put-dir's counts, shared by its batches."""

    total: int
    total_bytes: int
    progress: Progress | None
    done: list[str] = field(default_factory=list)
    done_bytes: int = 0
    retry: list[tuple[Entry, str]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    def finished(self, entry: Entry) -> None:
        self.done.append(entry.name)
        self.done_bytes += entry.size
        if self.progress is not None:
            label = f"files, {human_bytes(self.done_bytes)} of {human_bytes(self.total_bytes)}"
            self.progress(len(self.done), self.total, label)


def scan(localdir: Path, prefix: str) -> list[Entry]:
    """Every regular file under ``localdir`` (no symlinks), named PREFIX/relative/path."""
    prefix = prefix.strip("/")
    entries = []
    for p in sorted(localdir.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        rel = p.relative_to(localdir).as_posix()
        entries.append(Entry(p, f"{prefix}/{rel}" if prefix else rel, p.stat().st_size))
    return entries


def grant_chunks(entries: Sequence[Entry]) -> list[list[Entry]]:
    chunks: list[list[Entry]] = [[]]
    used = 0
    for e in entries:
        cost = len(e.name.encode()) + 16
        if chunks[-1] and (len(chunks[-1]) >= GRANT_FILES or used + cost > GRANT_BYTES):
            chunks.append([])
            used = 0
        chunks[-1].append(e)
        used += cost
    return [c for c in chunks if c]


def batches(granted: Sequence[tuple[Entry, Grant]]) -> list[list[tuple[Entry, Grant]]]:
    """Granted files grouped by replica set, then cut at BATCH_FILES / BATCH_BYTES."""
    groups: dict[tuple[str, ...], list[tuple[Entry, Grant]]] = {}
    for entry, grant in granted:
        groups.setdefault(tuple(sorted(grant.replicas)), []).append((entry, grant))
    out: list[list[tuple[Entry, Grant]]] = []
    for group in groups.values():
        batch: list[tuple[Entry, Grant]] = []
        used = 0
        for entry, grant in group:
            cost = ITEM_OVERHEAD + len(entry.name.encode())
            cost += entry.size if entry.size <= INLINE_MAX else 0
            if batch and (len(batch) >= BATCH_FILES or used + cost > BATCH_BYTES):
                out.append(batch)
                batch, used = [], 0
            batch.append((entry, grant))
            used += cost
        if batch:
            out.append(batch)
    return out


def read_small(paths: Sequence[Path]) -> list[tuple[bytes, str] | str]:
    """Each file's bytes and SHA-256, or why it cannot be read (blocking)."""
    out: list[tuple[bytes, str] | str] = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read(INLINE_MAX + 1)
        except OSError as e:
            out.append(f"cannot read {p}: {e.strerror or e}")
            continue
        if len(data) > INLINE_MAX:
            out.append(f"{p} grew while it was put")
        else:
            out.append((data, hashlib.sha256(data).hexdigest()))
    return out


class PutDir:
    """The shell that carries out put-dir batches for ``client``."""

    def __init__(self, client: SdfsClient) -> None:
        self.client = client
        self.view = client.view
        self.log: logging.Logger = client.log
        self.quorum = write_quorum(client.replication)
        self.streams = trio.CapacityLimiter(STREAMS_IN_FLIGHT)

    async def run(self, localdir: Path, prefix: str, progress: Progress | None) -> list[str]:
        if not localdir.is_dir():
            raise Invalid(f"local directory {localdir} does not exist")
        entries = await self.client.blocking.run(scan, localdir, prefix)
        for e in entries:
            check_name(e.name)
        run = _Run(len(entries), sum(e.size for e in entries), progress)
        send, receive = trio.open_memory_channel[list[tuple[Entry, Grant]]](BATCHES_IN_FLIGHT)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._grant_all, entries, send, run)
            async with receive:
                for _ in range(BATCHES_IN_FLIGHT):
                    nursery.start_soon(self._work, receive.clone(), run)
        await self._retry(run)
        if run.failed:
            raise PutDirFailed(sorted(run.done), run.failed, run.total)
        if progress is not None and not entries:
            progress(0, 0, "files")
        return sorted(run.done)

    async def _grant_all(
        self,
        entries: list[Entry],
        send: trio.MemorySendChannel[list[tuple[Entry, Grant]]],
        run: _Run,
    ) -> None:
        async with send:
            for chunk in grant_chunks(entries):
                request = PutBeginBatch(
                    tuple(PutWant(e.name, e.size) for e in chunk), self.client.client_name
                )
                try:
                    reply = await self.view.call_leader(request)
                    grants = expect(reply, PutGrantBatch, "put-dir grant").grants
                    if [g.name for g in grants] != [e.name for e in chunk]:
                        raise ClusterError("put-dir: the leader granted other files than asked")
                except ClusterError as e:
                    for entry in chunk:
                        run.failed[entry.name] = f"put {entry.name}: {e}"
                    continue
                for batch in batches(list(zip(chunk, grants, strict=True))):
                    await send.send(batch)

    async def _work(
        self, receive: trio.MemoryReceiveChannel[list[tuple[Entry, Grant]]], run: _Run
    ) -> None:
        async with receive:
            async for batch in receive:
                await self.put_batch(batch, run)

    async def put_batch(self, batch: list[tuple[Entry, Grant]], run: _Run) -> None:
        """Store, commit and report one batch; what fails goes to ``run``."""
        entries = [e for e, _ in batch]
        coord = BatchCoordinator([g for _, g in batch], self.quorum)
        inline: dict[int, bytes] = {}
        incoming: dict[tuple[int, str], str] = {}
        small = [i for i, e in enumerate(entries) if e.size <= INLINE_MAX]
        read = await self.client.blocking.run(read_small, [entries[i].path for i in small])
        for i, got in zip(small, read, strict=True):
            if isinstance(got, str):
                coord.unread(i, got)
            else:
                inline[i] = got[0]
                coord.read(i, len(got[0]), got[1])
        large = [i for i, e in enumerate(entries) if e.size > INLINE_MAX]
        if large:
            async with trio.open_nursery() as nursery:
                for i in large:
                    nursery.start_soon(self._stream, coord, i, entries[i], incoming)
        plan = coord.store_plan()

        async def store(node: str, indices: list[int]) -> None:
            items = tuple(
                BatchItem(coord.record(i), incoming.get((i, node), ""), inline.get(i, b""))
                for i in indices
            )
            size = sum(len(item.data) for item in items)
            coord.stored(node, indices, await self._ask(node, StoreBatch(items), size, indices))

        async with trio.open_nursery() as nursery:
            for node, indices in plan.items():
                nursery.start_soon(store, node, indices)
        plan = coord.commit_plan()

        async def commit(node: str, indices: list[int]) -> None:
            puts = tuple(
                PutKey(f.grant.name, f.grant.version, f.grant.put_id)
                for f in (coord.files[i] for i in indices)
            )
            coord.committed(node, indices, await self._ask(node, CommitBatch(puts), 0, indices))

        async with trio.open_nursery() as nursery:
            for node, indices in plan.items():
                nursery.start_soon(commit, node, indices)
        outcome = coord.finish()
        async with trio.open_nursery() as nursery:
            for abort in outcome.aborts:
                nursery.start_soon(self.client.abort_put, abort)
            if outcome.succeeded:
                nursery.start_soon(self._report, [Done(r, h) for _, r, h in outcome.succeeded])
        for i, _, _ in outcome.succeeded:
            run.finished(entries[i])
        for i, why in outcome.retry:
            self.log.warning("%s; putting it again alone", why)
            run.retry.append((entries[i], why))
        for i, why in outcome.failed:
            run.failed[entries[i].name] = why

    async def _stream(
        self,
        coord: BatchCoordinator,
        i: int,
        entry: Entry,
        incoming: dict[tuple[int, str], str],
    ) -> None:
        replicas = coord.files[i].grant.replicas
        async with self.streams:
            try:
                names, digests, errors = await push(
                    self.client.peers, self.client.transfers, entry.path, replicas
                )
            except OSError as e:  # the local file went away
                coord.unread(i, f"cannot read {entry.path}: {e.strerror or e}")
                return
        for node, name in names.items():
            incoming[(i, node)] = name
        coord.sent(i, entry.size, digests, errors)

    async def _ask(
        self, node: str, request: Any, size: int, indices: list[int]
    ) -> list[NodeError | None] | NodeError:
        """One batch request to ``node``: its answer per item, or one error for all."""
        try:
            timeout = io_timeout(size) + SECONDS_PER_FILE * len(indices)
            reply = await self.view.call(node, request, timeout)
        except RpcError as e:
            return NodeError(ErrorKind.FAILED, str(e))
        if isinstance(reply, BatchAck) and len(reply.kinds) == len(indices) == len(reply.errors):
            return node_errors(reply.kinds, reply.errors)
        return reply_error(reply)

    async def _report(self, done: list[Done]) -> None:
        """Tell the leader (whoever it is by now) that these puts are committed."""
        try:
            await self.view.call_leader(PutDoneBatch(tuple(done)))
        except ClusterError as e:
            # Committed on W nodes: a new leader finds them in their inventories.
            self.log.warning("put-dir: leader not told of %d puts: %s", len(done), e)

    async def _retry(self, run: _Run) -> None:
        """Put each file whose batch failed again, alone (a fresh grant, maybe new replicas)."""
        limiter = trio.CapacityLimiter(RETRIES_IN_FLIGHT)

        async def one(entry: Entry, first: str) -> None:
            async with limiter:
                try:
                    await self.client.put(entry.path, entry.name)
                except ClusterError as e:
                    run.failed[entry.name] = f"{e} (in its batch: {first})"
                    return
            run.finished(entry)

        async with trio.open_nursery() as nursery:
            for entry, why in run.retry:
                nursery.start_soon(one, entry, why)
