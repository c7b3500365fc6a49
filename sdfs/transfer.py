"""Moving file contents between SDFS nodes: scp over SSH, the nodes' own TCP stream, or a
local copy.

Every implementation offers the same two moves (:class:`Transfer`):

- ``push(local, peer, name)`` puts a local file into the peer's incoming directory as
  ``name``; the caller then asks the peer to ingest it (which checks the size, and
  the SHA-256 unless the peer's transfer server checked the arrival itself, see
  ``sdfs.store.Arrivals``).  ``push_many`` does it for several peers at once (over
  tcp with one read of the file).
- ``pull(peer, remote_path, local)`` copies a file from inside the peer's store to
  ``local``.

Invariants, whichever transport:

1. A destination appears whole or not at all.  Bytes go to a hidden sibling temporary
   (:func:`temp_sibling`), are fsynced, and are renamed over the destination; on any
   failure or cancellation the temporary is removed.  A crash can leave only a
   temporary behind, recognisable with :func:`is_temp_name`.
2. The result's SHA-256 is of the bytes that moved, computed while they moved, and
   the receiver checks what arrived against the sender's own count: the SHA-256
   (scp, local) or a CRC-32 under the cluster MAC (tcp, sdfs.rawstream).  ``pull``
   also checks ``expected_size`` / ``expected_sha256`` when the caller gives them.
3. ``progress(done, total)`` is called on the trio thread with ``done`` never
   decreasing, and last with ``(total, total)`` on success.  ``total`` is -1 while
   unknown (a TCP pull without ``expected_size``).
4. Blocking work (file I/O, paramiko) runs in worker threads that stop at the next
   block when the calling task is cancelled, cleaning up before the task resumes, so
   a cancelled transfer never leaves a half-written file for a thread to finish later.

Names pushed into an incoming directory are plain file names (:func:`name_problem`):
the incoming directory is flat, and a name is never allowed to climb out of it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import math
import os
import posixpath
import re
import secrets
import shlex
import socket
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from config.topology import ClusterConfig, Node, SSHConfig
from net.codec import Codec, Rejected
from net.messages import ErrorReply, GetStream, PutStream, StreamEnd, StreamStart
from net.rpc import IDLE_TIMEOUT, Connection, RpcError, connect, read_frame
from sdfs import rawstream
from sdfs.durable import fsync_dir

if TYPE_CHECKING:
    import paramiko

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
"""Bytes per Chunk frame and per disk read or write.  1 MiB amortises the per-frame
cost (MAC, msgpack, a thread hop) to well under 1% while keeping a frame far below
net.rpc.MAX_FRAME and the memory of a transfer small."""

NAME_MAX = 255  # bytes in one path component on every filesystem we care about

_TEMP_RE = re.compile(r"^\..*\.[0-9a-f]{12}\.part$", re.DOTALL)

Progress = Callable[[int, int], None]
"""``progress(done, total)`` in bytes; see the module docstring (invariant 3)."""

T = TypeVar("T")


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
        self, local: Path, peer: Peer, name: str, progress: Progress | None = None
    ) -> TransferResult:
        """Copy ``local`` into ``peer.incoming_dir/name``."""
        ...

    async def push_many(
        self, local: Path, targets: Sequence[tuple[Peer, str]], progress: Progress | None = None
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
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult:
        """Copy the peer's file at ``remote_path`` (inside ``peer.store_dir``) to ``local``.

        With ``expected_size`` / ``expected_sha256``, a mismatch is a TransferError and
        ``local`` is left untouched."""
        ...

    async def aclose(self) -> None: ...


async def push_each(
    transfer: Transfer,
    local: Path,
    targets: Sequence[tuple[Peer, str]],
    progress: Progress | None = None,
) -> list[TransferResult | TransferError]:
    """``push_many`` as one ``push`` per target, concurrently (progress: the first's)."""
    results: list[TransferResult | TransferError | None] = [None] * len(targets)

    async def one(i: int) -> None:
        peer, name = targets[i]
        try:
            results[i] = await transfer.push(local, peer, name, progress if i == 0 else None)
        except TransferError as e:
            results[i] = e

    async with trio.open_nursery() as nursery:
        for i in range(len(targets)):
            nursery.start_soon(one, i)
    return [r if r is not None else TransferError("push did not run") for r in results]


# --- names and temporaries ------------------------------------------------------------


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name in an incoming directory, or None if it can."""
    if not name:
        return "the name is empty"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name:
        return f"{name!r} contains '/'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} contains a NUL or control character"
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        return f"{name!r} is not valid Unicode"
    if len(encoded) > NAME_MAX:
        return f"the name is {len(encoded)} bytes long (limit {NAME_MAX})"
    if is_temp_name(name):
        return f"{name!r} looks like a transfer's temporary file"
    return None


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file to send, or None (whether it is inside the store is
    :func:`resolve_inside`'s question)."""
    if not path:
        return "the path is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return f"{path!r} contains a NUL or control character"
    return None


def is_temp_name(name: str) -> bool:
    """True for the temporaries of :func:`temp_sibling` (what a crash may leave)."""
    return bool(_TEMP_RE.match(name))


def temp_sibling(target: Path | str) -> str:
    """A fresh hidden name beside ``target``: ``.NAME.<12 hex>.part``, at most NAME_MAX bytes."""
    head, tail = os.path.split(os.fspath(target))
    room = NAME_MAX - len(".." + "0" * 12 + ".part")
    stem = tail.encode()[:room].decode(errors="ignore")
    return os.path.join(head, f".{stem}.{secrets.token_hex(6)}.part")


class AtomicWriter:
    """Writes ``target`` through a hidden sibling temporary; blocking, for worker threads.

    ``commit`` fsyncs, renames over ``target`` and fsyncs the directory;
    ``discard`` removes the temporary.  Exactly one of them must end its life.
    """

    def __init__(self, target: Path, *, sha256: bool = True) -> None:
        self.target = target
        self.temp = Path(temp_sibling(target))
        # O_EXCL: a temporary we did not create is never ours to overwrite or remove.
        self._file: IO[bytes] | None = open(self.temp, "xb")  # noqa: SIM115
        # Off for a receiver that checks a cheaper checksum (sdfs.rawstream).
        self._hash = hashlib.sha256() if sha256 else None
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        assert self._file is not None, "write after commit or discard"
        self._file.write(data)
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of what was written; "" for a writer made with sha256=False."""
        return self._hash.hexdigest() if self._hash is not None else ""

    def commit(self) -> None:
        assert self._file is not None, "commit after commit or discard"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self.temp, self.target)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.target.parent)

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        try:
            self.temp.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove temporary %s: %s", self.temp, e.strerror)


def _reason(e: BaseException) -> str:
    """An exception as a person reads it, on one line."""
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _short(digest: str) -> str:
    return digest[:16]


def _check_expected(
    what: str, size: int, digest: str, expected_size: int | None, expected_sha256: str | None
) -> None:
    if expected_size is not None and size != expected_size:
        raise TransferError(f"{what}: got {size} bytes, expected {expected_size}")
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise TransferError(
            f"{what}: checksum mismatch: got sha256 {_short(digest)}..., "
            f"expected {_short(expected_sha256)}..."
        )


# --- progress ---------------------------------------------------------------------------


class _Reporter:
    """Calls ``progress`` on the trio thread, never backwards, and once at the end."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = -1

    def __call__(self, done: int) -> None:
        if self.progress is not None and done > self.done:
            self.done = done
            self.progress(done, self.total)

    def finish(self, size: int) -> None:
        if self.progress is not None:
            self.total = size
            self.done = size
            self.progress(size, size)


class _ThreadReporter:
    """The worker thread's side of a _Reporter: hops to the trio thread, sparingly.

    Each call is also a cancellation point: a cancelled caller stops the worker at
    the next block rather than after the whole file.
    """

    # A hop costs tens of microseconds; a few a second keeps a progress bar smooth.
    MIN_STEP = 4 * 1024 * 1024
    MIN_INTERVAL = 0.1

    def __init__(self, reporter: _Reporter) -> None:
        self.reporter = reporter
        self.last_done = 0
        self.last_time = time.monotonic()

    def __call__(self, done: int, total: int | None = None) -> None:
        trio.from_thread.check_cancelled()
        if self.reporter.progress is None:
            return
        if total is not None and self.reporter.total < 0:
            self.reporter.total = total  # the size became known (an scp header)
        now = time.monotonic()
        if done - self.last_done < self.MIN_STEP and now - self.last_time < self.MIN_INTERVAL:
            return
        self.last_done, self.last_time = done, now
        trio.from_thread.run_sync(self.reporter, done)


async def _in_thread(fn: Callable[[], T]) -> T:
    """Run blocking ``fn`` in a worker thread that the caller waits for, even when
    cancelled: ``fn`` polls trio.from_thread.check_cancelled (through _ThreadReporter)
    and cleans up on the way out, so nothing is left running behind the caller."""
    return await trio.to_thread.run_sync(fn, abandon_on_cancel=False)


# --- local copies -------------------------------------------------------------------------


def resolve_inside(path: str, root: Path | str) -> Path:
    """``path`` (absolute, or relative to ``root``) resolved through symlinks and ``..``,
    if it lies strictly inside ``root``; ValueError otherwise."""
    real_root = Path(root).resolve()
    real = (real_root / path).resolve()
    if real == real_root or not real.is_relative_to(real_root):
        raise ValueError(f"{path} is not inside {root}")
    return real


def _copy_blocking(
    src: Path,
    target: Path,
    chunk_size: int,
    report: _ThreadReporter,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    what: str = "copy",
) -> tuple[int, str]:
    """Copy ``src`` to ``target`` atomically, hashing; returns (size, sha256)."""
    with open(src, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise IsADirectoryError(21, "not a regular file", str(src))
        writer = AtomicWriter(target)
        try:
            while data := f.read(chunk_size):
                writer.write(data)
                report(writer.size)
            _check_expected(what, writer.size, writer.sha256, expected_size, expected_sha256)
            writer.commit()
        except BaseException:
            writer.discard()
            raise
    return writer.size, writer.sha256


class LocalTransfer:
    """Copies within this machine: the fast path when the peer is this node itself,
    and the plainest statement of what every transfer must do."""

    def __init__(self, chunk_size: int = CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size

    async def push(
        self, local: Path, peer: Peer, name: str, progress: Progress | None = None
    ) -> TransferResult:
        what = f"copy of {local} into {peer.name}'s incoming directory"
        problem = name_problem(name)
        if problem:
            raise TransferError(f"{what} refused: {problem}")
        start = time.perf_counter()
        try:
            total = os.stat(local).st_size
        except OSError as e:
            raise TransferError(f"{what} failed: cannot read {local}: {_reason(e)}") from None
        reporter = _Reporter(progress, total)
        reporter(0)
        target = Path(peer.incoming_dir) / name
        try:
            size, digest = await _in_thread(
                lambda: _copy_blocking(
                    Path(local), target, self.chunk_size, _ThreadReporter(reporter), what=what
                )
            )
        except OSError as e:
            raise TransferError(f"{what} failed: {_reason(e)}") from None
        reporter.finish(size)
        return TransferResult(size, digest, time.perf_counter() - start)

    async def push_many(
        self, local: Path, targets: Sequence[tuple[Peer, str]], progress: Progress | None = None
    ) -> list[TransferResult | TransferError]:
        return await push_each(self, local, targets, progress)

    async def pull(
        self,
        peer: Peer,
        remote_path: str,
        local: Path,
        progress: Progress | None = None,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult:
        what = f"copy of {remote_path} from {peer.name}'s store to {local}"
        problem = path_problem(remote_path)
        if problem:
            raise TransferError(f"{what} refused: {problem}")
        try:
            src = resolve_inside(remote_path, peer.store_dir)
        except ValueError:
            raise TransferError(f"{what} refused: not inside the store {peer.store_dir}") from None
        start = time.perf_counter()
        try:
            total = os.stat(src).st_size
        except OSError as e:
            raise TransferError(f"{what} failed: {_reason(e)}") from None
        reporter = _Reporter(progress, total if expected_size is None else expected_size)
        reporter(0)
        try:
            size, digest = await _in_thread(
                lambda: _copy_blocking(
                    src,
                    Path(local),
                    self.chunk_size,
                    _ThreadReporter(reporter),
                    expected_size,
                    expected_sha256,
                    what,
                )
            )
        except OSError as e:
            raise TransferError(f"{what} failed: {_reason(e)}") from None
        reporter.finish(size)
        return TransferResult(size, digest, time.perf_counter() - start)

    async def aclose(self) -> None:
        pass


# --- tcp: the nodes' own authenticated stream ----------------------------------------------


class TcpTransfer:
    """Streams over the node's RPC port (net.rpc): PutStream / GetStream conversations.

    A sealed header, the file's bytes raw, a sealed StreamEnd(size, crc32): this needs
    no SSH server, only the peer's TransferServer (sdfs.transfer_server), and moves
    bytes at the speed of the kernel's loopback or network (sdfs.rawstream has the
    protocol and its integrity argument).  ``push_many`` reads the file once and sends
    it to several peers at the same time.
    """

    def __init__(
        self,
        codec: Codec,
        chunk_size: int = CHUNK_SIZE,
        *,
        connect_timeout: float = 5.0,
        # Longest silence tolerated mid-stream, either way: a peer that stops reading
        # or sending for this long is taken for dead.
        idle_timeout: float = IDLE_TIMEOUT,
        # After the last byte the receiver fsyncs and renames; a slow disk may take
        # seconds for a big file.
        finish_timeout: float = 120.0,
    ) -> None:
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.codec = codec
        self.chunk_size = chunk_size
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.finish_timeout = finish_timeout

    async def push(
        self, local: Path, peer: Peer, name: str, progress: Progress | None = None
    ) -> TransferResult:
        [result] = await self.push_many(local, [(peer, name)], progress)
        if isinstance(result, TransferError):
            raise result
        return result

    async def push_many(
        self,
        local: Path,
        targets: Sequence[tuple[Peer, str]],
        progress: Progress | None = None,
    ) -> list[TransferResult | TransferError]:
        """``push`` to every (peer, name) in ``targets``, reading ``local`` once.

        One result per target, in order: each peer succeeds or fails on its own."""
        whats = [f"upload to {peer.name} ({peer.host}:{peer.port})" for peer, _ in targets]
        results: list[TransferResult | TransferError | None] = [None] * len(targets)
        for i, (_, name) in enumerate(targets):
            problem = name_problem(name)
            if problem:
                results[i] = TransferError(f"{whats[i]} refused: {problem}")
        start = time.perf_counter()
        try:
            f = await trio.to_thread.run_sync(lambda: open(local, "rb"))  # noqa: SIM115
        except OSError as e:
            error = f"failed: cannot read {local}: {_reason(e)}"
            return [r or TransferError(f"{w} {error}") for r, w in zip(results, whats, strict=True)]
        conns: dict[int, Connection] = {}
        try:
            size = os.fstat(f.fileno()).st_size
            reporter = _Reporter(progress, size)
            reporter(0)

            async def open_one(i: int) -> None:
                peer, name = targets[i]
                try:
                    conn = await connect(peer.address, self.codec, self.connect_timeout)
                except RpcError as e:
                    results[i] = TransferError(f"{whats[i]} failed: {e}")
                    return
                conns[i] = conn
                try:
                    with trio.fail_after(self.idle_timeout):
                        await conn.send(PutStream(name, size))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    results[i] = TransferError(f"{whats[i]} failed: connection lost")
                except trio.TooSlowError:
                    results[i] = TransferError(f"{whats[i]} failed: {peer.name} stopped reading")

            async with trio.open_nursery() as nursery:
                for i in range(len(targets)):
                    if results[i] is None:
                        nursery.start_soon(open_one, i)
            live = [i for i in range(len(targets)) if results[i] is None]
            hasher = hashlib.sha256()
            crc = 0
            errors: list[str | None] = []
            socks = [rawstream.dup_socket(conns[i].stream.socket) for i in live]  # type: ignore[attr-defined]
            try:
                if live:
                    report = _ThreadReporter(reporter)
                    crc, errors = await _in_thread(
                        lambda: rawstream.send(
                            f,
                            size,
                            socks,
                            idle_timeout=self.idle_timeout,
                            hashers=[hasher],
                            check=trio.from_thread.check_cancelled,
                            progress=report,
                        )
                    )
            except ValueError as e:
                errors = [f"the local file changed: {e}"] * len(live)
            except OSError as e:
                errors = [f"cannot read local file: {_reason(e)}"] * len(live)
            finally:
                for s in socks:
                    s.close()
            digest = hasher.hexdigest()

            async def finish(k: int, i: int) -> None:
                results[i] = await self._finish(
                    conns[i], targets[i][0], whats[i], errors[k], size, crc, digest, start
                )

            async with trio.open_nursery() as nursery:
                for k, i in enumerate(live):
                    nursery.start_soon(finish, k, i)
        finally:
            f.close()
            with trio.CancelScope(shield=True):
                for conn in conns.values():
                    await conn.aclose()
        if any(isinstance(r, TransferResult) for r in results):
            reporter.finish(size)
        return [r or TransferError(f"{w} failed") for r, w in zip(results, whats, strict=True)]

    async def _finish(
        self,
        conn: Connection,
        peer: Peer,
        what: str,
        error: str | None,
        size: int,
        crc: int,
        digest: str,
        start: float,
    ) -> TransferResult | TransferError:
        """Close one receiver's stream: trailer, then its verdict (or its early refusal)."""
        if error is not None and error != rawstream.ANSWERED_EARLY:
            # It may still have said why before it went; listen briefly.
            with trio.move_on_after(2.0):
                with contextlib.suppress(Exception):
                    answer = await read_frame(conn.stream, conn.codec)
                    if isinstance(answer, ErrorReply):
                        return TransferError(f"{what} failed: {answer.error}")
            return TransferError(f"{what} failed: {error}")
        try:
            if error is None:
                with trio.fail_after(self.idle_timeout):
                    await conn.send(StreamEnd(size, crc))
            answer = await conn.receive(self.finish_timeout)
        except trio.TooSlowError:
            return TransferError(
                f"{what} failed: no answer within {self.finish_timeout:g} s of the last byte"
            )
        except Rejected as r:
            return TransferError(
                f"{what} failed: answer rejected ({r.reason}); is the cluster secret the same?"
            )
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return TransferError(f"{what} failed: connection closed without an answer")
        if isinstance(answer, ErrorReply):
            return TransferError(f"{what} failed: {answer.error}")
        if not isinstance(answer, StreamEnd):
            return TransferError(f"{what} failed: unexpected answer {type(answer).__name__}")
        if error is not None:
            return TransferError(f"{what} failed: {peer.name} answered before the upload ended")
        if answer.size != size or answer.crc32 != crc:
            return TransferError(
                f"{what} failed: checksum mismatch: sent {size} bytes crc32 {crc:08x}, "
                f"{peer.name} got {answer.size} bytes crc32 {answer.crc32:08x}"
            )
        return TransferResult(size, digest, time.perf_counter() - start, crc)

    async def pull(
        self,
        peer: Peer,
        remote_path: str,
        local: Path,
        progress: Progress | None = None,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult:
        what = f"download of {remote_path} from {peer.name} ({peer.host}:{peer.port})"
        problem = path_problem(remote_path)
        if problem:
            raise TransferError(f"{what} refused: {problem}")
        start = time.perf_counter()
        reporter = _Reporter(progress, -1 if expected_size is None else expected_size)
        try:
            writer = await trio.to_thread.run_sync(
                functools.partial(AtomicWriter, Path(local), sha256=False)
            )
        except OSError as e:
            raise TransferError(f"{what} failed: cannot write {local}: {_reason(e)}") from None
        hasher = hashlib.sha256()  # fed on a thread of its own (rawstream.receive)
        try:
            try:
                conn = await connect(peer.address, self.codec, self.connect_timeout)
            except RpcError as e:
                raise TransferError(f"{what} failed: {e}") from None
            async with conn.stream:
                with trio.fail_after(self.idle_timeout):
                    await conn.send(GetStream(remote_path))
                start_msg = await conn.receive(self.idle_timeout)
                if isinstance(start_msg, ErrorReply):
                    raise TransferError(f"{what} failed: {start_msg.error}")
                if not isinstance(start_msg, StreamStart):
                    raise TransferError(f"{what} failed: unexpected {type(start_msg).__name__}")
                size = start_msg.size
                if expected_size is not None and size != expected_size:
                    raise TransferError(
                        f"{what} failed: the file there has {size} bytes, expected {expected_size}"
                    )
                reporter.total = size
                reporter(0)
                sock = rawstream.dup_socket(conn.stream.socket)  # type: ignore[attr-defined]
                report = _ThreadReporter(reporter)
                try:
                    crc = await _in_thread(
                        lambda: rawstream.receive(
                            sock,
                            size,
                            writer.write,
                            idle_timeout=self.idle_timeout,
                            hashers=[hasher],
                            check=trio.from_thread.check_cancelled,
                            progress=report,
                        )
                    )
                finally:
                    sock.close()
                done = await conn.receive(self.idle_timeout)
            if isinstance(done, ErrorReply):
                raise TransferError(f"{what} failed: {done.error}")
            if not isinstance(done, StreamEnd):
                raise TransferError(f"{what} failed: unexpected {type(done).__name__}")
            if done.size != writer.size or done.crc32 != crc:
                raise TransferError(
                    f"{what} failed: checksum mismatch: {peer.name} sent {done.size} bytes "
                    f"crc32 {done.crc32:08x}, got {writer.size} bytes crc32 {crc:08x}"
                )
            digest = hasher.hexdigest()
            _check_expected(what, writer.size, digest, expected_size, expected_sha256)
            await trio.to_thread.run_sync(writer.commit)
        except BaseException as e:
            writer.discard()
            if isinstance(e, rawstream.StreamBroken):
                raise TransferError(f"{what} failed: {e}") from None
            if isinstance(e, EOFError):
                raise TransferError(f"{what} failed: {peer.name} hung up mid-stream") from None
            if isinstance(e, trio.TooSlowError):
                raise TransferError(
                    f"{what} failed: nothing from {peer.name} for {self.idle_timeout:g} s"
                ) from None
            if isinstance(e, Rejected):
                raise TransferError(
                    f"{what} failed: a frame was rejected ({e.reason}); "
                    "is the cluster secret the same?"
                ) from None
            if isinstance(e, (trio.BrokenResourceError, trio.ClosedResourceError)):
                raise TransferError(f"{what} failed: connection lost") from None
            if isinstance(e, OSError):
                raise TransferError(f"{what} failed: {_reason(e)}") from None
            raise
        reporter.finish(writer.size)
        return TransferResult(writer.size, digest, time.perf_counter() - start, crc)

    async def aclose(self) -> None:
        pass  # one connection per transfer: nothing is kept open


# --- scp over SSH (paramiko) --------------------------------------------------------------

# paramiko encrypts in Python, packet by packet; with aes*-ctr it also runs a separate
# HMAC over every packet, which AES-GCM folds into the cipher.  Measured on loopback
# against OpenSSH 9.2, 200 MB, median of 5 interleaved runs: pull 170 -> 220-245 MB/s,
# push 140 -> 155-175 MB/s.  paramiko has no chacha20-poly1305.  The order is only a
# preference: a server without GCM still gets paramiko's other ciphers.
PREFERRED_CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)


def _fingerprint(key: Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _HostKeyProblem(Exception):
    """Raised from a missing-host-key policy inside paramiko's connect."""


def _host_key_policies() -> tuple[type[Any], type[Any]]:
    """(reject unknown, accept and save unknown) policy classes; paramiko is imported late."""
    import paramiko
    from paramiko.hostkeys import HostKeyEntry

    class RejectUnknown(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
        def __init__(self, known_hosts: str) -> None:
            self.known_hosts = known_hosts

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise _HostKeyProblem(
                f"host key not in known_hosts ({self.known_hosts}); "
                "set accept_new_host_keys = true to accept on first use"
            )

    class AcceptAndSave(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
        """Trust on first use, and remember: the next change of key is refused.

        Appends one line instead of paramiko's save_host_keys, which rewrites the
        whole file and drops what it does not understand (comments, markers)."""

        def __init__(self, known_hosts: str) -> None:
            self.known_hosts = known_hosts

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            line = HostKeyEntry([hostname], key).to_line()
            try:
                path = Path(self.known_hosts)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # One write with O_APPEND: concurrent first connections cannot interleave.
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except OSError as e:
                raise _HostKeyProblem(
                    f"cannot save the new host key to {self.known_hosts}: {_reason(e)}"
                ) from None
            client.get_host_keys().add(hostname, key.get_name(), key)
            log.warning(
                "accepted new host key of %s (%s %s) and saved it to %s",
                hostname,
                key.get_name(),
                _fingerprint(key),
                self.known_hosts,
            )

    return RejectUnknown, AcceptAndSave


class _Broken(Exception):
    """The cached SSH connection died before this transfer moved a byte: retry once."""


@dataclass
class _SshLink:
    client: Any  # paramiko.SSHClient
    sessions: trio.Semaphore

    @property
    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and bool(transport.is_active())


class ScpTransfer:
    """scp over one cached SSH connection per peer (paramiko + the ``scp`` package).

    Security: key authentication only (``ssh.key_file``; no agent, no password, no
    default keys), and the host key must be in ``ssh.known_hosts``.  An unknown host
    is refused unless ``accept_new_host_keys`` is set, in which case its key is
    appended to known_hosts; a host whose key changed is always refused.

    A push lands under a temporary name in the peer's incoming directory and one
    remote shell command checks its size (and, with ``verify_remote``, runs
    ``sha256sum`` on it) and renames it into place.  ``verify_remote`` is off by
    default because SDFS's ingest step re-hashes every arrival anyway; turn it on
    where no later step does.  The remote needs a POSIX shell, ``wc``, ``mv``, ``sync``
    and (for ``verify_remote``) ``sha256sum``.

    A pull refuses a ``remote_path`` outside ``peer.store_dir`` after normalising
    ``..`` (the remote user can read anything else anyway: this catches mistakes,
    it is no sandbox).  The file is hashed locally as it is fsynced.
    """

    def __init__(
        self,
        ssh: SSHConfig,
        *,
        connect_timeout: float = 10.0,
        # Longest silence on a channel mid-transfer before the transfer fails.
        io_timeout: float = IDLE_TIMEOUT,
        verify_remote: bool = False,
        # Flow-control window and largest packet per channel we open: OpenSSH's own
        # 2 MiB / 32 KiB.  16 MiB / 256 KiB (or 64 MiB) measured no faster on loopback,
        # and 2 MiB already covers a 1 Gb/s link up to ~16 ms of round trip.
        window_size: int = 2 * 1024 * 1024,
        max_packet_size: int = 32 * 1024,
        # Bytes per read()/sendall on the scp channel (the scp package's default is
        # 16 KiB): fewer Python-level calls; pull measured 140 -> 175 MB/s with aes-ctr.
        buffer_size: int = CHUNK_SIZE,
        ciphers: tuple[str, ...] = PREFERRED_CIPHERS,
        # OpenSSH's MaxSessions defaults to 10 channels per connection.
        max_sessions: int = 8,
    ) -> None:
        self.ssh = ssh
        self.connect_timeout = connect_timeout
        self.io_timeout = io_timeout
        self.verify_remote = verify_remote
        self.window_size = window_size
        self.max_packet_size = max_packet_size
        self.buffer_size = buffer_size
        self.ciphers = ciphers
        self.max_sessions = max_sessions
        self.key_file = os.path.expanduser(ssh.key_file)
        self.known_hosts = os.path.expanduser(ssh.known_hosts)
        self._links: dict[tuple[str, int], _SshLink] = {}
        self._locks: dict[tuple[str, int], trio.Lock] = {}
        self._pkey: Any = None

    # --- the connection ----------------------------------------------------------

    def _port(self, peer: Peer) -> int:
        return peer.ssh_port if peer.ssh_port is not None else self.ssh.port

    def _label(self, direction: str, peer: Peer) -> str:
        return f"scp {direction} {peer.name} ({peer.host}:{self._port(peer)})"

    def _load_key(self) -> Any:
        import paramiko

        if self._pkey is None:
            try:
                self._pkey = paramiko.PKey.from_path(self.key_file)
            except (paramiko.PasswordRequiredException, TypeError) as e:
                # cryptography says "password-protected" with a TypeError.
                if isinstance(e, TypeError) and "password" not in str(e):
                    raise TransferError(f"cannot use SSH key {self.key_file}: {e}") from None
                raise TransferError(
                    f"SSH key {self.key_file} is protected by a passphrase; "
                    "use a key without one for cluster transfers"
                ) from None
            except (OSError, paramiko.SSHException, ValueError) as e:
                raise TransferError(f"cannot use SSH key {self.key_file}: {_reason(e)}") from None
        return self._pkey

    def _make_transport(self, sock: Any, disabled_algorithms: Any = None) -> paramiko.Transport:
        import paramiko

        t = paramiko.Transport(
            sock,
            disabled_algorithms=disabled_algorithms,
            default_window_size=self.window_size,
            default_max_packet_size=self.max_packet_size,
        )
        options = t.get_security_options()
        offered = tuple(options.ciphers)
        first = tuple(c for c in self.ciphers if c in offered)
        options.ciphers = first + tuple(c for c in offered if c not in first)
        return t

    def _connect_blocking(self, peer: Peer) -> Any:
        import paramiko

        pkey = self._load_key()
        client = paramiko.SSHClient()
        try:
            client.get_host_keys().load(self.known_hosts)
        except FileNotFoundError:
            pass  # nothing known yet: every host is unknown
        except (OSError, paramiko.SSHException) as e:
            raise TransferError(f"cannot read known_hosts {self.known_hosts}: {_reason(e)}") from e
        reject, accept = _host_key_policies()
        policy = accept if self.ssh.accept_new_host_keys else reject
        client.set_missing_host_key_policy(policy(self.known_hosts))
        try:
            client.connect(
                peer.host,
                self._port(peer),
                username=self.ssh.user,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                compress=False,  # files are mostly images and weights: compressed already
                transport_factory=self._make_transport,
            )
        except BaseException:
            client.close()
            raise
        return client

    def _explain(self, e: BaseException) -> str:
        """A connection or transfer failure, in words that say what to do."""
        import paramiko
        from scp import SCPException

        if isinstance(e, _HostKeyProblem):
            return str(e)
        if isinstance(e, paramiko.BadHostKeyException):
            return (
                f"host key changed: known_hosts ({self.known_hosts}) has "
                f"{e.expected_key.get_name()} {_fingerprint(e.expected_key)}, the server "
                f"offered {e.key.get_name()} {_fingerprint(e.key)}; refusing (if the host was "
                "reinstalled, remove its old line)"
            )
        if isinstance(e, paramiko.AuthenticationException):
            return f"the server refused key {self.key_file} for user {self.ssh.user}"
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
            errors = list(e.errors.values())
            return f"cannot connect: {_reason(errors[0]) if errors else _reason(e)}"
        if isinstance(e, (socket.timeout, TimeoutError)):
            return "no answer in time"
        if isinstance(e, SCPException):
            text = _reason(e)
            return text[5:] if text.startswith("scp: ") else text
        if isinstance(e, paramiko.SSHException) and "banner" in str(e):
            return f"not an SSH server, or it hung up ({_reason(e)})"
        return _reason(e)

    async def _link(self, peer: Peer) -> tuple[_SshLink, bool]:
        """The cached connection to ``peer`` (opened now if needed), and whether it is new."""
        key = (peer.host, self._port(peer))
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:
            link = self._links.get(key)
            if link is not None and link.alive:
                return link, False
            if link is not None:
                self._links.pop(key, None)
                await trio.to_thread.run_sync(link.client.close)
            client = await trio.to_thread.run_sync(self._connect_blocking, peer)
            link = _SshLink(client, trio.Semaphore(self.max_sessions))
            self._links[key] = link
            return link, True

    async def _drop(self, peer: Peer, link: _SshLink) -> None:
        key = (peer.host, self._port(peer))
        if self._links.get(key) is link:
            del self._links[key]
        await trio.to_thread.run_sync(link.client.close)

    async def _run(self, peer: Peer, direction: str, op: Callable[[Any], T]) -> T:
        """Run blocking ``op(client)`` on the peer's connection; reconnect once if the
        cached connection turns out dead before any byte moved."""
        for attempt in (1, 2):
            try:
                link, fresh = await self._link(peer)
            except TransferError as e:
                raise TransferError(f"{self._label(direction, peer)} failed: {e}") from None
            except Exception as e:
                raise TransferError(
                    f"{self._label(direction, peer)} failed: {self._explain(e)}"
                ) from None
            try:
                async with link.sessions:
                    return await _in_thread(functools.partial(op, link.client))
            except _Broken as e:
                await self._drop(peer, link)
                if fresh or attempt == 2:
                    raise TransferError(
                        f"{self._label(direction, peer)} failed: connection lost ({e})"
                    ) from None
                log.info("SSH connection to %s was dead; reconnecting", peer.name)
            except TransferError as e:
                raise TransferError(f"{self._label(direction, peer)} failed: {e}") from None
            except Exception as e:
                # A cached connection can die under us mid-way, before paramiko's
                # transport thread notices (a socket error is the first sign).  Copies
                # are atomic, so redo it once on a new connection.
                dead = not link.alive or isinstance(e, OSError)
                if dead:
                    await self._drop(peer, link)
                if dead and not fresh and attempt == 1:
                    log.info("SSH connection to %s failed: %s; reconnecting", peer.name, e)
                    continue
                raise TransferError(
                    f"{self._label(direction, peer)} failed: {self._explain(e)}"
                ) from None
        raise AssertionError("unreachable")

    @staticmethod
    def _open_channel(client: Any) -> Any:
        """A session channel, or _Broken when the connection is dead (perhaps for a
        while, unnoticed in the cache: a restarted sshd, a NAT that forgot us)."""
        import paramiko

        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise _Broken("the SSH transport is closed")
        try:
            return transport.open_session(timeout=10.0)
        except paramiko.ChannelException:
            raise  # the server is there and said no (MaxSessions, a policy)
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise _Broken(_reason(e)) from None

    def _scp(self, client: Any, progress: Callable[[bytes, int, int], None] | None) -> Any:
        from scp import SCPClient

        scp = SCPClient(
            client.get_transport(),
            buff_size=self.buffer_size,
            socket_timeout=self.io_timeout,
            progress=progress,
        )
        scp.channel = self._open_channel(client)
        return scp

    def _exec(self, client: Any, command: str, timeout: float) -> tuple[int, str, str]:
        chan = self._open_channel(client)
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            out = chan.makefile("rb").read().decode(errors="replace")
            err = chan.makefile_stderr("rb").read().decode(errors="replace")
            return chan.recv_exit_status(), out, err
        finally:
            chan.close()

    # --- push --------------------------------------------------------------------

    async def push(
        self, local: Path, peer: Peer, name: str, progress: Progress | None = None
    ) -> TransferResult:
        what = self._label("to", peer)
        problem = name_problem(name)
        if problem:
            raise TransferError(f"{what} refused: {problem}")
        start = time.perf_counter()
        try:
            f = await trio.to_thread.run_sync(lambda: open(local, "rb"))  # noqa: SIM115
        except OSError as e:
            raise TransferError(f"{what} failed: cannot read {local}: {_reason(e)}") from None
        try:
            size = os.fstat(f.fileno()).st_size
            reporter = _Reporter(progress, size)
            reporter(0)
            final = posixpath.join(peer.incoming_dir, name)
            temp = temp_sibling(final)

            def op(client: Any) -> str:
                f.seek(0)
                reader = _HashingReader(f, size, _ThreadReporter(reporter))
                self._put_blocking(client, reader, temp, final, size)
                return reader.hasher.hexdigest()

            digest = await self._run(peer, "to", op)
        finally:
            f.close()
        reporter.finish(size)
        return TransferResult(size, digest, time.perf_counter() - start)

    async def push_many(
        self, local: Path, targets: Sequence[tuple[Peer, str]], progress: Progress | None = None
    ) -> list[TransferResult | TransferError]:
        return await push_each(self, local, targets, progress)

    def _put_blocking(
        self, client: Any, reader: _HashingReader, temp: str, final: str, size: int
    ) -> None:
        scp = self._scp(client, None)
        try:
            scp.putfo(reader, temp, mode="0644", size=size)
        except BaseException:
            # Whatever broke, the remote scp may have left part of a file behind.
            if scp.channel is not None:
                scp.channel.close()
            self._remove_remote(client, temp)
            raise
        digest = reader.hasher.hexdigest()
        lines = [f"f={shlex.quote(temp)}", 's=$(wc -c < "$f") || exit 3', "h=-"]
        if self.verify_remote:
            lines.append('h=$(sha256sum < "$f") || exit 3; h=${h%% *}')
        lines.append('echo "$s $h"')
        lines.append(f'[ "$s" -eq {size} ] || {{ rm -f -- "$f"; exit 4; }}')
        if self.verify_remote:
            lines.append(f'[ "$h" = {digest} ] || {{ rm -f -- "$f"; exit 4; }}')
        # Durability before the rename, as for the other transports; best effort where
        # sync(1) cannot take a file.
        lines.append('sync -- "$f" 2>/dev/null')
        lines.append(f'mv -f -- "$f" {shlex.quote(final)}')
        command = "\n".join(lines)
        # Hashing a large file remotely takes time: allow ~50 MB/s, at least the io timeout.
        status, out, err = self._exec(client, command, max(self.io_timeout, size / 50e6))
        if status == 4:
            got = out.split()
            got_size = got[0] if got else "?"
            got_hash = got[1] if len(got) > 1 else "-"
            raise TransferError(
                f"arrived damaged: sent {size} bytes sha256 "
                f"{_short(digest)}..., the remote has {got_size} bytes"
                + (f" sha256 {_short(got_hash)}..." if self.verify_remote else "")
            )
        if status != 0:
            self._remove_remote(client, temp)
            detail = " ".join(err.split()) or f"exit status {status}"
            raise TransferError(f"cannot finish the upload on the remote: {detail}")

    def _remove_remote(self, client: Any, path: str) -> None:
        try:
            self._exec(client, f"rm -f -- {shlex.quote(path)}", 10.0)
        except Exception as e:  # best effort: the store sweeps incoming/ on start
            log.debug("could not remove remote temporary %s: %s", path, e)

    # --- pull ---------------------------------------------------------------------

    async def pull(
        self,
        peer: Peer,
        remote_path: str,
        local: Path,
        progress: Progress | None = None,
        *,
        expected_size: int | None = None,
        expected_sha256: str | None = None,
    ) -> TransferResult:
        what = self._label("from", peer)
        problem = path_problem(remote_path)
        if problem:
            raise TransferError(f"{what} refused: {problem}")
        root = posixpath.normpath(peer.store_dir)
        path = posixpath.normpath(posixpath.join(root, remote_path))
        if not path.startswith(root.rstrip("/") + "/"):
            raise TransferError(f"{what} refused: {remote_path} is not inside the store {root}")
        start = time.perf_counter()
        reporter = _Reporter(progress, -1 if expected_size is None else expected_size)
        reporter(0)
        local = Path(local)

        def op(client: Any) -> tuple[int, str]:
            return self._get_blocking(
                client, path, local, _ThreadReporter(reporter), expected_size, expected_sha256
            )

        size, digest = await self._run(peer, "from", op)
        reporter.finish(size)
        return TransferResult(size, digest, time.perf_counter() - start)

    def _get_blocking(
        self,
        client: Any,
        path: str,
        local: Path,
        report: _ThreadReporter,
        expected_size: int | None,
        expected_sha256: str | None,
    ) -> tuple[int, str]:
        temp = Path(temp_sibling(local))
        started = False
        wrong_size: int | None = None

        def progress(_name: bytes, size: int, sent: int) -> None:
            # The scp package opens the file before its try/finally, and calls this once
            # in between: that first call must not raise (no cancellation check either),
            # or the file handle leaks.  It is (size, 0), or (1, 1) for an empty file.
            nonlocal started, wrong_size
            if not started:
                started = True
                if sent == 0 and expected_size is not None and size != expected_size:
                    wrong_size = size
                return
            if wrong_size is not None:
                raise TransferError(
                    f"the remote file has {wrong_size} bytes, expected {expected_size}"
                )
            report(sent, size)

        scp = self._scp(client, progress)
        try:
            if not local.parent.is_dir():
                raise FileNotFoundError(2, "No such file or directory", str(local.parent))
            try:
                scp.get(path, str(temp))
            except BaseException:
                if scp.channel is not None:
                    scp.channel.close()
                raise
            size, digest = _hash_fsync(temp)
            _check_expected("pull", size, digest, expected_size, expected_sha256)
            os.replace(temp, local)
            fsync_dir(local.parent)
            return size, digest
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise

    async def aclose(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await trio.to_thread.run_sync(link.client.close)


class _HashingReader:
    """The file-like object scp reads: hashes what it hands out and stops at ``size``."""

    def __init__(self, f: IO[bytes], size: int, report: _ThreadReporter) -> None:
        self.f = f
        self.size = size
        self.report = report
        self.hasher = hashlib.sha256()
        self.pos = 0

    def read(self, n: int) -> bytes:
        # A file that grows is cut at the announced size; one that shrinks would make
        # scp spin forever on empty reads.
        data = self.f.read(min(n, self.size - self.pos))
        if not data and self.pos < self.size:
            raise TransferError("the local file shrank while sending")
        self.hasher.update(data)
        self.pos += len(data)
        self.report(self.pos, self.size)
        return data

    def tell(self) -> int:
        return self.pos


def _hash_fsync(path: Path) -> tuple[int, str]:
    """Size and sha256 of a just-written file, made durable on the way."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb+") as f:
        while data := f.read(CHUNK_SIZE):
            h.update(data)
            size += len(data)
        os.fsync(f.fileno())
    return size, h.hexdigest()


def make_transfer(config: ClusterConfig, codec: Codec) -> Transfer:
    """The transfer the cluster file asks for (``transfer = "scp" | "tcp"``)."""
    if config.transfer == "tcp":
        return TcpTransfer(codec)
    if config.transfer == "scp":
        return ScpTransfer(config.ssh)
    raise ValueError(f"cluster.transfer: expected 'scp' or 'tcp', got {config.transfer!r}")


__all__ = [
    "CHUNK_SIZE",
    "AtomicWriter",
    "LocalTransfer",
    "Peer",
    "Progress",
    "ScpTransfer",
    "TcpTransfer",
    "Transfer",
    "TransferError",
    "TransferResult",
    "fsync_dir",
    "is_temp_name",
    "make_transfer",
    "name_problem",
    "path_problem",
    "resolve_inside",
    "temp_sibling",
]
