"""What every transfer is: the :class:`Transfer` protocol, its peers, results and errors.

Every implementation (sdfs.transfer.local, .tcp, .scp) offers the same two moves:

- ``push(local, peer, name)`` puts a local file into the peer's incoming directory as
  ``name``; the caller then asks the peer to ingest it (which checks the size, and
  the SHA-256 unless the peer's transfer server checked the arrival itself, see
  ``sdfs.store.Arrivals``).  ``push_many`` does it for several peers at once (over
  tcp with one read of the file).
- ``pull(peer, remote_path, local)`` copies a file from inside the peer's store to
  ``local``.

Invariants, whichever transport:

1. A destination appears whole or not at all.  Bytes go to a hidden sibling temporary
   (sdfs.transfer.files.temp_sibling), are fsynced, and are renamed over the
   destination; on any failure or cancellation the temporary is removed.  A crash can
   leave only a temporary behind, recognisable with ``is_temp_name``.
2. The result's SHA-256 is of the bytes that moved, computed while they moved, and
   the receiver checks what arrived against the sender's own count: the SHA-256
   (scp, local) or a CRC-32 under the cluster MAC (tcp, sdfs.transfer.rawstream).
   ``pull`` also checks ``expected_size`` / ``expected_sha256`` when the caller gives
   them.
3. ``progress(done, total, label)`` (net.progress.Progress) is called on the trio
   thread with ``done`` never decreasing, and last with ``(total, total, label)`` on
   success.  ``total`` is -1 while unknown (a TCP pull without ``expected_size``).
   ``label`` is the caller's, or one the transfer makes: ``"a.jpg -> H2, H3"`` for a
   push, ``"a.jpg <- H2"`` for a pull.
4. Blocking work (file I/O, paramiko) runs in worker threads that stop at the next
   block when the calling task is cancelled, cleaning up before the task resumes, so
   a cancelled transfer never leaves a half-written file for a thread to finish later.

Names pushed into an incoming directory are plain file names (``name_problem``):
the incoming directory is flat, and a name is never allowed to climb out of it.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from config.topology import Node
from net.progress import Progress

CHUNK_SIZE = 1024 * 1024
"""Bytes per Chunk frame and per disk read or write.  1 MiB amortises the per-frame
cost (MAC, msgpack, a thread hop) to well under 1% while keeping a frame far below
net.rpc.MAX_FRAME and the memory of a transfer small."""


class TransferError(Exception):
    """A transfer that did not happen; the message is one line for a person."""


@dataclass(frozen=True)
class Peer:
    """Where a node is and where it keeps files, as a transfer needs to know it."""

    name: str
    host: str
    port: int  # the node's RPC port (TCP transfers)
    ssh_port: int | None  # per-node SSH port; None means the [ssh] port
    incoming_dir: str  # absolute path of the node's incoming directory
    store_dir: str  # absolute path of its store root

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @classmethod
    def from_node(cls, node: Node, incoming_dir: str, store_dir: str) -> Peer:
        return cls(node.name, node.host, node.port, node.ssh_port, incoming_dir, store_dir)


@dataclass(frozen=True)
class TransferResult:
    size: int  # bytes transferred
    sha256: str  # hex digest of those bytes
    seconds: float  # wall time of the whole transfer, connection set-up included
    crc32: int | None = None  # their CRC-32, where the receiver checked one (tcp)

    @property
    def bytes_per_second(self) -> float:
        return self.size / self.seconds if self.seconds > 0 else math.inf


class Transfer(Protocol):
    async def push(
        self,
        local: Path,
        peer: Peer,
        name: str,
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> TransferResult:
        """Copy ``local`` into ``peer.incoming_dir/name``; ``label`` defaults to
        :func:`push_label`'s."""
        ...

    async def push_many(
        self,
        local: Path,
        targets: Sequence[tuple[Peer, str]],
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> list[TransferResult | TransferError]:
        """``push`` to every (peer, name) at once; one result or error per target."""
        ...

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
        """Copy the peer's file at ``remote_path`` (inside ``peer.store_dir``) to ``local``.

        With ``expected_size`` / ``expected_sha256``, a mismatch is a TransferError and
        ``local`` is left untouched.  ``label`` defaults to :func:`pull_label`'s."""
        ...

    async def aclose(self) -> None: ...


def push_label(local: Path | str, peers: Sequence[Peer]) -> str:
    """The progress label of a push that names none: ``"a.jpg -> H2, H3"``."""
    return f"{Path(local).name} -> {', '.join(peer.name for peer in peers)}"


def pull_label(remote_path: str, peer: Peer) -> str:
    """The progress label of a pull that names none: ``"a.jpg <- H2"``."""
    return f"{posixpath.basename(remote_path) or remote_path} <- {peer.name}"


async def push_each(
    transfer: Transfer,
    local: Path,
    targets: Sequence[tuple[Peer, str]],
    progress: Progress | None = None,
    *,
    label: str | None = None,
) -> list[TransferResult | TransferError]:
    """``push_many`` as one ``push`` per target, concurrently (progress: the first's,
    under the label of the whole)."""
    if label is None:
        label = push_label(local, [peer for peer, _ in targets])
    results: list[TransferResult | TransferError | None] = [None] * len(targets)

    async def one(i: int) -> None:
        peer, name = targets[i]
        try:
            report = progress if i == 0 else None
            results[i] = await transfer.push(local, peer, name, report, label=label)
        except TransferError as e:
            results[i] = e

    async with trio.open_nursery() as nursery:
        for i in range(len(targets)):
            nursery.start_soon(one, i)
    return [r if r is not None else TransferError("push did not run") for r in results]


def reason(e: BaseException) -> str:
    """An exception as a person reads it, on one line."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    text = " ".join(str(e).split())
    return text or type(e).__name__


def short_hash(digest: str) -> str:
    """Enough of a hex digest for a person to compare two."""
    return digest[:16]


def check_expected(
    what: str, size: int, digest: str, expected_size: int | None, expected_sha256: str | None
) -> None:
    """TransferError if ``size`` / ``digest`` are not what the caller expected."""
    if expected_size is not None and size != expected_size:
        raise TransferError(f"{what}: got {size} bytes, expected {expected_size}")
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise TransferError(
            f"{what}: checksum mismatch: got sha256 {short_hash(digest)}..., "
            f"expected {short_hash(expected_sha256)}..."
        )
