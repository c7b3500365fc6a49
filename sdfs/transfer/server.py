"""The receiving end of TcpTransfer: PutStream and GetStream conversations on the RPC port.

Plug it into the node's server as::

    server = TransferServer(store.incoming, store.root, node_name="H2", arrivals=store.arrivals)
    RpcServer(codec, handler, stream_handler=server.handle,
              streams=(PutStream, ChainStream, GetStream))

Upload: ``PutStream(name, size, nonce)``, ``size`` raw bytes, the sender's
``StreamEnd(size, crc32, sha256, tag)``; answered with the StreamEnd of what was stored
(empty tag), or an ErrorReply.  The file is written to a hidden temporary in the
incoming directory, checked against the sender's Poly1305 tag under the stream's
one-time key (sdfs.transfer.rawstream: whoever altered the raw bytes cannot make them
match without the cluster secret), fsynced and renamed to ``name``, so
``incoming/name`` is always whole and authentic; it is then noted in ``arrivals`` with
the SHA-256 its sender computed over those very bytes, so that ingest can check it
against the granted digest without reading the file again.  A mismatch is refused and
the temporary deleted: nothing is renamed into place.
Space for ``size`` bytes is checked (and held for the upload's duration) before a
byte is written.

Chain: ``ChainStream(name, size, nonce, downstream)`` is an upload that this server
also forwards, as it arrives, to the next hop; answered with a ChainEnd
(sdfs.transfer.chain has the theory and its invariants).

Download: ``GetStream(path)``, answered with ``StreamStart(size)``, the raw bytes and
``StreamEnd(size, crc32, "", tag)``, or with an ErrorReply instead of the StreamStart.  Only
regular files inside the store, after resolving symlinks and ``..``, are ever sent:
this port is reachable with nothing but the cluster secret.

A refusal in the middle of an upload is sent at once, before the client has
finished sending; the server then stops reading and hangs up, after giving the
client a moment to read the reason (the client looks for it while it sends).
A stream that moves less than ``FLOOR_BYTES`` in any ``FLOOR_WINDOW`` (a trickle) is
cut off, and its space reservation released.  The threads that pump raw bytes come
from the server's own limiter (``STREAM_THREADS``, ``STREAM_THREADS_PER_PEER`` for one
peer IP), so slow streams can never take
the threads that ingest and commit use (trio's default limiter).
sdfs.transfer.rawstream explains why the bytes travel unframed and how they are checked.
The name rules and the atomic writer, shared with the senders, are sdfs.transfer.files.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import socket
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, Any

import trio

from net.codec import NONCE_SIZE
from net.errors import one_line
from net.messages import (
    ChainEnd,
    ChainStream,
    ErrorReply,
    GetStream,
    HopResult,
    PutStream,
    StreamEnd,
    StreamStart,
)
from net.meters import Histogram
from net.progress import human_bytes
from net.rpc import IDLE_TIMEOUT, Connection
from sdfs.store import Arrivals
from sdfs.transfer import chain, rawstream
from sdfs.transfer.files import (
    AtomicWriter,
    name_problem,
    path_problem,
    quoted,
    resolve_inside,
)

log = logging.getLogger(__name__)

# A stream moving less than 64 KiB in 10 s is cut off: the slowest link we support
# moves that in well under a second, and a trickle must not hold a thread for ever.
FLOOR_BYTES = 64 * 1024
FLOOR_WINDOW = 10.0
# Worker threads for raw streams, in a limiter of their own: 16 keeps several replicas'
# transfers in parallel, and leaves trio's default limiter (40) to ingest and commit.
STREAM_THREADS = 16
# At most 8 of them for one peer IP: a host that trickles many streams cannot take
# them all, and another host's put still gets a thread at once.
STREAM_THREADS_PER_PEER = 8


def _shown(path: str, limit: int = 200) -> str:
    """``path`` for an error message, shortened: a peer may send megabytes."""
    return path if len(path) <= limit else path[: limit - 3] + "..."


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
        arrivals: Arrivals | None = None,
        # Kept free beyond every upload, so a full incoming directory cannot starve the
        # node's logs and metadata writes of the last few megabytes.
        reserve_bytes: int = 64 * 1024 * 1024,
        # Longest silence tolerated from a client mid-stream, or while it reads.
        idle_timeout: float = IDLE_TIMEOUT,
        # For a chain (ChainStream): connecting to the next hop, and waiting for its
        # answer after the last byte (it fsyncs, and so do the hops behind it).
        connect_timeout: float = 5.0,
        finish_timeout: float = 120.0,
        # How long a refused client gets to read the reason before we hang up.
        linger: float = 2.0,
        floor_bytes: int = FLOOR_BYTES,
        floor_window: float = FLOOR_WINDOW,
        stream_threads: int = STREAM_THREADS,
        peer_threads: int = STREAM_THREADS_PER_PEER,
    ) -> None:
        self.incoming_dir = Path(incoming_dir).resolve()
        self.store_dir = Path(store_dir).resolve()
        self.node_name = node_name or socket.gethostname()
        self.arrivals = arrivals if arrivals is not None else Arrivals()
        self.reserve_bytes = reserve_bytes
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self.finish_timeout = finish_timeout
        self.linger = linger
        self.floor_bytes = floor_bytes
        self.floor_window = floor_window
        # Streams wait here for a thread; file work for the store uses trio's default.
        self.threads = trio.CapacityLimiter(stream_threads)
        self.peer_threads = peer_threads
        self._peer_limiters: dict[str, trio.CapacityLimiter] = {}
        self._held = 0  # bytes promised to uploads in flight
        self.uploads = 0
        self.downloads = 0
        self.refused = 0
        self.damaged = 0  # uploads whose bytes did not match their sender's trailer
        self.bytes_in = 0
        self.bytes_out = 0
        # Seconds from a GetStream to its last byte sent, downloads that completed
        # (for /metrics: a replica's side of a get).
        self.download_seconds = Histogram()

    @contextlib.asynccontextmanager
    async def _peer_slot(self, conn: Connection) -> AsyncIterator[None]:
        """One of the ``peer_threads`` stream slots of ``conn``'s peer IP."""
        ip = conn.peer[0]
        limiter = self._peer_limiters.get(ip)
        if limiter is None:
            limiter = self._peer_limiters[ip] = trio.CapacityLimiter(self.peer_threads)
        try:
            async with limiter:
                yield
        finally:
            if not limiter.borrowed_tokens and not limiter.statistics().tasks_waiting:
                self._peer_limiters.pop(ip, None)

    def _floor(self) -> rawstream.Floor:
        return rawstream.Floor(self.floor_bytes, self.floor_window)

    async def handle(self, request: Any, conn: Connection) -> Any:
        if isinstance(request, (PutStream, ChainStream)):
            return await self._upload(request, conn)
        if isinstance(request, GetStream):
            return await self._download(request, conn)
        return ErrorReply(f"{self.node_name}: {type(request).__name__} is not a stream request")

    # --- upload ---------------------------------------------------------------------

    def _free_bytes(self) -> int:
        return shutil.disk_usage(self.incoming_dir).free - self.reserve_bytes - self._held

    async def _upload(self, request: PutStream | ChainStream, conn: Connection) -> Any:
        name, size = request.name, request.size
        downstream = request.downstream if isinstance(request, ChainStream) else ()
        what = f"{self.node_name}: upload of {quoted(name)}"
        problem = name_problem(name)
        if len(downstream) >= chain.MAX_HOPS:
            problem = f"a chain of more than {chain.MAX_HOPS} hops"
        for hop in downstream:
            problem = problem or name_problem(hop.name)
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
        forward: chain.Forward | None = None
        try:
            writer = await trio.to_thread.run_sync(
                functools.partial(AtomicWriter, self.incoming_dir / name, sha256=False)
            )
            out = writer  # a name the closure can use without an Optional check
            # The tag replaces our own CRC-32: it is faster, and it is what we trust.
            if len(request.nonce) != NONCE_SIZE:
                raise _Refused(f"{what} refused: an upload nonce is {NONCE_SIZE} bytes")
            mac = rawstream.stream_mac(conn.session.codec.upload_key(request.nonce))
            sink: Callable[[memoryview], None] = out.write
            if downstream:
                forward = await chain.Forward.open(
                    downstream,
                    size,
                    request.nonce,
                    conn.session.codec,
                    connect_timeout=self.connect_timeout,
                    idle_timeout=self.idle_timeout,
                    send_timeout=self.idle_timeout * chain.FORWARD_TIMEOUT_SHARE,
                )
                if forward.error is not None:
                    log.info("%s: forwarding to %s: %s", what, forward.node, forward.error)
                tee = forward

                def tee_sink(piece: memoryview) -> None:
                    # Forward first, as HDFS's BlockReceiver does: the next hop starts
                    # on the piece while we write it.
                    tee.write(piece)
                    out.write(piece)

                sink = tee_sink

            sock = rawstream.dup_socket(conn.stream.socket)  # type: ignore[attr-defined]
            try:
                async with self._peer_slot(conn):
                    await trio.to_thread.run_sync(
                        lambda: rawstream.receive(
                            sock,
                            size,
                            sink,
                            idle_timeout=self.idle_timeout,
                            inline=[mac],
                            crc=False,
                            check=trio.from_thread.check_cancelled,
                            floor=self._floor(),
                        ),
                        limiter=self.threads,
                    )
            finally:
                sock.close()
            self.bytes_in += size
            end = await conn.receive(self.idle_timeout)
            if not isinstance(end, StreamEnd):
                raise _Refused(f"{what} failed: expected StreamEnd, got {type(end).__name__}")
            if end.size != size or not rawstream.tag_matches(mac, end.tag):
                self.damaged += 1
                raise _Refused(
                    f"{what} failed: arrived damaged: {size} bytes that do not match "
                    f"the sender's tag for {end.size} bytes"
                )
            if forward is not None:
                # Only what we verified goes on (the successor checks the same tag),
                # and before our fsync, so that the hops sync at the same time.
                await forward.pass_end(end)
            await trio.to_thread.run_sync(writer.commit)
            writer = None
            await trio.to_thread.run_sync(self.arrivals.note, out.target, end.sha256)
            self.uploads += 1
            if not isinstance(request, ChainStream):
                return StreamEnd(size, end.crc32, end.sha256, b"")
            mine = HopResult(self.node_name, True, size, end.sha256)
            rest: list[HopResult] = []
            if forward is not None:
                rest = await forward.finish(end, self.finish_timeout * chain.FORWARD_TIMEOUT_SHARE)
                if rest and not rest[0].ok:
                    log.info("%s: forwarding to %s: %s", what, forward.node, rest[0].error)
            return ChainEnd((mine, *rest))
        except rawstream.StreamBroken as e:
            log.info("%s failed: %s", what, e)
            return await self._hang_up(conn, f"{what} failed: {e}")
        except _Refused as r:
            return await self._hang_up(conn, str(r))
        except OSError as e:
            return await self._hang_up(conn, f"{what} failed: {e.strerror}")
        finally:
            self._held -= size
            if forward is not None:
                await forward.aclose()
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
        error = one_line(error)  # it may quote a name a peer sent: megabytes of it
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
            error = f"{self.node_name}: refused to send {_shown(path)}: not inside the store"
            raise _Refused(error) from None

    def _open(self, path: str) -> IO[bytes]:
        real = self._resolve(path)
        try:
            f = open(real, "rb")  # noqa: SIM115  (closed by the caller)
        except FileNotFoundError:
            raise _Refused(f"{self.node_name}: no such file {_shown(path)}") from None
        except OSError as e:
            raise _Refused(f"{self.node_name}: cannot read {_shown(path)}: {e.strerror}") from None
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            f.close()
            raise _Refused(f"{self.node_name}: {_shown(path)} is not a regular file")
        return f

    async def _download(self, request: GetStream, conn: Connection) -> Any:
        started = trio.current_time()
        try:
            f = await trio.to_thread.run_sync(self._open, request.path)
        except _Refused as r:
            self.refused += 1
            return ErrorReply(one_line(str(r)))  # the client sent nothing more: a plain answer
        try:
            size = os.fstat(f.fileno()).st_size
            with trio.fail_after(self.idle_timeout):
                await conn.send(StreamStart(size))
            mac = rawstream.stream_mac(conn.session.stream_key(sending=True))
            sock = rawstream.dup_socket(conn.stream.socket)  # type: ignore[attr-defined]
            try:
                async with self._peer_slot(conn):
                    crc, [error] = await trio.to_thread.run_sync(
                        lambda: rawstream.send(
                            f,
                            size,
                            [sock],
                            idle_timeout=self.idle_timeout,
                            hashers=[mac],
                            check=trio.from_thread.check_cancelled,
                            floor=self._floor,
                        ),
                        limiter=self.threads,
                    )
            finally:
                sock.close()
        except (OSError, ValueError) as e:
            # Mid-stream: the client is counting raw bytes, so a reply cannot follow.
            log.warning("%s: cannot send %s: %s", self.node_name, request.path, e)
            with trio.CancelScope(shield=True):
                await conn.aclose()
            return ErrorReply(f"{self.node_name}: cannot read {request.path}")
        finally:
            f.close()
        if error is not None:
            log.info("%s: download of %s stopped: %s", self.node_name, request.path, error)
            with trio.CancelScope(shield=True):
                await conn.aclose()
            return ErrorReply(error)
        self.bytes_out += size
        self.downloads += 1
        self.download_seconds.observe(trio.current_time() - started)
        return StreamEnd(size, crc, "", mac.finalize())
