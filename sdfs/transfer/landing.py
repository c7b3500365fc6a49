"""Where a copy's bytes land in this process: the receiving half of LocalTransfer (push
and pull) and TcpTransfer.pull, written once.

:func:`land` opens an AtomicWriter beside the destination, lets the transport fill it
(``move``), checks what arrived against the caller's ``expected_size`` /
``expected_sha256``, commits (fsync, rename, fsync the directory), reports the end and
returns the TransferResult.  On any failure or cancellation, at any step, the
temporary is discarded before the error goes on, so the destination is either the
whole new file or untouched (invariant 1 of sdfs.transfer.base), and the checks run
before the rename, never after (invariant 2).

The transport keeps what only it knows: how bytes move, what the sender vouched for
(tcp's CRC-32 is checked inside ``move``), and how its failures read (``explain``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from sdfs.transfer.base import TransferError, TransferResult, check_expected, reason
from sdfs.transfer.files import AtomicWriter
from sdfs.transfer.progress import Reporter

Move = Callable[[AtomicWriter], Awaitable[tuple[str, int | None]]]
"""Fills the writer; returns (the SHA-256 of what it wrote, the CRC-32 the sender
vouched for and the receiver checked, or None)."""

Explain = Callable[[BaseException], str | None]
"""A failure of ``move`` in words for the user, or None to let it propagate as it is."""


def explain_os_error(e: BaseException) -> str | None:
    """The default :data:`Explain`: file-system errors are the user's to read."""
    return reason(e) if isinstance(e, OSError) else None


async def land(
    target: Path,
    move: Move,
    *,
    what: str,
    reporter: Reporter,
    start: float,
    sha256: bool = True,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    explain: Explain = explain_os_error,
) -> TransferResult:
    """Receive into ``target`` through ``move``; see the module docstring.

    ``what`` starts every error message ("download of x from H2 (...)"); ``sha256``
    is False when ``move`` hashes on a thread of its own (the writer then need not);
    ``start`` is when the transfer began, for the result's ``seconds``."""
    try:
        writer = await trio.to_thread.run_sync(
            functools.partial(AtomicWriter, Path(target), sha256=sha256)
        )
    except OSError as e:
        raise TransferError(f"{what} failed: cannot write {target}: {reason(e)}") from None
    try:
        digest, crc = await move(writer)
        check_expected(what, writer.size, digest, expected_size, expected_sha256)
        await trio.to_thread.run_sync(writer.commit)
    except BaseException as e:
        # Plain unlink, no await: this also runs when the task is cancelled.
        writer.discard()
        if isinstance(e, TransferError):
            raise
        text = explain(e)
        if text is None:
            raise
        raise TransferError(f"{what} failed: {text}") from None
    reporter.finish(writer.size)
    return TransferResult(writer.size, digest, time.perf_counter() - start, crc)
