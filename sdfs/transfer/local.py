"""Copies within this machine: the fast path when the peer is this node itself.

The plainest statement of what every transfer must do (sdfs.transfer.base): check the
name or the path, read the source once in a worker thread, hash while copying, and
land the bytes through sdfs.transfer.landing, which makes the destination appear
whole or not at all.  A pull reads only from inside ``peer.store_dir``, after
symlinks and ``..`` are resolved.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from net.progress import Progress
from sdfs.transfer.base import (
    CHUNK_SIZE,
    Peer,
    TransferError,
    TransferResult,
    pull_label,
    push_each,
    push_label,
    reason,
)
from sdfs.transfer.files import AtomicWriter, name_problem, path_problem, resolve_inside
from sdfs.transfer.landing import land
from sdfs.transfer.progress import Reporter, ThreadReporter, in_thread


def _copy_into(src: Path, writer: AtomicWriter, chunk_size: int, report: ThreadReporter) -> str:
    """Copy ``src`` into ``writer`` (blocking); returns the SHA-256 of what was copied."""
    with open(src, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IsADirectoryError(21, "not a regular file", str(src))
        while data := f.read(chunk_size):
            writer.write(data)
            report(writer.size)
    return writer.sha256


def target_in_incoming(name: str, peer: Peer, what: str) -> Path:
    """Where an arrival named ``name`` lands in ``peer``'s incoming directory, for a copy
    on the same machine; TransferError (naming ``what``) for a name that is refused."""
    problem = name_problem(name)
    if problem:
        raise TransferError(f"{what} refused: {problem}")
    return Path(peer.incoming_dir) / name


def source_in_store(remote_path: str, peer: Peer, what: str) -> Path:
    """The file ``remote_path`` names inside ``peer``'s store, for a copy of the same
    machine's files; TransferError (naming ``what``) for a path that is refused."""
    problem = path_problem(remote_path)
    if problem:
        raise TransferError(f"{what} refused: {problem}")
    try:
        return resolve_inside(remote_path, peer.store_dir)
    except ValueError:
        raise TransferError(f"{what} refused: not inside the store {peer.store_dir}") from None


class LocalTransfer:
    """Copies within this machine: the fast path when the peer is this node itself,
    and the plainest statement of what every transfer must do."""

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

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
        start = time.perf_counter()
        try:
            total = os.stat(local).st_size
        except OSError as e:
            raise TransferError(f"{what} failed: cannot read {local}: {reason(e)}") from None
        reporter = Reporter(progress, push_label(local, [peer]) if label is None else label, total)
        return await self._copy(Path(local), target, what, reporter, start)

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
        start = time.perf_counter()
        try:
            total = os.stat(src).st_size
        except OSError as e:
            raise TransferError(f"{what} failed: {reason(e)}") from None
        reporter = Reporter(
            progress,
            pull_label(remote_path, peer) if label is None else label,
            total if expected_size is None else expected_size,
        )
        return await self._copy(
            src, Path(local), what, reporter, start, expected_size, expected_sha256
        )

    async def _copy(
        self,
        src: Path,
        target: Path,
        what: str,
        reporter: Reporter,
        start: float,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult:
        reporter(0)

        async def move(writer: AtomicWriter) -> tuple[str, int | None]:
            report = ThreadReporter(reporter)
            digest = await in_thread(lambda: _copy_into(src, writer, self.chunk_size, report))
            return digest, None

        return await land(
            target,
            move,
            what=what,
            reporter=reporter,
            start=start,
            expected_size=expected_size,
            expected_sha256=expected_sha256,
        )

    async def aclose(self) -> None:
        pass
