"""One node's replicas on disk.

Layout under the node's ``<data-dir>/sdfs``::

    incoming/                 transfers land here (scp or tcp), under a temporary name
    files/<quoted name>/
        <version>.data        the bytes of one version
        <version>.meta        JSON: name, version, put_id, size, sha256, state

Theory of operation
-------------------
A version arrives in ``incoming/``, is checked (size, and SHA-256 unless this
process already checked it on arrival: :class:`Arrivals`) and moved into
``files/`` with ``rename``, after an ``fsync`` of the data; its ``.meta`` is
written the same way (temporary file, fsync, rename, fsync of the directory).
The meta file is written *after* the data, so a crash at any point leaves either
no version or a complete one: a ``.data`` without a ``.meta`` is an orphan and is
removed when the store opens.  A file's directory is fsynced into ``files/`` when
it is created, and every removal (pruned, aborted, collected or deleted versions)
ends with an fsync of the directory it was in, so what is gone stays gone after a
power cut.

A disk that fails mid-change (full, or an I/O error) leaves the change undone: a
version whose meta did not land has its data removed and is not indexed, and the
caller gets a one-line :class:`StoreError` ("disk full on H2: ...").  A store whose
directories are deleted while the node runs (:meth:`ReplicaStore.recover_if_deleted`)
forgets every version, since they are gone, and starts again empty.

States: a put first lands PENDING (never served), becomes COMMITTED once its
write quorum is reached, and a delete leaves a DELETED tombstone at a version
above every version it removes.  A version is identified by (name, version) and
belongs to exactly one put (``put_id``): a second put that claims the same
version with another put_id is refused.

Invariants
----------
1. No partial or unverified bytes are ever visible under ``files/``.
2. Only COMMITTED versions are read; at most ``keep`` of them are kept per file.
3. Nothing at or below a tombstone's version is accepted again.

All methods are blocking file-system work; the trio layer calls them in a
worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from net.errors import ClusterError, ErrorKind
from net.messages import VersionRecord, VersionState
from sdfs.durable import fsync_dir, fsync_file, sha256_file
from sdfs.names import check_name, disk_name, from_disk_name
from sdfs.pages import PAGE_RECORDS, NameIndex, take_page


class StoreError(ClusterError):
    """A replica operation that cannot be done; the message is one line for a person."""


class VersionTaken(StoreError):
    """The version number is already bound to another put (two puts raced a change of
    leader and were granted the same number): the writer asks for a fresh one."""

    kind = ErrorKind.CONFLICT


def relative_data_path(name: str, version: int) -> str:
    """Where ``name``'s ``version`` lives, relative to a store's root (same on every node)."""
    return f"files/{disk_name(name)}/{version}.data"


class Arrivals:
    """Incoming files this process received and checked whole against the SHA-256 their
    sender authenticated (sdfs.transfer.server notes them; thread-safe, bounded).

    ``ingest`` takes a noted file's digest without reading it again: the receiver
    computed it over the bytes as they arrived and compared it with the sender's, which
    came in a frame sealed with the connection's key.  A file not noted (one that scp
    put there) is hashed.  The note holds the file's identity, so a file replaced
    since it was noted is not trusted.
    """

    LIMIT = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[tuple[int, int, int], str]] = OrderedDict()

    @staticmethod
    def _identity(path: Path) -> tuple[int, int, int]:
        st = os.stat(path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def note(self, path: Path, sha256: str) -> None:
        """``path`` arrived whole, and its bytes have this (verified) SHA-256."""
        identity = self._identity(path)
        with self._lock:
            self._seen[path.name] = (identity, sha256)
            self._seen.move_to_end(path.name)
            while len(self._seen) > self.LIMIT:
                self._seen.popitem(last=False)

    def take(self, path: Path) -> str | None:
        """The verified SHA-256 of ``path`` if it was noted and is still that file;
        forgets the note."""
        with self._lock:
            noted = self._seen.pop(path.name, None)
        if noted is None:
            return None
        try:
            return noted[1] if self._identity(path) == noted[0] else None
        except OSError:
            return None


def _whole(data: Path, record: VersionRecord) -> bool:
    """Whether ``data`` holds exactly the bytes ``record`` describes."""
    try:
        return data.stat().st_size == record.size and sha256_file(data) == record.sha256
    except OSError:
        return False


def disk_error(node: str, error: OSError, what: str) -> StoreError:
    """A one-line StoreError for a failed disk operation: "disk full on H2: ..." ."""
    full = error.errno in (errno.ENOSPC, errno.EDQUOT)
    return StoreError(
        f"{'disk full' if full else 'disk error'} on {node}: {what} "
        f"({error.strerror or type(error).__name__})"
    )


class ReplicaStore:
    def __init__(self, root: Path, keep: int = 5, node: str = "this node") -> None:
        self.root = root.resolve()
        self.keep = keep
        self.node = node  # named in error messages ("disk full on H2: ...")
        self.incoming = self.root / "incoming"
        self.files = self.root / "files"
        self._make_layout()
        self._lock = threading.Lock()
        self._index: NameIndex[dict[int, VersionRecord]] = NameIndex()
        # Directories with removals not yet fsynced (see _sync_removals).
        self._unsynced: set[Path] = set()
        self.arrivals = Arrivals()
        # Versions a batch (sdfs.storebatch) is writing, not yet indexed: put_id by
        # (name, version), so that no other put claims them meanwhile.
        self._staging: dict[tuple[str, int], str] = {}
        self._load()

    def _make_layout(self) -> None:
        """Create ``incoming/`` and ``files/`` where missing (durably: fsync the root)."""
        missing = not (self.incoming.is_dir() and self.files.is_dir())
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.files.mkdir(parents=True, exist_ok=True)
        if missing:
            fsync_dir(self.root)

    # --- opening -----------------------------------------------------------------

    def _load(self) -> None:
        """Index every complete version; remove temporaries and orphans of a crash."""
        loaded: dict[str, dict[int, VersionRecord]] = {}
        for leftover in self.incoming.iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        for d in self.files.iterdir():
            if not d.is_dir():
                continue
            versions: dict[int, VersionRecord] = {}
            for meta in d.glob("*.meta"):
                if not meta.stem.isdigit():
                    continue  # a .tmp-<v>.meta of an interrupted write: removed below
                try:
                    data = json.loads(meta.read_text())
                    record = VersionRecord(**data)
                except (OSError, ValueError, TypeError):
                    continue
                versions[record.version] = record
            # A crash in the middle of delete(): the tombstone is written, but some of
            # the versions it removes may still be here.  Finish the job.
            tomb = max(
                (v for v, r in versions.items() if r.state == VersionState.DELETED), default=0
            )
            # A PENDING meta whose data is not whole (a batch writes both before one
            # barrier, sdfs.storebatch) was never acknowledged: it goes.
            broken = [
                v
                for v, r in versions.items()
                if r.state == VersionState.PENDING and not _whole(d / f"{v}.data", r)
            ]
            for v in [v for v in versions if v < tomb] + broken:
                with contextlib.suppress(OSError):
                    (d / f"{v}.meta").unlink()
                del versions[v]
            for f in d.iterdir():
                stem, _, suffix = f.name.partition(".")
                orphan = suffix == "data" and (
                    not stem.isdigit()
                    or int(stem) not in versions
                    or versions[int(stem)].state == VersionState.DELETED
                )
                if orphan or f.name.startswith(".tmp"):
                    with contextlib.suppress(OSError):
                        f.unlink()
            if versions:
                loaded[from_disk_name(d.name)] = versions
        self._index.update(loaded)

    # --- queries -------------------------------------------------------------------

    def data_path(self, name: str, version: int) -> Path:
        return self.root / relative_data_path(name, version)

    def records(self, name: str | None = None) -> list[VersionRecord]:
        """Every version we hold (of ``name``, or of everything), oldest first."""
        with self._lock:
            names = [name] if name is not None else list(self._index)
            out: list[VersionRecord] = []
            for n in names:
                out.extend(sorted(self._index.get(n, {}).values(), key=lambda r: r.version))
            return out

    def records_page(
        self, after: str = "", limit: int = PAGE_RECORDS
    ) -> tuple[list[VersionRecord], str]:
        """The versions of the names after ``after``, about ``limit`` records, whole
        names only, in name order; and the cursor for the next page ("" at the end)."""
        with self._lock:
            index = self._index
            names, cursor = take_page(index.names_after(after), lambda n: len(index[n]), limit)
            out = [r for n in names for r in sorted(index[n].values(), key=lambda r: r.version)]
            return out, cursor

    def committed(self, name: str) -> list[VersionRecord]:
        """Readable versions of ``name``, newest first (none after a tombstone)."""
        with self._lock:
            versions = self._index.get(name, {})
            return sorted(
                (r for r in versions.values() if r.state == VersionState.COMMITTED),
                key=lambda r: -r.version,
            )

    def readable(self, name: str) -> Path | None:
        """The data file of the newest committed version held here, if any."""
        held = self.committed(name)
        if held and held[0].state == VersionState.COMMITTED:
            return self.data_path(name, held[0].version)
        return None

    def names(self) -> list[str]:
        """Files we hold a readable version of."""
        with self._lock:
            return sorted(
                n
                for n, vs in self._index.items()
                if any(r.state == VersionState.COMMITTED for r in vs.values())
            )

    def usage(self) -> tuple[int, int, int]:
        """``(files, versions, bytes)``: files with a readable version (as :meth:`names`),
        and the versions held on disk (pending and committed: tombstones hold no data)
        and their bytes.  One pass under the lock (``/metrics`` reads it per scrape)."""
        files = versions = size = 0
        with self._lock:
            for held in self._index.values():
                readable = False
                for r in held.values():
                    if r.state == VersionState.DELETED:
                        continue
                    versions += 1
                    size += r.size
                    readable = readable or r.state == VersionState.COMMITTED
                files += readable
        return files, versions, size

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    # --- changes -------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.files / disk_name(name)

    def _make_dir(self, name: str) -> Path:
        """``name``'s directory, created (and made durable in ``files/``) if new."""
        d = self._dir(name)
        if not d.is_dir():
            d.mkdir()
            fsync_dir(self.files)
        return d

    def _drop_dir_if_unused(self, name: str) -> None:
        """Remove ``name``'s directory if no version of it is indexed (after a failure)."""
        if name in self._index:
            return
        with contextlib.suppress(OSError):
            self._dir(name).rmdir()
            self._unsynced.discard(self._dir(name))
            self._unsynced.add(self.files)

    def _write_meta(self, record: VersionRecord) -> None:
        """Write ``record``'s meta atomically; on failure no temporary is left."""
        d = self._dir(record.name)
        tmp = d / f".tmp-{record.version}.meta"
        try:
            with tmp.open("w") as f:
                json.dump(asdict(record), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, d / f"{record.version}.meta")
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(d)

    def _tombstone(self, name: str) -> int:
        versions = self._index.get(name, {})
        return max((v for v, r in versions.items() if r.state == VersionState.DELETED), default=0)

    def ingest(self, record: VersionRecord, incoming_name: str) -> VersionRecord:
        """Move a transferred file into the store as ``record`` (checked, atomic).

        The check is the size and the SHA-256 against the record's (the digest the
        leader granted): the one verified on arrival for one of our :class:`Arrivals`,
        else the file's, hashed here."""
        if "/" in incoming_name or incoming_name in ("", ".", ".."):
            raise StoreError(f"bad incoming file name {incoming_name!r}")
        src = self.incoming / incoming_name
        try:
            check_name(record.name)  # inside the try: a refused name still drops the file
            if not src.is_file():
                raise StoreError(f"nothing arrived for {record.name} v{record.version}")
            size = src.stat().st_size
            if size != record.size:
                raise StoreError(
                    f"{record.name} v{record.version}: {size} bytes arrived, "
                    f"{record.size} were sent"
                )
            if (self.arrivals.take(src) or sha256_file(src)) != record.sha256:
                raise StoreError(f"{record.name} v{record.version}: checksum mismatch on arrival")
            with self._lock:
                # The tombstone first: the record at its version is the tombstone itself.
                if record.version <= self._tombstone(record.name):
                    raise StoreError(f"{record.name} was deleted after v{record.version}")
                staged = self._staging.get((record.name, record.version))
                if staged is not None and staged != record.put_id:
                    raise VersionTaken(
                        f"{record.name} v{record.version} already belongs to another put"
                    )
                if staged is not None:
                    raise StoreError(f"{record.name} v{record.version} is being stored")
                existing = self._index.get(record.name, {}).get(record.version)
                if existing is not None:
                    if existing.put_id != record.put_id:
                        raise VersionTaken(
                            f"{record.name} v{record.version} already belongs to another put"
                        )
                    return existing  # a retry of the same put: nothing to do
                data = self.data_path(record.name, record.version)
                try:
                    d = self._make_dir(record.name)
                    fsync_file(src)
                    os.replace(src, data)
                    fsync_dir(d)
                    self._write_meta(record)
                except OSError as e:
                    # Undo: no data without its meta, no empty directory of ours.
                    with contextlib.suppress(OSError):
                        data.unlink()
                        self._unsynced.add(data.parent)
                    self._drop_dir_if_unused(record.name)
                    self._sync_removals()
                    raise disk_error(
                        self.node, e, f"cannot store {record.name} v{record.version}"
                    ) from None
                self._index.setdefault(record.name, {})[record.version] = record
                self._prune(record.name)
                self._sync_removals()
                return record
        finally:
            with contextlib.suppress(OSError):
                src.unlink()

    def commit(self, name: str, version: int, put_id: str) -> VersionRecord:
        with self._lock:
            existing = self._index.get(name, {}).get(version)
            if existing is None or existing.put_id != put_id:
                raise StoreError(f"{name} v{version} is not here to commit")
            if existing.state == VersionState.COMMITTED:
                return existing
            if existing.state != VersionState.PENDING:
                raise StoreError(f"{name} v{version} was deleted")
            record = VersionRecord(**{**asdict(existing), "state": int(VersionState.COMMITTED)})
            try:
                self._write_meta(record)  # on failure the PENDING meta is still whole
            except OSError as e:
                raise disk_error(self.node, e, f"cannot commit {name} v{version}") from None
            self._index[name][version] = record
            self._prune(name)
            self._sync_removals()
            return record

    def abort(self, name: str, version: int, put_id: str) -> None:
        with self._lock:
            existing = self._index.get(name, {}).get(version)
            if existing is None or existing.put_id != put_id:
                return
            if existing.state == VersionState.PENDING:
                self._remove(name, version)
                self._sync_removals()

    def delete(self, name: str, version: int) -> None:
        """Tombstone ``name`` at ``version``: every version up to it goes."""
        with self._lock:
            versions = self._index.get(name, {})
            if any(r.state == VersionState.DELETED and v >= version for v, r in versions.items()):
                return
            tomb = VersionRecord(name, version, "", 0, "", int(VersionState.DELETED))
            try:
                self._make_dir(name)
                self._write_meta(tomb)
            except OSError as e:
                self._drop_dir_if_unused(name)
                self._sync_removals()
                raise disk_error(self.node, e, f"cannot delete {name} v{version}") from None
            versions = self._index.setdefault(name, {})
            versions[version] = tomb
            with contextlib.suppress(FileNotFoundError):  # a version at the tombstone itself
                self.data_path(name, version).unlink()
                self._unsynced.add(self._dir(name))
            for v in [v for v in versions if v < version]:
                self._remove(name, v)
            self._sync_removals()

    def gc_pending(self, older_than_s: float) -> int:
        """Drop PENDING versions whose put never finished (the writer died)."""
        cutoff = time.time() - older_than_s
        removed = 0
        with self._lock:
            for name, versions in list(self._index.items()):
                for v, r in list(versions.items()):
                    if r.state != VersionState.PENDING:
                        continue
                    try:
                        mtime = (self._dir(name) / f"{v}.meta").stat().st_mtime
                    except OSError:
                        mtime = 0
                    if mtime < cutoff:
                        self._remove(name, v)
                        removed += 1
            self._sync_removals()
        return removed

    def purge_tombstones(self, older_than_s: float, now: float | None = None) -> int:
        """Drop tombstones written more than ``older_than_s`` ago (sdfs.tombstones)."""
        cutoff = (time.time() if now is None else now) - older_than_s
        purged = 0
        with self._lock:
            for name, versions in list(self._index.items()):
                for v, r in list(versions.items()):
                    if r.state != VersionState.DELETED:
                        continue
                    try:
                        written = (self._dir(name) / f"{v}.meta").stat().st_mtime
                    except OSError:
                        written = 0
                    if written < cutoff:
                        self._remove(name, v)
                        purged += 1
            self._sync_removals()
        return purged

    def drop(self, name: str, version: int, put_id: str) -> bool:
        """Forget ``name`` ``version`` if it is put ``put_id``'s, leaving no tombstone
        (the leader's order to an outdated node, sdfs.tombstones)."""
        with self._lock:
            existing = self._index.get(name, {}).get(version)
            if existing is None or existing.put_id != put_id or not put_id:
                return False
            self._remove(name, version)
            self._sync_removals()
            return True

    def gc_incoming(self, older_than_s: float) -> int:
        """Drop files that arrived in ``incoming/`` but were never ingested (their put
        failed, or its writer died) and have not been touched for ``older_than_s``."""
        cutoff = time.time() - older_than_s
        removed = 0
        try:
            arrived = list(self.incoming.iterdir())
        except OSError:  # incoming/ is gone: recover_if_deleted deals with that
            return 0
        for path in arrived:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def recover_if_deleted(self) -> list[VersionRecord] | None:
        """If the store's directories were deleted while we ran: forget every version
        (their files are gone), recreate the layout empty, and return what was lost.
        None while the store is whole."""
        if self.incoming.is_dir() and self.files.is_dir():
            return None
        with self._lock:
            lost = [r for versions in self._index.values() for r in versions.values()]
            self._index.clear()
            self._unsynced.clear()
            self._make_layout()
            return sorted(lost, key=lambda r: (r.name, r.version))

    def _prune(self, name: str) -> None:
        """Keep the newest ``keep`` committed versions; older ones go."""
        versions = self._index.get(name, {})
        committed = sorted(
            (v for v, r in versions.items() if r.state == VersionState.COMMITTED), reverse=True
        )
        for v in committed[self.keep :]:
            self._remove(name, v)
        # A pending version below the oldest kept one can never be read.
        if len(committed) >= self.keep:
            floor = committed[self.keep - 1]
            for v in [v for v, r in versions.items() if r.state == VersionState.PENDING]:
                if v < floor:
                    self._remove(name, v)

    def _remove(self, name: str, version: int) -> None:
        """Unlink one version (made durable by the caller's :meth:`_sync_removals`)."""
        d = self._dir(name)
        for suffix in ("meta", "data"):  # meta first: a crash leaves an orphan, not a lie
            with contextlib.suppress(FileNotFoundError):
                (d / f"{version}.{suffix}").unlink()
        self._unsynced.add(d)
        self._index.get(name, {}).pop(version, None)
        if not self._index.get(name):
            self._index.pop(name, None)
            with contextlib.suppress(OSError):
                d.rmdir()
                self._unsynced.discard(d)
                self._unsynced.add(self.files)

    def _sync_removals(self) -> None:
        """fsync each directory something was removed from, once per change."""
        for d in sorted(self._unsynced):
            fsync_dir(d)  # a no-op for a directory that is itself gone
        self._unsynced.clear()

    def clear(self, names: Iterable[str]) -> None:
        with self._lock:
            for name in names:
                for v in list(self._index.get(name, {})):
                    self._remove(name, v)
            self._sync_removals()
