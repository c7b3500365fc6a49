"""The tcp transport: files over the nodes' own RPC port, PutStream / GetStream.

A sealed header, the file's bytes raw, a sealed StreamEnd(size, crc32, sha256, tag): this needs no
SSH server, only the peer's TransferServer (sdfs.transfer.server), and moves bytes at
the speed of the kernel's loopback or network.  sdfs.transfer.rawstream has the
protocol, its integrity argument and the pumps; this module holds the conversations
around them.

Invariants, beyond those of sdfs.transfer.base:

1. ``push_many`` reads the file once, whatever the number of receivers, and each
   receiver succeeds or fails on its own: one that refuses, hangs up or lies about
   the checksum never stops the others.
2. A push succeeds only when the receiver verified the stream's tag and answers with the
   size, CRC-32 and SHA-256 that the sender computed; a pull keeps the file only when
   the sender's trailer (its tag, under the stream's key) matches what arrived (and
   ``expected_size`` / ``expected_sha256``, when given).
3. Connections are never kept: one per transfer, closed (shielded) on the way out.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import trio

from net.codec import NONCE_SIZE, Codec, Rejected
from net.messages import ErrorReply, GetStream, PutStream, StreamEnd, StreamStart
from net.progress import Progress
from net.rpc import IDLE_TIMEOUT, Connection, RpcError, connect, read_frame
from sdfs.transfer import chain, rawstream
from sdfs.transfer.base import (
    CHUNK_SIZE,
    Peer,
    TransferError,
    TransferResult,
    pull_label,
    push_label,
    reason,
)
from sdfs.transfer.files import AtomicWriter, name_problem, path_problem
from sdfs.transfer.landing import land
from sdfs.transfer.progress import Reporter, ThreadReporter, in_thread


class TcpTransfer:
    """Streams over the node's RPC port (net.rpc): PutStream / GetStream conversations.

    A sealed header, the file's bytes raw, a sealed StreamEnd with their MAC: this needs
    no SSH server, only the peer's TransferServer (sdfs.transfer.server), and moves
    bytes at the speed of the kernel's loopback or network (sdfs.transfer.rawstream has the
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
        self,
        local: Path,
        peer: Peer,
        name: str,
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> TransferResult:
        [result] = await self.push_many(local, [(peer, name)], progress, label=label)
        if isinstance(result, TransferError):
            raise result
        return result

    async def push_many(
        self,
        local: Path,
        targets: Sequence[tuple[Peer, str]],
        progress: Progress | None = None,
        *,
        label: str | None = None,
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
            error = f"failed: cannot read {local}: {reason(e)}"
            return [r or TransferError(f"{w} {error}") for r, w in zip(results, whats, strict=True)]
        conns: dict[int, Connection] = {}
        try:
            size = os.fstat(f.fileno()).st_size
            if label is None:
                label = push_label(local, [peer for peer, _ in targets])
            reporter = Reporter(progress, label, size)
            reporter(0)

            nonce = os.urandom(NONCE_SIZE)

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
                        await conn.send(PutStream(name, size, nonce))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    results[i] = TransferError(f"{whats[i]} failed: connection lost")
                except trio.TooSlowError:
                    results[i] = TransferError(f"{whats[i]} failed: {peer.name} stopped reading")

            async with trio.open_nursery() as nursery:
                for i in range(len(targets)):
                    if results[i] is None:
                        nursery.start_soon(open_one, i)
            live = [i for i in range(len(targets)) if results[i] is None]
            # One MAC for every receiver (one upload key: net.codec.Codec.upload_key), fed
            # by the thread that reads the file once for the SHA-256.  No CRC-32: the
            # receivers trust the tag, and echo the StreamEnd's crc32 back.
            mac = rawstream.stream_mac(self.codec.upload_key(nonce))
            hasher = hashlib.sha256()
            crc = 0
            errors: list[str | None] = []
            socks = [rawstream.dup_socket(conns[i].stream.socket) for i in live]  # type: ignore[attr-defined]
            try:
                if live:
                    report = ThreadReporter(reporter)
                    crc, errors = await in_thread(
                        lambda: rawstream.send(
                            f,
                            size,
                            socks,
                            idle_timeout=self.idle_timeout,
                            hashers=[hasher, mac],
                            crc=False,
                            check=trio.from_thread.check_cancelled,
                            progress=report,
                        )
                    )
            except ValueError as e:
                errors = [f"the local file changed: {e}"] * len(live)
            except OSError as e:
                errors = [f"cannot read local file: {reason(e)}"] * len(live)
            finally:
                for s in socks:
                    s.close()
            digest = hasher.hexdigest()
            tag = mac.finalize()

            async def finish(k: int, i: int) -> None:
                end = StreamEnd(size, crc, digest, tag)
                results[i] = await self._finish(
                    conns[i], targets[i][0], whats[i], errors[k], end, start
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

    async def push_chain(
        self,
        local: Path,
        targets: Sequence[tuple[Peer, str]],
        progress: Progress | None = None,
        *,
        label: str | None = None,
    ) -> list[TransferResult | TransferError]:
        """``push_many`` as a chain (sdfs.transfer.chain): the file goes once, to the
        first target, which forwards it to the next while it arrives, and so on.

        One result per target, in order, as ``push_many``'s."""
        if len(targets) < 2:
            return await self.push_many(local, targets, progress, label=label)
        what = "upload"
        downstream = chain.hops(targets)
        for hop in downstream:
            problem = name_problem(hop.name)
            if problem:
                return [TransferError(f"{what} to {p.name} refused: {problem}") for p, _ in targets]
        start = time.perf_counter()
        try:
            f = await trio.to_thread.run_sync(lambda: open(local, "rb"))  # noqa: SIM115
        except OSError as e:
            why = f"cannot read {local}: {reason(e)}"
            return [TransferError(f"{what} to {p.name} failed: {why}") for p, _ in targets]
        forward: chain.Forward | None = None
        try:
            size = os.fstat(f.fileno()).st_size
            if label is None:
                label = push_label(local, [peer for peer, _ in targets])
            reporter = Reporter(progress, label, size)
            reporter(0)
            nonce = os.urandom(NONCE_SIZE)
            # We are hop 0 of the chain: our "successor" is the first target.
            forward = await chain.Forward.open(
                downstream,
                size,
                nonce,
                self.codec,
                connect_timeout=self.connect_timeout,
                idle_timeout=self.idle_timeout,
                send_timeout=self.idle_timeout,
            )
            mac = rawstream.stream_mac(self.codec.upload_key(nonce))
            hasher = hashlib.sha256()
            failed = False
            if forward.sock is not None:
                sock = forward.sock
                report = ThreadReporter(reporter)
                error: str | None
                try:
                    _, errors = await in_thread(
                        lambda: rawstream.send(
                            f,
                            size,
                            [sock],
                            idle_timeout=self.idle_timeout,
                            hashers=[hasher, mac],
                            crc=False,
                            check=trio.from_thread.check_cancelled,
                            progress=report,
                        )
                    )
                    error = errors[0]
                except ValueError as e:
                    error, failed = f"the local file changed: {e}", True
                except OSError as e:
                    error, failed = f"cannot read local file: {reason(e)}", True
                if error is not None:
                    forward.error = error
            end = StreamEnd(size, 0, hasher.hexdigest(), mac.finalize())
            results = await forward.finish(None if failed else end, self.finish_timeout)
        finally:
            f.close()
            if forward is not None:
                await forward.aclose()
        done = chain.as_transfer_results(results, targets, start, what)
        if any(isinstance(r, TransferResult) for r in done):
            reporter.finish(size)
        return done

    async def _finish(
        self,
        conn: Connection,
        peer: Peer,
        what: str,
        error: str | None,
        end: StreamEnd,
        start: float,
    ) -> TransferResult | TransferError:
        """Close one receiver's stream: trailer, then its verdict (or its early refusal)."""
        if error is not None and error != rawstream.ANSWERED_EARLY:
            # It may still have said why before it went; listen briefly.
            with trio.move_on_after(2.0):
                with contextlib.suppress(Exception):
                    answer = await read_frame(conn.stream, conn.session)
                    if isinstance(answer, ErrorReply):
                        return TransferError(f"{what} failed: {answer.error}")
            return TransferError(f"{what} failed: {error}")
        try:
            if error is None:
                with trio.fail_after(self.idle_timeout):
                    await conn.send(end)
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
        size, crc = end.size, end.crc32
        if (answer.size, answer.crc32, answer.sha256) != (size, crc, end.sha256):
            return TransferError(
                f"{what} failed: checksum mismatch: sent {size} bytes crc32 {crc:08x}, "
                f"{peer.name} got {answer.size} bytes crc32 {answer.crc32:08x}"
            )
        return TransferResult(size, end.sha256, time.perf_counter() - start, crc)

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
        what = f"download of {remote_path} from {peer.name} ({peer.host}:{peer.port})"
        problem = path_problem(remote_path)
        if problem:
            raise TransferError(f"{what} refused: {problem}")
        start = time.perf_counter()
        reporter = Reporter(
            progress,
            pull_label(remote_path, peer) if label is None else label,
            -1 if expected_size is None else expected_size,
        )

        async def move(writer: AtomicWriter) -> tuple[str, int | None]:
            hasher = hashlib.sha256()  # fed on a thread of its own (rawstream.receive)
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
                mac = rawstream.stream_mac(conn.session.stream_key(sending=False))
                sock = rawstream.dup_socket(conn.stream.socket)  # type: ignore[attr-defined]
                report = ThreadReporter(reporter)
                try:
                    crc = await in_thread(
                        lambda: rawstream.receive(
                            sock,
                            size,
                            writer.write,
                            idle_timeout=self.idle_timeout,
                            hashers=[hasher],
                            inline=[mac],
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
            authentic = rawstream.tag_matches(mac, done.tag)
            if done.size != writer.size or done.crc32 != crc or not authentic:
                raise TransferError(
                    f"{what} failed: checksum mismatch: {peer.name} sent {done.size} bytes "
                    f"crc32 {done.crc32:08x}, got {writer.size} bytes crc32 {crc:08x}"
                    + ("" if authentic else " that do not match its tag")
                )
            return hasher.hexdigest(), crc

        def explain(e: BaseException) -> str | None:
            if isinstance(e, rawstream.StreamBroken):
                return str(e)
            if isinstance(e, EOFError):
                return f"{peer.name} hung up mid-stream"
            if isinstance(e, trio.TooSlowError):
                return f"nothing from {peer.name} for {self.idle_timeout:g} s"
            if isinstance(e, Rejected):
                return f"a frame was rejected ({e.reason}); is the cluster secret the same?"
            if isinstance(e, (trio.BrokenResourceError, trio.ClosedResourceError)):
                return "connection lost"
            if isinstance(e, OSError):
                return reason(e)
            return None

        return await land(
            Path(local),
            move,
            what=what,
            reporter=reporter,
            start=start,
            sha256=False,
            expected_size=expected_size,
            expected_sha256=expected_sha256,
            explain=explain,
        )

    async def aclose(self) -> None:
        pass  # one connection per transfer: nothing is kept open
