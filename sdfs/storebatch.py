"""The replica store's batch half: many versions stored, or committed, in one group commit.

A put-dir sends each replica one StoreBatch and one CommitBatch per batch of files
(sdfs.putdir).  Done one version at a time (:meth:`ReplicaStore.ingest` and
:meth:`~ReplicaStore.commit`), that is seven fsyncs per small file per replica,
which on a shared disk cost more than everything else in the put together.  Here a
batch pays for one file-system barrier when stored and one when committed, however
many files it holds, the way databases commit many transactions with one log flush.

Theory of operation
-------------------
``ingest_batch``: each item is checked (size and SHA-256, as ``ingest`` checks) and
its data written to its final place ``files/<name>/<version>.data``, then its
PENDING meta beside it; one barrier (``syncfs``: every change to this file system is
durable when it returns) makes them all durable.  Only then are the versions indexed
and the answer sent.  A crash before the barrier may leave a meta durable without
its data: ``ReplicaStore._load`` checks every PENDING version's data against its
size and SHA-256 and drops one that does not match (it was never acknowledged).
``commit_batch`` rewrites each meta as COMMITTED, then one barrier, then the index
and the answer; its data was durable since its ingest answered.

Invariants (those of sdfs.store, unchanged):

1. A COMMITTED meta is never durable before its data (the ingest's barrier came
   first), and a PENDING one whose data is not whole is dropped on open.
2. Nothing is indexed, answered or readable before it is durable; a crash before
   that may tear a meta this batch wrote (they are written in place, see
   ``_write_meta``), which loses only what this node had not acknowledged.
3. While a batch writes a version it is reserved (``ReplicaStore._staging``): no
   other put can claim that number, and a delete that tombstones it meanwhile wins
   (the batch's files are removed and the item refused).

All of this is blocking file-system work, for a worker thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from net.errors import ClusterError
from net.messages import VersionRecord, VersionState
from sdfs.durable import sha256_bytes, sha256_file
from sdfs.names import check_name
from sdfs.store import ReplicaStore, StoreError, VersionTaken, disk_error


def _find_syncfs() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_SYNCFS = _find_syncfs()


def barrier(root: Path) -> None:
    """Make every change to the file system that holds ``root`` durable: syncfs(2), or
    sync(2) where there is no syncfs."""
    if _SYNCFS is None:
        os.sync()
        return
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _SYNCFS(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


def ingest_batch(
    store: ReplicaStore, items: Sequence[tuple[VersionRecord, str, bytes]]
) -> list[ClusterError | None]:
    """Store each (record, incoming name, inline bytes) as PENDING; per item, None or why
    not.  An item with no incoming name brings its bytes inline."""
    out: list[ClusterError | None] = [None] * len(items)
    staged: list[tuple[int, VersionRecord]] = []
    try:
        for k, (record, incoming, data) in enumerate(items):
            try:
                if _stage(store, record, incoming, data):
                    staged.append((k, record))
            except ClusterError as e:
                out[k] = e
        if not staged:
            return out
        try:
            with store._lock:
                for k, record in staged:
                    try:
                        _write_meta(store, record)
                    except OSError as e:
                        out[k] = disk_error(store.node, e, f"cannot store {_what(record)}")
            barrier(store.root)
        except OSError as e:
            error = disk_error(store.node, e, "cannot store a batch")
            out = [error if k in dict(staged) else r for k, r in enumerate(out)]
        with store._lock:
            for k, record in staged:
                if out[k] is None and record.version <= store._tombstone(record.name):
                    out[k] = StoreError(f"{record.name} was deleted after v{record.version}")
                if out[k] is not None:
                    _unstage(store, record)
                    continue
                store._index.setdefault(record.name, {})[record.version] = record
                store._prune(record.name)
            store._sync_removals()
    finally:
        with store._lock:
            for _, record in staged:
                store._staging.pop((record.name, record.version), None)
    return out


def commit_batch(
    store: ReplicaStore, puts: Sequence[tuple[str, int, str]]
) -> list[ClusterError | None]:
    """Commit each (name, version, put_id); per item, None or why not."""
    out: list[ClusterError | None] = [None] * len(puts)
    staged: list[tuple[int, VersionRecord]] = []
    with store._lock:
        for k, (name, version, put_id) in enumerate(puts):
            existing = store._index.get(name, {}).get(version)
            if existing is None or existing.put_id != put_id:
                out[k] = StoreError(f"{name} v{version} is not here to commit")
            elif existing.state == VersionState.COMMITTED:
                pass  # a retry: already done
            elif existing.state != VersionState.PENDING:
                out[k] = StoreError(f"{name} v{version} was deleted")
            else:
                record = VersionRecord(**{**asdict(existing), "state": int(VersionState.COMMITTED)})
                try:
                    _write_meta(store, record)  # over the PENDING one, in place
                    staged.append((k, record))
                except OSError as e:
                    out[k] = disk_error(store.node, e, f"cannot commit {name} v{version}")
    if not staged:
        return out
    try:
        barrier(store.root)
    except OSError as e:
        for k, record in staged:
            out[k] = disk_error(store.node, e, f"cannot commit {_what(record)}")
        return out
    with store._lock:
        for k, record in staged:
            current = store._index.get(record.name, {}).get(record.version)
            if current is None or current.put_id != record.put_id:
                # Aborted or deleted while the barrier ran: its files went with it.
                out[k] = StoreError(f"{_what(record)} was removed while it was committed")
                continue
            store._index[record.name][record.version] = record
            store._prune(record.name)
        store._sync_removals()
    return out


def _what(record: VersionRecord) -> str:
    return f"{record.name} v{record.version}"


def _stage(store: ReplicaStore, record: VersionRecord, incoming: str, data: bytes) -> bool:
    """Check one item and write its data into place (reserved, not indexed).  False if
    this put already stored it (a retry); a ClusterError if it is refused."""
    src: Path | None = None
    if incoming:
        if "/" in incoming or incoming in (".", ".."):
            raise StoreError(f"bad incoming file name {incoming!r}")
        src = store.incoming / incoming
    try:
        check_name(record.name)
        where = _what(record)
        if src is not None:
            if not src.is_file():
                raise StoreError(f"nothing arrived for {where}")
            size = src.stat().st_size
            if size != record.size:
                raise StoreError(f"{where}: {size} bytes arrived, {record.size} were sent")
            if not store.arrivals.take(src) and sha256_file(src) != record.sha256:
                raise StoreError(f"{where}: checksum mismatch on arrival")
        else:
            if len(data) != record.size:
                raise StoreError(f"{where}: {len(data)} bytes arrived, {record.size} were sent")
            if sha256_bytes(data) != record.sha256:
                raise StoreError(f"{where}: checksum mismatch on arrival")
        with store._lock:
            if record.version <= store._tombstone(record.name):
                raise StoreError(f"{record.name} was deleted after v{record.version}")
            key = (record.name, record.version)
            existing = store._index.get(record.name, {}).get(record.version)
            owner = store._staging.get(key) or (existing.put_id if existing else None)
            if owner is not None and owner != record.put_id:
                raise VersionTaken(f"{where} already belongs to another put")
            if key in store._staging:
                raise StoreError(f"{where} is being stored")
            if existing is not None:
                return False
            target = store.data_path(record.name, record.version)
            try:
                target.parent.mkdir(exist_ok=True)
                if src is not None:
                    os.replace(src, target)
                else:
                    with target.open("wb") as f:
                        f.write(data)
            except OSError as e:
                with contextlib.suppress(OSError):
                    target.unlink()
                store._drop_dir_if_unused(record.name)
                raise disk_error(store.node, e, f"cannot store {where}") from None
            store._staging[key] = record.put_id
            return True
    finally:
        if src is not None:
            with contextlib.suppress(OSError):
                src.unlink()


def _write_meta(store: ReplicaStore, record: VersionRecord) -> None:
    """``record``'s meta, written in place, not yet durable (the caller's barrier makes
    it so).

    In place, not through a temporary and a rename (a third of a small file's cost
    here): a crash before the barrier may leave it torn, and ``_load`` then cannot read
    it and drops the version; but this node has not answered for the change yet, so
    nothing it acknowledged is lost.  A torn PENDING meta loses a put this node never
    committed; a torn COMMITTED one, a commit it never confirmed: the writer counted
    neither toward its quorum (the single ``commit`` renames, and stays the way for
    every other change)."""
    data = json.dumps(asdict(record)).encode()
    fd = os.open(
        store._dir(record.name) / f"{record.version}.meta", os.O_WRONLY | os.O_CREAT, 0o644
    )
    try:
        # Over an existing meta (a commit: PENDING and COMMITTED encode to the same
        # length) without truncating it first: on ext4 a truncate-then-rewrite makes
        # close() start writing the file back at once (auto_da_alloc), which was most of
        # a put-dir's time; the batch's barrier makes it durable anyway.
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if os.fstat(fd).st_size > len(data):
            os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _unstage(store: ReplicaStore, record: VersionRecord) -> None:
    """Remove a refused item's files (the caller holds the store's lock)."""
    d = store._dir(record.name)
    for suffix in ("meta", "data"):
        with contextlib.suppress(OSError):
            (d / f"{record.version}.{suffix}").unlink()
    store._unsynced.add(d)
    store._drop_dir_if_unused(record.name)
