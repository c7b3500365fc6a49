"""The leader's view of SDFS: which versions of which files exist, and where.

Theory of operation
-------------------
The leader holds no state of its own that it cannot rebuild: every fact here
comes from the nodes' stores (their inventories) or from puts it granted since.
When leadership moves, the new leader asks every live node for its inventory and
:meth:`Metadata.rebuild` folds them together; until then it answers "rebuilding"
and clients retry.

Versions are numbered per file by the leader (``grant``): one above anything any
node holds for that file, pending versions and tombstones included, so two puts
never share a number even across a change of leader (a put that raced the change
is refused by the replicas, which bind a version to one ``put_id``, and retried).

Placement is deterministic: a file's replicas are ``replication`` consecutive live
members of the ring, starting at a point picked by hashing its name.  When
members fail, :meth:`repairs` names, for every file short of copies, a live
holder to copy from and the next members in its placement order to copy to.

Quorums: with N = replication copies, a put is acknowledged after W = N - 1
copies committed (one dead replica never blocks a write; W < N), and a read
consults R = N - W + 1 copies (W + R > N), so any read set meets every
acknowledged write.  For N = 4: W = 3, R = 2.

Bounds: an entry that no longer stands for a file (deleted, or granted and never
written) is forgotten once nothing can still need it (:meth:`Metadata.purge`): a
tombstone after the grace period in which the nodes keep theirs (sdfs.tombstones),
an empty entry after its grant and any pending copies of it have expired.

Nothing here awaits, reads a clock or touches a file; times come in as ``now``.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from net.messages import VersionRecord, VersionState
from sdfs.pages import NameIndex, glob_page

# A granted put that has not reported back in this long is presumed dead; its
# version number stays used (numbers only grow), but it no longer counts as pending.
GRANT_TIMEOUT = 600.0
# An entry with no version and no tombstone (its grants aborted or expired) is
# forgotten this long after it last changed: by then the replicas have dropped any
# pending copy of it too (sdfs.replica.PENDING_TTL), so its numbers are free again.
EMPTY_ENTRY_TTL = 2 * GRANT_TIMEOUT
# A tombstone entry outlives the nodes' copies of the tombstone (kept the grace period
# from when each was written, which is never after the leader last learned of it or
# sent it) by this much: their purge runs every minute, and clocks drift.
TOMBSTONE_MARGIN = 3600.0


def write_quorum(replication: int) -> int:
    return max(1, replication - 1)


def read_quorum(replication: int) -> int:
    return replication - write_quorum(replication) + 1


def placement(name: str, ring: Sequence[str], count: int) -> list[str]:
    """``count`` consecutive members of ``ring`` (live members, ring order) for ``name``."""
    if not ring:
        return []
    start = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") % len(ring)
    ordered = list(ring[start:]) + list(ring[:start])
    return ordered[: min(count, len(ordered))]


@dataclass
class VersionInfo:
    record: VersionRecord
    holders: set[str] = field(default_factory=set)

    @property
    def committed(self) -> bool:
        return self.record.state == VersionState.COMMITTED


@dataclass
class FileInfo:
    name: str
    versions: dict[int, VersionInfo] = field(default_factory=dict)
    tombstone: int = 0
    highest: int = 0  # the highest version number ever seen or granted
    touched: float = 0.0  # when it last changed (a grant, a fold, a delete)

    def committed(self) -> list[VersionInfo]:
        """Readable versions, newest first."""
        return sorted(
            (
                v
                for v in self.versions.values()
                if v.committed and v.record.version > self.tombstone
            ),
            key=lambda v: -v.record.version,
        )

    def newest(self) -> VersionInfo | None:
        """The newest readable version (no sort: the repair scan asks every file)."""
        best: VersionInfo | None = None
        for v in self.versions.values():
            newer = best is None or v.record.version > best.record.version
            if newer and v.committed and v.record.version > self.tombstone:
                best = v
        return best

    @property
    def exists(self) -> bool:
        return self.newest() is not None


@dataclass(frozen=True)
class Repair:
    """Copy ``records`` (all committed versions ``source`` holds) to ``targets``."""

    name: str
    source: str
    targets: tuple[str, ...]
    records: tuple[VersionRecord, ...]


class Metadata:
    def __init__(self, replication: int, keep: int) -> None:
        self.replication = replication
        self.keep = keep
        self.files: NameIndex[FileInfo] = NameIndex()
        self._grants: dict[str, tuple[str, int, float]] = {}  # put_id -> (name, version, at)
        self._repairing: dict[str, float] = {}  # name -> when the order went out
        # Files that may have fewer live copies than wanted: the only ones a repair pass
        # looks at (a pass over every file took 1.7 s of the event loop at 100,000
        # files, and the leader missed its pings).  Every change that can take a copy
        # away or leave too few adds to it; a change of the live ring adds every file.
        self._check: set[str] = set()
        self._ring: frozenset[str] = frozenset()

    # --- building the view -------------------------------------------------------

    def rebuild(self, inventories: Mapping[str, Iterable[VersionRecord]], now: float = 0.0) -> None:
        """Start over from what the live nodes hold."""
        self.files.clear()
        self._grants.clear()
        self._repairing.clear()
        self._check.clear()
        for node, records in inventories.items():
            self.add_inventory(node, records, now)

    def _file(self, name: str, now: float) -> FileInfo:
        f = self.files.get(name)
        if f is None:
            f = self.files[name] = FileInfo(name)
        f.touched = max(f.touched, now)
        return f

    def add_inventory(
        self, node: str, records: Iterable[VersionRecord], now: float = 0.0
    ) -> list[tuple[str, int]]:
        """Fold one node's holdings in; returns (name, tombstone) it should apply."""
        stale: dict[str, int] = {}
        for r in records:
            self._check.add(r.name)
            f = self._file(r.name, now)
            f.highest = max(f.highest, r.version)
            if r.state == VersionState.DELETED:
                if r.version > f.tombstone:
                    f.tombstone = r.version
                    f.versions = {v: i for v, i in f.versions.items() if v > r.version}
                continue
            if r.version <= f.tombstone:
                stale[r.name] = f.tombstone
                continue
            info = f.versions.get(r.version)
            if info is None:
                info = f.versions[r.version] = VersionInfo(r)
            elif info.record.put_id != r.put_id:
                if r.state == VersionState.COMMITTED and not info.committed:
                    # What we saw first was the losing put's pending leftover (two
                    # grants of one number across a change of leader): the committed
                    # put is the winner, whatever order the inventories came in.
                    info = f.versions[r.version] = VersionInfo(r)
                else:
                    continue  # a losing put's leftover; the replica will refuse to commit it
            elif r.state == VersionState.COMMITTED and not info.committed:
                info.record = r
            info.holders.add(node)
        return sorted(stale.items())

    def node_gone(self, node: str) -> None:
        for name, f in self.files.items():
            for info in f.versions.values():
                if node in info.holders:
                    info.holders.discard(node)
                    self._check.add(name)

    # --- puts ------------------------------------------------------------------

    def grant(self, name: str, put_id: str, now: float) -> int:
        f = self._file(name, now)
        f.highest = max(f.highest, f.tombstone) + 1
        self._grants[put_id] = (name, f.highest, now)
        return f.highest

    def floor(self, name: str, version: int, now: float) -> None:
        """A version of ``name`` up to ``version`` was granted (sdfs.lease): never
        grant one of those numbers again."""
        f = self._file(name, now)
        f.highest = max(f.highest, version)

    def granted_at(self, put_id: str) -> float | None:
        """When ``put_id`` was granted, while its grant is open (not done, aborted or
        expired)."""
        grant = self._grants.get(put_id)
        return None if grant is None else grant[2]

    def put_done(self, record: VersionRecord, holders: Iterable[str]) -> None:
        self._grants.pop(record.put_id, None)
        f = self._file(record.name, 0.0)
        f.highest = max(f.highest, record.version)
        if record.version <= f.tombstone:
            return
        info = f.versions.get(record.version)
        committed = VersionRecord(
            record.name, record.version, record.put_id, record.size, record.sha256,
            int(VersionState.COMMITTED),
        )  # fmt: skip
        if info is None or info.record.put_id != record.put_id:
            info = f.versions[record.version] = VersionInfo(committed)
        info.record = committed
        info.holders.update(holders)
        self._check.add(record.name)
        self._trim(f)

    def abort(self, put_id: str) -> None:
        self._grants.pop(put_id, None)

    def expire_grants(self, now: float) -> None:
        for put_id, (_, _, at) in list(self._grants.items()):
            if now - at > GRANT_TIMEOUT:
                del self._grants[put_id]

    def _trim(self, f: FileInfo) -> None:
        for old in f.committed()[self.keep :]:
            del f.versions[old.record.version]

    # --- deletes ---------------------------------------------------------------

    def delete(self, name: str, now: float = 0.0) -> int:
        """Tombstone ``name``; returns the tombstone's version.  KeyError if absent."""
        f = self.files.get(name)
        if f is None or not f.exists:
            raise KeyError(name)
        f.touched = max(f.touched, now)
        f.highest += 1
        f.tombstone = f.highest
        f.versions.clear()
        return f.tombstone

    # --- queries ---------------------------------------------------------------

    def locate(self, name: str) -> tuple[list[VersionInfo], bool]:
        """(committed versions newest first, deleted?)"""
        f = self.files.get(name)
        if f is None:
            return [], False
        return f.committed(), f.tombstone > 0 and not f.exists

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(
            n for n, f in self.files.items() if f.exists and fnmatch.fnmatchcase(n, pattern)
        )

    def count(self) -> int:
        """How many files exist."""
        return sum(1 for f in self.files.values() if f.exists)

    def names_page(self, pattern: str, after: str, limit: int) -> tuple[list[str], str]:
        """A page of :meth:`names` after ``after``, and the cursor for the next ("" at
        the end): sdfs.pages.glob_page."""
        return glob_page(self.files, pattern, after, limit, lambda f: f.exists)

    def touch(self, name: str, now: float) -> None:
        """``name``'s tombstone was just sent to a node: keep the entry a grace from now."""
        f = self.files.get(name)
        if f is not None:
            f.touched = max(f.touched, now)

    def known(self, record: VersionRecord) -> bool:
        """Whether this exact version (same put) is already counted, or lies at or
        below a tombstone (what an outdated node may confirm, sdfs.tombstones)."""
        f = self.files.get(record.name)
        if f is None:
            return False
        if record.version <= f.tombstone:
            return True
        info = f.versions.get(record.version)
        return info is not None and info.record.put_id == record.put_id

    # --- bounds ------------------------------------------------------------------

    def purge(self, now: float, grace: float) -> list[str]:
        """Forget entries that stand for no file and that nothing can need any more: a
        tombstone untouched for ``grace`` + TOMBSTONE_MARGIN (every node has purged its
        copy of it by then), an empty entry untouched for EMPTY_ENTRY_TTL.  Entries
        with a grant out are kept.  Returns the names forgotten."""
        granted = {name for name, _, _ in self._grants.values()}
        gone = [
            name
            for name, f in self.files.items()
            if not f.exists
            and name not in granted
            and now - f.touched >= (grace + TOMBSTONE_MARGIN if f.tombstone else EMPTY_ENTRY_TTL)
        ]
        for name in gone:
            del self.files[name]
            self._repairing.pop(name, None)
        return gone

    # --- repair ----------------------------------------------------------------

    def repairs(
        self,
        ring: Sequence[str],
        now: float,
        retry_after: float = 30.0,
        limit: int | None = None,
    ) -> list[Repair]:
        """Orders that bring every file back to ``replication`` live copies (at most
        ``limit`` of them, in name order).

        ``ring`` is the live members in ring order.  A file with an order out
        less than ``retry_after`` seconds ago is left alone.
        """
        live = self._live(ring)
        want = min(self.replication, len(ring))
        out: list[Repair] = []
        for name in sorted(self._check):
            if limit is not None and len(out) >= limit:
                break
            f = self.files.get(name)
            newest = f.newest() if f is not None else None
            if f is None or newest is None:
                self._check.discard(name)
                continue
            holders = newest.holders & live
            if len(holders) >= want:
                self._check.discard(name)  # complete
                continue
            if not holders:
                continue  # lost beyond repair (logged by the caller), unless a holder returns
            if now - self._repairing.get(name, -retry_after) < retry_after:
                continue
            versions = f.committed()
            order = placement(name, ring, len(ring))
            targets = tuple(n for n in order if n not in holders)[: want - len(holders)]
            source = next(n for n in order if n in holders)
            records = tuple(v.record for v in versions if source in v.holders)
            self._repairing[name] = now
            out.append(Repair(name, source, targets, records))
        return out

    def lost(self, ring: Sequence[str]) -> list[str]:
        """Files whose every copy is on members no longer live."""
        live = self._live(ring)
        return sorted(
            name
            for name in self._check
            if (f := self.files.get(name)) is not None
            and (v := f.newest()) is not None
            and not (v.holders & live)
        )

    def _live(self, ring: Sequence[str]) -> frozenset[str]:
        """``ring`` as a set; when it changed, every file is looked at again."""
        live = frozenset(ring)
        if live != self._ring:
            self._ring = live
            self._check.update(self.files)
        return live

    def repaired(self, name: str, records: Iterable[VersionRecord], targets: Iterable[str]) -> None:
        self._repairing.pop(name, None)
        f = self.files.get(name)
        if f is None:
            return
        done = set(targets)
        for r in records:
            info = f.versions.get(r.version)
            if info is not None and info.record.put_id == r.put_id:
                info.holders |= done

    def repair_failed(self, name: str) -> None:
        self._repairing.pop(name, None)
