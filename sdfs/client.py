"""The SDFS client: the typed API that the console, inference and scripts use.

A client needs a :class:`~membership.peers.ClusterView` (inside a node, its own
membership; in a console, the members as a node reported them) and a way to move
bytes to each member (:data:`~sdfs.copies.Transfers`).  It reads and writes only
the local paths its caller gives it: a console on another machine puts its own
files and gets files onto its own disk, and no node ever opens a path named in
someone else's request.

Every method returns a dataclass and raises a :class:`~net.errors.ClusterError`
subclass: :class:`~net.errors.NotFound` (no such file), :class:`~net.errors.NoQuorum`
(too few replicas took a put), :class:`~net.errors.NotReady` (no leader answered
for ``LEADER_RETRY_WINDOW``), :class:`~net.errors.Invalid` (a bad name or
argument), or a plain ClusterError (a local file that cannot be read or written,
a copy that failed from every holder).

Puts follow :class:`~sdfs.putcoord.PutCoordinator`; reads ask the leader where a
file is, confirm the newest version with a read quorum of its holders, and copy
it from one of them, checked against its size and SHA-256 before it replaces the
destination.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from membership.peers import ClusterView
from net.blocking import Blocking, to_thread
from net.errors import ClusterError, Invalid, NotFound, expect, typed_error
from net.messages import (
    AbortPut,
    CommitVersion,
    DeleteFile,
    FileList,
    ListFiles,
    Locate,
    Location,
    PutBegin,
    PutDone,
    PutGrant,
    StatReply,
    StatRequest,
    StoreAck,
    VersionRecord,
    VersionState,
)
from net.progress import Progress
from net.rpc import RpcError
from sdfs import putcoord
from sdfs.copies import PeerDirectory, Transfers, ingest, push
from sdfs.durable import fsync_dir
from sdfs.metadata import read_quorum, write_quorum
from sdfs.names import check_name
from sdfs.store import StoreError, relative_data_path
from sdfs.transfer import TransferError


@dataclass(frozen=True)
class PutResult:
    name: str
    version: int
    replicas: tuple[str, ...]
    bytes: int


@dataclass(frozen=True)
class GetResult:
    name: str
    version: int
    bytes: int


@dataclass(frozen=True)
class FileStatus:
    """A file as the leader knows it: its replicas (of the newest version) and versions."""

    name: str
    replicas: tuple[str, ...]
    versions: tuple[int, ...]  # newest first
    bytes: int  # of the newest version


@dataclass(frozen=True)
class VersionsResult:
    name: str
    versions: tuple[int, ...]  # newest first, as written to the file


def delimiter(name: str, version: int) -> bytes:
    """The line that precedes each version in a ``get-versions`` file."""
    return f"===== {name} version {version} =====\n".encode()


class SdfsClient:
    def __init__(
        self,
        view: ClusterView,
        peers: PeerDirectory,
        transfers: Transfers,
        replication: int,
        *,
        client_name: str = "console",
        prefer: str | None = None,
        log: logging.Logger | None = None,
        blocking: Blocking = to_thread,
    ) -> None:
        self.view = view
        self.peers = peers
        self.transfers = transfers
        self.replication = replication
        self.client_name = client_name
        # A holder to read from first: the node this client runs in, if any.
        self.prefer = prefer
        self.log = log or logging.getLogger("sdfs.client")
        self.blocking = blocking

    # --- puts ------------------------------------------------------------------------

    async def put(self, local: Path, name: str, progress: Progress | None = None) -> PutResult:
        """Store the file at ``local`` as a new version of ``name``."""
        check_name(name)
        if not local.is_file():
            what = "is a directory" if local.is_dir() else "does not exist"
            raise Invalid(f"local file {local} {what}")
        size = local.stat().st_size
        coord = putcoord.PutCoordinator(name, size, write_quorum(self.replication))
        coord.times["start"] = trio.current_time()
        steps: list[putcoord.Step] = []
        incoming: dict[str, str] = {}
        while True:
            if not steps:
                # The SHA-256 is computed while the bytes go out (one read of the
                # file), so the leader hears it with PutDone, not here.
                request = PutBegin(name, size, "", self.client_name)
                try:
                    grant = expect(await self.view.call_leader(request), PutGrant, f"put {name}")
                except ClusterError as e:
                    steps = coord.refused(str(e), e.kind)
                else:
                    steps = coord.granted(grant, trio.current_time())
            step = steps.pop(0)
            if isinstance(step, putcoord.Send):
                incoming, digests, errors = await push(
                    self.peers,
                    self.transfers,
                    local,
                    step.grant.replicas,
                    progress,
                    quorum=coord.quorum(),
                )
                for node, error in sorted(errors.items()):
                    self.log.warning("put %s: copy to %s: %s", name, node, error.text)
                steps = coord.sent(digests, errors)
            elif isinstance(step, putcoord.Ingest):
                stored, errors = await ingest(
                    self.view, step.record, {n: incoming[n] for n in step.nodes}
                )
                steps = coord.ingested(stored, errors)
            elif isinstance(step, putcoord.Commit):
                steps = coord.committed(await self._commit(step), trio.current_time())
            elif isinstance(step, putcoord.Abort):
                await self.abort_put(step)
            elif isinstance(step, putcoord.Regrant):
                self.log.info("put %s: asking for a fresh version: %s", name, step.reason)
            elif isinstance(step, putcoord.Report):
                await self._report(step.record, step.holders)
            elif isinstance(step, putcoord.Succeed):
                self._log_put(coord, step)
                return PutResult(name, step.record.version, step.holders, size)
            elif isinstance(step, putcoord.Fail):
                raise typed_error(step.kind, step.reason)

    async def _commit(self, step: putcoord.Commit) -> list[str]:
        done: list[str] = []
        request = CommitVersion(step.record.name, step.record.version, step.record.put_id)

        async def one(node: str) -> None:
            try:
                reply = await self.view.call(node, request)
            except RpcError:
                return
            if isinstance(reply, StoreAck) and reply.ok:
                done.append(node)

        async with trio.open_nursery() as n:
            for node in step.nodes:
                n.start_soon(one, node)
        return done

    async def abort_put(self, step: putcoord.Abort) -> None:
        """Drop the pending copies and give the version number back to the leader."""
        request = AbortPut(step.name, step.version, step.put_id)
        leader = self.view.leader()

        async def quiet(node: str) -> None:
            with contextlib.suppress(RpcError):
                await self.view.call(node, request)

        async with trio.open_nursery() as n:
            for node in {*step.nodes, *([leader] if leader else [])}:
                n.start_soon(quiet, node)

    async def _report(self, record: VersionRecord, holders: Sequence[str]) -> None:
        """Tell the leader (whoever it is by now) that ``record`` is committed."""
        try:
            await self.view.call_leader(PutDone(record, tuple(holders)))
        except ClusterError as e:
            # The data is committed on W nodes; a new leader will find it in their
            # inventories.  Only the listing may lag.
            self.log.warning("put of %s v%d: leader not told: %s", record.name, record.version, e)

    def _log_put(self, coord: putcoord.PutCoordinator, step: putcoord.Succeed) -> None:
        t = coord.times
        end = trio.current_time()
        self.log.info(
            "put %s v%d (%.1f MB) on %s in %.2f s (grant %.2f, copies+commit %.2f, report %.2f)",
            step.record.name,
            step.record.version,
            step.record.size / 1e6,
            ", ".join(step.holders),
            end - t["start"],
            t["granted"] - t["start"],
            t["committed"] - t["granted"],
            end - t["committed"],
        )

    async def put_dir(
        self, localdir: Path, prefix: str, progress: Progress | None = None
    ) -> list[str]:
        """Put every regular file under ``localdir`` as PREFIX/relative/path; the names.

        In batches (sdfs.putdir); :class:`~sdfs.putdir.PutDirFailed` names the files
        that could not be stored, and why, if any."""
        from sdfs.putdir import PutDir

        return await PutDir(self).run(localdir, prefix, progress)

    # --- reads ---------------------------------------------------------------------------

    async def locate(self, name: str) -> Location:
        """The committed versions of ``name`` and their live holders; NotFound if none."""
        check_name(name)
        reply = await self.view.call_leader(Locate(name))
        location = expect(reply, Location, f"locate {name}")
        if not location.versions:
            suffix = " (deleted)" if location.deleted else ""
            raise NotFound(f"no such SDFS file: {name}{suffix}")
        return location

    async def ls(self, name: str) -> FileStatus:
        location = await self.locate(name)
        newest = location.versions[0]
        return FileStatus(
            name,
            newest.holders,
            tuple(v.record.version for v in location.versions),
            newest.record.size,
        )

    async def ls_all(self, pattern: str = "*") -> list[str]:
        """Every file name matching ``pattern``, sorted: asked for page by page (a
        page after the last name of the one before, so a change of leader between
        pages neither skips nor repeats a name, sdfs.pages)."""
        names: list[str] = []
        after = ""
        while True:
            reply = await self.view.call_leader(ListFiles(pattern, after))
            page = expect(reply, FileList, "ls-all")
            names.extend(page.names)
            if not page.next_after:
                return names
            if page.next_after <= after:
                raise ClusterError("ls-all: the leader's pages went backwards")
            after = page.next_after

    async def delete(self, name: str) -> None:
        check_name(name)
        ack = expect(await self.view.call_leader(DeleteFile(name)), StoreAck, f"delete {name}")
        if not ack.ok:
            raise ClusterError(f"delete {name}: {ack.error}")

    async def get(self, name: str, local: Path, progress: Progress | None = None) -> GetResult:
        """Copy the newest version of ``name`` to ``local`` (whole and checked, or not at all)."""
        location = await self.locate(name)
        if local.is_dir():
            raise Invalid(f"local path {local} is a directory")
        record, holders = await self._quorum_newest(location)
        await self._fetch(record, holders, local, progress)
        return GetResult(name, record.version, record.size)

    async def get_versions(self, name: str, count: int, local: Path) -> VersionsResult:
        """The last ``count`` versions into one file, newest first, each behind a delimiter."""
        if count < 1:
            raise Invalid("N must be at least 1")
        location = await self.locate(name)
        if local.is_dir():
            raise Invalid(f"local path {local} is a directory")
        chosen = location.versions[:count]
        tmp = local.with_name(f".{local.name}.versions-{uuid.uuid4().hex[:8]}")
        parts: list[Path] = []
        try:
            for v in chosen:
                part = local.with_name(f".{local.name}.v{v.record.version}-{uuid.uuid4().hex[:8]}")
                parts.append(part)
                await self._fetch(v.record, v.holders, part, None)
            versions = [v.record.version for v in chosen]
            await self.blocking.run(_concatenate, name, versions, parts, tmp)
            await self.blocking.run(_replace_durably, tmp, local)
        except OSError as e:
            raise ClusterError(f"cannot write {local}: {e.strerror or e}") from None
        finally:
            for p in [*parts, tmp]:
                p.unlink(missing_ok=True)
        return VersionsResult(name, tuple(v.record.version for v in chosen))

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
                reply = await self.view.call(node, StatRequest(location.name))
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
        order = sorted(holders, key=lambda n: (n != self.prefer, random.random()))
        errors = []
        for node in order:
            try:
                peer = await self.peers.peer(node)
                remote = os.path.join(
                    peer.store_dir, relative_data_path(record.name, record.version)
                )
                # The transfer checks size and checksum before the copy replaces
                # ``local``: a bad copy never appears there.
                await self.transfers(node).pull(
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
        raise ClusterError(f"get {record.name} v{record.version} failed: " + "; ".join(errors))


def _replace_durably(tmp: Path, local: Path) -> None:
    """Rename ``tmp`` over ``local`` and make the rename survive a power cut."""
    os.replace(tmp, local)
    fsync_dir(local.parent)


def _concatenate(name: str, versions: list[int], parts: list[Path], out_path: Path) -> None:
    with out_path.open("wb") as out:
        for version, part in zip(versions, parts, strict=True):
            out.write(delimiter(name, version))
            last = b""
            with part.open("rb") as f:
                while chunk := f.read(1 << 20):
                    out.write(chunk)
                    last = chunk
            if last and not last.endswith(b"\n"):
                out.write(b"\n")
        out.flush()
        os.fsync(out.fileno())
