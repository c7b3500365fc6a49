"""The receiving end of TcpTransfer: Upload and Download conversations on the RPC port.

Plug it into the node's server as::

    server = TransferServer(store.incoming, store.root, node_name="H2")
    RpcServer(codec, handler, stream_handler=server.handle, streams=(Upload, Download))

Upload: ``Upload(name, size)``, then Chunks, then an empty Chunk; answered with
``TransferDone(size, sha256)`` of what was written, or an ErrorReply.  The file is
written to a hidden temporary in the incoming directory, fsynced and renamed to
``name`` only once exactly ``size`` bytes have arrived, so ``incoming/name`` is
always whole.  Space for ``size`` bytes is checked (and held for the upload's
duration) before a byte is written.

Download: ``Download(path)``, answered with Chunks, an empty Chunk and
``TransferDone``, or with an ErrorReply instead of the first chunk.  Only regular
files inside the store, after resolving symlinks and ``..``, are ever sent: this
port is reachable with nothing but the cluster secret.

A refusal in the middle of an upload is sent at once, before the client has
finished sending; the server then stops reading and hangs up, after giving the
client a moment to read the reason (the client listens while it sends).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import stat
from pathlib import Path
from typing import IO, Any

import trio

from net.messages import Chunk, Download, ErrorReply, TransferDone, Upload
from net.rpc import IDLE_TIMEOUT, Connection
from sdfs.transfer import (
    CHUNK_SIZE,
    AtomicWriter,
    name_problem,
    path_problem,
    pipeline,
    read_and_hash,
    resolve_inside,
)

log = logging.getLogger(__name__)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


class _Refused(Exception):
    """Ends a conversation with an ErrorReply; the message is one line for a person."""


class TransferServer:
    """Serves Upload into ``incoming_dir`` and Download from inside ``store_dir``."""

    def __init__(
        self,
        incoming_dir: Path,
        store_dir: Path,
        *,
        node_name: str | None = None,
        chunk_size: int = CHUNK_SIZE,
        # Kept free beyond every upload, so a full incoming directory cannot starve the
        # node's logs and metadata writes of the last few megabytes.
        reserve_bytes: int = 64 * 1024 * 1024,
        # Longest silence tolerated from a client mid-stream, or while it reads.
        idle_timeout: float = IDLE_TIMEOUT,
        # How long a refused client gets to read the reason before we hang up.
        linger: float = 2.0,
    ) -> None:
        self.incoming_dir = Path(incoming_dir).resolve()
        self.store_dir = Path(store_dir).resolve()
        self.node_name = node_name or socket.gethostname()
        self.chunk_size = chunk_size
        self.reserve_bytes = reserve_bytes
        self.idle_timeout = idle_timeout
        self.linger = linger
        self._held = 0  # bytes promised to uploads in flight
        self.uploads = 0
        self.downloads = 0
        self.refused = 0
        self.bytes_in = 0
        self.bytes_out = 0

    async def handle(self, request: Any, conn: Connection) -> Any:
        if isinstance(request, Upload):
            return await self._upload(request, conn)
        if isinstance(request, Download):
            return await self._download(request, conn)
        return ErrorReply(f"{self.node_name}: {type(request).__name__} is not a stream request")

    # --- upload ---------------------------------------------------------------------

    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.incoming_dir).free - self.reserve_bytes - self._held

    async def _upload(self, request: Upload, conn: Connection) -> Any:
        name, size = request.name, request.size
        what = f"{self.node_name}: upload of {name!r}"
        problem = name_problem(name)
        if problem:
            return await self._hang_up(conn, f"{what} refused: {problem}")
        if size < 0:
            return await self._hang_up(conn, f"{what} refused: negative size {size}")
        try:
            have = await trio.to_thread.run_sync(self._free_bytes)
        except OSError as e:
            return await self._hang_up(conn, f"{what} refused: {e.strerror}: {self.incoming_dir}")
        if size > have:
            return await self._hang_up(
                conn,
                f"not enough disk space on {self.node_name}: "
                f"need {human_bytes(size)}, have {human_bytes(max(have, 0))}",
            )
        self._held += size
        writer: AtomicWriter | None = None
        try:
            writer = await trio.to_thread.run_sync(AtomicWriter, self.incoming_dir / name)
            out = writer  # a name the closures can use without an Optional check
            received = 0

            async def receive_chunk() -> bytes | None:
                nonlocal received
                msg = await conn.receive(self.idle_timeout)
                if not isinstance(msg, Chunk):
                    raise _Refused(f"{what} failed: expected a chunk, got {type(msg).__name__}")
                received += len(msg.data)
                if received > size:
                    raise _Refused(f"{what} failed: more than the announced {size} bytes came")
                return msg.data or None

            async def write_chunk(data: bytes) -> None:
                await trio.to_thread.run_sync(out.write, data)
                self.bytes_in += len(data)

            await pipeline(receive_chunk, write_chunk)
            if writer.size != size:
                raise _Refused(f"{what} failed: {writer.size} of the announced {size} bytes came")
            await trio.to_thread.run_sync(writer.commit)
            committed, writer = writer, None
            self.uploads += 1
            return TransferDone(committed.size, committed.sha256)
        except _Refused as r:
            return await self._hang_up(conn, str(r))
        except OSError as e:
            return await self._hang_up(conn, f"{what} failed: {e.strerror}")
        finally:
            self._held -= size
            if writer is not None:
                # Plain unlink, no await: this also runs when the task is cancelled.
                writer.discard()

    async def _hang_up(self, conn: Connection, error: str) -> ErrorReply:
        """Tell the client why, then end the connection.

        The client may still be streaming chunks that would otherwise be read as new
        requests.  After the reason we half-close and drain for ``linger`` seconds so
        the client reads it instead of a reset; the RpcServer then fails to write the
        returned reply on the closed stream and drops it, which is the point.
        """
        self.refused += 1
        log.info("%s", error)
        reply = ErrorReply(error)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            with trio.move_on_after(self.linger):
                await conn.send(reply)
                if isinstance(conn.stream, trio.abc.HalfCloseableStream):
                    await conn.stream.send_eof()
                while await conn.stream.receive_some(1024 * 1024):
                    pass
        with trio.CancelScope(shield=True):
            await conn.aclose()
        return reply

    # --- download ---------------------------------------------------------------------

    def _resolve(self, path: str) -> Path:
        """The regular file ``path`` names inside the store; _Refused otherwise."""
        problem = path_problem(path)
        if problem:
            raise _Refused(f"{self.node_name}: refused to send: {problem}")
        try:
            return resolve_inside(path, self.store_dir)
        except ValueError:
            error = f"{self.node_name}: refused to send {path}: not inside the store"
            raise _Refused(error) from None

    def _open(self, path: str) -> IO[bytes]:
        real = self._resolve(path)
        try:
            f = open(real, "rb")  # noqa: SIM115  (closed by the caller)
        except FileNotFoundError:
            raise _Refused(f"{self.node_name}: no such file {path}") from None
        except OSError as e:
            raise _Refused(f"{self.node_name}: cannot read {path}: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            f.close()
            raise _Refused(f"{self.node_name}: {path} is not a regular file")
        return f

    async def _download(self, request: Download, conn: Connection) -> Any:
        try:
            f = await trio.to_thread.run_sync(self._open, request.path)
        except _Refused as r:
            self.refused += 1
            return ErrorReply(str(r))  # the client sent nothing more: a plain answer
        hasher = hashlib.sha256()
        size = 0

        async def read_chunk() -> bytes | None:
            data = await trio.to_thread.run_sync(read_and_hash, f, self.chunk_size, hasher)
            return data or None

        async def send_chunk(data: bytes) -> None:
            nonlocal size
            with trio.fail_after(self.idle_timeout):
                await conn.send(Chunk(data))
            size += len(data)
            self.bytes_out += len(data)

        try:
            await pipeline(read_chunk, send_chunk)
            with trio.fail_after(self.idle_timeout):
                await conn.send(Chunk(b""))
        except OSError as e:
            error = f"{self.node_name}: cannot read {request.path}: {e.strerror}"
            return await self._hang_up(conn, error)
        finally:
            f.close()
        self.downloads += 1
        return TransferDone(size, hasher.hexdigest())
