"""SDFS file copies in one trio process on virtual time: a Transfer without threads or sockets.

:class:`MemoryTransfer` is to :mod:`sdfs.transfer` what :mod:`net.memrpc` is to
:mod:`net.rpc`.  The nodes' stores are real directories (a
:class:`~sdfs.store.ReplicaStore` needs a disk), and a copy really moves the bytes
between them, but on the trio thread, a chunk at a time, each chunk arriving when a
link of ``bytes_per_second`` would have carried it.  So a copy of ``size`` bytes
that starts at ``t`` ends at exactly ``t + size / bytes_per_second`` virtual
seconds, takes no real time to speak of, and can be interrupted half-way.

It keeps the :class:`~sdfs.transfer.Transfer` contract:

* the destination appears whole or not at all: chunks go to a hidden sibling
  temporary (:func:`~sdfs.transfer.temp_sibling`) that is renamed into place after
  the last one, and removed on any failure or cancellation;
* the result carries the SHA-256 of the bytes that moved, computed as they moved;
  ``pull`` checks ``expected_size`` / ``expected_sha256`` before the rename;
* a failure is a :class:`~sdfs.transfer.TransferError` (per target in
  ``push_many``, which never raises one);
* ``progress(done, total, label)`` after every chunk, never backwards, last ``(total, total)``.

:attr:`CopyNet.copies` keeps every copy as it happened (ends, bytes, virtual start and
end, error) and :meth:`CopyNet.in_progress` says which are under way, for tests to
assert on.

Faults: :meth:`CopyNet.down` is a node's crash as the copies see it.  A copy from or
to that node in progress fails at once ("connection reset"), leaving nothing at its
destination; a new one to it fails at once ("connection refused") until
:meth:`CopyNet.up`.  :class:`tests.helpers.sdfs_cluster.SdfsCluster` calls ``down``
when it crashes a node.

Which node a :class:`~sdfs.transfer.Peer` is comes from ``peer.name``; where its
files are from ``peer.incoming_dir`` and ``peer.store_dir`` (what its replica said
in ``PeerInfo``), which are real paths on this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from sdfs.transfer import (
    Peer,
    Progress,
    TransferError,
    TransferResult,
    pull_label,
    push_label,
    temp_sibling,
)
from sdfs.transfer.base import push_each
from sdfs.transfer.local import source_in_store, target_in_incoming

# Bytes per step of a copy: where it can be interrupted, and how often progress is told.
CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class Copy:
    """One copy as it happened, for tests to look at."""

    src: str  # the node the bytes came from
    dst: str  # the node they went to
    path: str  # the destination
    size: int  # bytes moved (all of them, or as far as it got)
    started: float
    ended: float
    error: str | None = None  # None: it succeeded


@dataclass(eq=False)
class _Link:
    """A copy in progress between two nodes; ``broken`` is set when either goes down."""

    ends: tuple[str, str]
    broken: trio.Event = field(default_factory=trio.Event)
    why: str = ""


class CopyNet:
    """The links between nodes: how fast they carry bytes, and which nodes are down."""

    def __init__(self, bytes_per_second: float, chunk_size: int = CHUNK_SIZE) -> None:
        if bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be positive, got {bytes_per_second}")
        self.bytes_per_second = bytes_per_second
        self.chunk_size = chunk_size
        self.copies: list[Copy] = []
        self._down: set[str] = set()
        self._links: set[_Link] = set()

    def transfer(self, node: str) -> MemoryTransfer:
        """The Transfer that ``node`` uses (it is one end of every copy it makes)."""
        return MemoryTransfer(self, node)

    def down(self, node: str) -> None:
        """``node`` crashed: every copy it is an end of breaks now."""
        self._down.add(node)
        for link in list(self._links):
            if node in link.ends and not link.broken.is_set():
                link.why = f"{node} went down"
                link.broken.set()

    def up(self, node: str) -> None:
        """``node`` runs again (a restart): copies to and from it work again."""
        self._down.discard(node)

    def in_progress(self) -> list[tuple[str, str]]:
        """(from, to) of every copy under way."""
        return sorted(link.ends for link in self._links)

    def is_down(self, node: str) -> bool:
        return node in self._down

    def seconds(self, size: int) -> float:
        """How long a copy of ``size`` bytes takes."""
        return size / self.bytes_per_second

    async def copy(
        self,
        src: tuple[str, Path],
        dst: tuple[str, Path],
        what: str,
        progress: Progress | None = None,
        label: str = "",
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult:
        """Move the file ``src`` (node, path) to ``dst`` (node, path), whole or not at all."""
        (src_node, src_path), (dst_node, dst_path) = src, dst
        started = trio.current_time()
        await trio.lowlevel.checkpoint()
        record = _Recorder(self, src_node, dst_node, dst_path, started)
        for node in (src_node, dst_node):
            if node in self._down:
                raise record.failed(f"{what} failed: {node} is down (connection refused)", 0)
        try:
            f = open(src_path, "rb")  # noqa: SIM115 (closed below, around awaits)
        except OSError as e:
            raise record.failed(f"{what} failed: {e.strerror or e}", 0) from None
        link = _Link((src_node, dst_node))
        self._links.add(link)
        temp = Path(temp_sibling(dst_path))
        done = 0
        try:
            with f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise record.failed(f"{what} failed: {src_path} is not a regular file", 0)
                total = os.fstat(f.fileno()).st_size
                try:
                    # O_EXCL: as sdfs.transfer.AtomicWriter, never someone else's temporary.
                    out = open(temp, "xb")  # noqa: SIM115
                except OSError as e:
                    raise record.failed(f"{what} failed: {e.strerror or e}", 0) from None
                digest = hashlib.sha256()
                with out:
                    if progress is not None:
                        progress(0, total, label)
                    while data := f.read(self.chunk_size):
                        # Absolute deadlines: the copy ends at exactly started + size / rate.
                        arrives = started + (done + len(data)) / self.bytes_per_second
                        with trio.move_on_at(arrives):
                            await link.broken.wait()
                        if link.broken.is_set():
                            raise record.failed(
                                f"{what} failed after {done} of {total} bytes: "
                                f"{link.why} (connection reset)",
                                done,
                            )
                        out.write(data)
                        digest.update(data)
                        done += len(data)
                        if progress is not None:
                            progress(done, total, label)
                    sha256 = digest.hexdigest()
                    if expected_size is not None and done != expected_size:
                        raise record.failed(
                            f"{what}: got {done} bytes, expected {expected_size}", done
                        )
                    if expected_sha256 is not None and sha256 != expected_sha256.lower():
                        raise record.failed(f"{what}: checksum mismatch", done)
                os.replace(temp, dst_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            if not record.recorded:  # cancelled: the caller gave up, or its node crashed
                record.failed("cancelled", done)
            raise
        finally:
            self._links.discard(link)
        record.succeeded(done)
        return TransferResult(done, sha256, trio.current_time() - started)


@dataclass
class _Recorder:
    """Notes one copy in ``net.copies`` once, however it ends."""

    net: CopyNet
    src: str
    dst: str
    path: Path
    started: float
    recorded: bool = False

    def _note(self, size: int, error: str | None) -> None:
        self.recorded = True
        copy = Copy(
            self.src, self.dst, str(self.path), size, self.started, trio.current_time(), error
        )
        self.net.copies.append(copy)

    def failed(self, why: str, size: int) -> TransferError:
        self._note(size, why)
        return TransferError(why)

    def succeeded(self, size: int) -> None:
        self._note(size, None)


class MemoryTransfer:
    """``node``'s :class:`~sdfs.transfer.Transfer` on a :class:`CopyNet`."""

    def __init__(self, net: CopyNet, node: str) -> None:
        self.net = net
        self.node = node
        self.closed = False

    async def push(
        self,
        local: Path,
        peer: Peer,
        name: str,
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> TransferResult:
        what = f"copy of {local} into {peer.name}'s incoming directory"
        target = target_in_incoming(name, peer, what)
        label = label or push_label(local, [peer])
        return await self.net.copy(
            (self.node, Path(local)), (peer.name, target), what, progress, label
        )

    async def push_many(
        self,
        local: Path,
        targets: Sequence[tuple[Peer, str]],
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> list[TransferResult | TransferError]:
        return await push_each(self, local, targets, progress, label=label)

    async def pull(
        self,
        peer: Peer,
        remote_path: str,
        local: Path,
        progress: Progress | None = None,
        *,
        label: str | None = None,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult:
        what = f"copy of {remote_path} from {peer.name}'s store to {local}"
        src = source_in_store(remote_path, peer, what)
        return await self.net.copy(
            (peer.name, src),
            (self.node, Path(local)),
            what,
            progress,
            label or pull_label(remote_path, peer),
            expected_size,
            expected_sha256,
        )

    async def aclose(self) -> None:
        self.closed = True
