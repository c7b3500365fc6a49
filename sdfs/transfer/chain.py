"""Replication in a chain: writer -> r1 -> r2 -> r3 -> r4, each hop forwarding while it receives.

Why
---
A put that fans out from the writer sends one copy per replica over the writer's own
link: on 1 Gbit/s a 4-replica put takes at least 4x one copy.  As in HDFS's write
pipeline (DataStreamer / PipelineAck), the writer sends one copy to the first replica,
which writes it to its incoming directory and, as each piece arrives, forwards it to
the next, and so on.  Every link then carries the file once in each direction, and a
put takes about one copy's time plus a few pieces of latency per hop.

tcp (``ChainStream``, this module and sdfs.transfer.server)
------------------------------------------------------------
The writer opens a :class:`~net.messages.ChainStream` to r1: a PutStream with the
``downstream`` hops (node, host, port, incoming name).  A hop's TransferServer opens a
ChainStream to ``downstream[0]`` with ``downstream[1:]`` and the writer's nonce before it
reads a byte (:meth:`Forward.open`), then receives as for a PutStream, handing every
piece first to its own file and then to the next hop's socket (:meth:`Forward.write`, on
the receiving thread: the piece is still in the CPU's cache, and the upstream slows to
the downstream's pace, as in HDFS).  After the last byte it checks the writer's
StreamEnd (tag, size) and, only if it matches, passes that same StreamEnd on; it commits
its own file, then waits for the downstream's :class:`~net.messages.ChainEnd` and answers
its upstream with a ChainEnd of its own result first and the downstream's after it.

Invariants:

1. Every hop checks the bytes it keeps against the writer's Poly1305 tag under the
   writer's one-time key (the nonce travels down the chain unchanged, and each
   ChainStream is itself sealed with the cluster MAC): a hop cannot make its successor
   keep bytes the writer did not send.  The SHA-256 in each hop's result is the
   writer's, which that hop verified under the tag; it lands in the hop's Arrivals as
   for any upload, so ingest checks it against the grant.
2. A hop whose successor fails (connection refused or lost, a refusal, silence for
   ``FORWARD_TIMEOUT_SHARE`` of the idle timeout) stops forwarding and finishes its own
   copy: the hops before a broken link still finish.  The writer's result names, per
   replica, the (size, SHA-256) it holds or why not ("not reached" for the hops behind
   a break).
3. A hop that fails itself (its disk, its upstream, a bad tag) hangs up on both sides;
   its successors then fail too, never keeping a partial or unverified file.
4. The answer is checked against what was sent: a result for another node, or with
   another size or digest, counts as a failure of that hop.

scp (``RelayFile``, sdfs.copies and sdfs.transfer.scp)
------------------------------------------------------
sshd cannot forward, so a node does: the writer scp's the file to r1 under a temporary
name it chooses and, at the same time, sends r1's node a
:class:`~net.messages.RelayFile` (the temporary's name, the size, the downstream hops).
r1 opens the temporary as soon as it appears and reads it as it grows
(:class:`GrowingFile`: never past the announced size, giving up when the writer's scp
removes it or it stops growing for the idle timeout), and copies it down the chain by
its own scp transfer with the same RelayFile to r2 for the rest; each hop answers with
the ChainEnd of the hops behind it.  Bytes move only over SSH, with the node's key and
host-key checks, hop by hop; each hop's (size, SHA-256) is the count of its sender, and
ingest re-hashes every scp arrival against the grant, as for a fan-out.

A hop connects only where a ChainStream or RelayFile tells it to, and those are
sealed with the cluster MAC: only a member (or a console with the secret) can name a
next hop; the hop's own name rules and disk-space checks apply there as for any upload.

When the chain is used (sdfs.copies.push)
-----------------------------------------
For a file of at least ``pipeline_min_bytes`` (the cluster file; 1 MiB by default) and
at least two targets on one transport.  Below it, fan-out: the writer's link carries
little, one round trip beats four hops' set-up, and batches of small files
(sdfs.putbatch, sdfs.putdir) stay as they are.  If the chain leaves fewer than the
caller's quorum holding verified copies, the writer sends the missing replicas their
copies by fan-out (a new chain through a dead replica would fail the same way).  A
replica on the writer's own host goes first in the chain, so that the chain leaves
the writer's link once rather than coming back in and going out again.  The
put coordinator's ingest, quorum and commit rules then apply unchanged.  Repairs
(sdfs.replica) copy to several targets through the same function, so they chain too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Sequence
from typing import IO, Any

import trio

from net.codec import Codec, Rejected
from net.messages import ChainEnd, ChainStream, ErrorReply, Hop, HopResult, StreamEnd
from net.rpc import Connection, RpcError, connect, read_frame
from sdfs.transfer import rawstream
from sdfs.transfer.base import Peer, TransferError, TransferResult, reason, short_hash

MAX_HOPS = 16
"""The longest chain a hop accepts (replication is 4; a bound on what a peer may ask)."""

FORWARD_TIMEOUT_SHARE = 0.25
"""A hop gives up on a silent successor after this share of its idle timeout, so that
it notices before its own upstream (waiting on it) does, and finishes its copy."""

TAIL_POLL = 0.005
"""Seconds a GrowingFile waits before it looks again for more bytes."""


def hops(targets: Sequence[tuple[Peer, str]]) -> tuple[Hop, ...]:
    return tuple(Hop(peer.name, peer.host, peer.port, name) for peer, name in targets)


def not_reached(downstream: Sequence[Hop], why: str) -> list[HopResult]:
    return [HopResult(hop.node, False, error=why) for hop in downstream]


def check_results(
    answer: Any, downstream: Sequence[Hop], size: int, sha256: str
) -> list[HopResult]:
    """The downstream hops' results from their answer (a ChainEnd, or a refusal).

    A hop whose result is missing, names another node, or disagrees with ``size`` /
    ``sha256`` (what was sent) counts as failed (invariant 4)."""
    if not downstream:
        return []
    first = downstream[0].node
    if isinstance(answer, ErrorReply):
        return [
            HopResult(first, False, error=answer.error),
            *not_reached(downstream[1:], f"not reached: {first} refused"),
        ]
    if not isinstance(answer, ChainEnd):
        why = f"unexpected answer {type(answer).__name__}"
        return [
            HopResult(first, False, error=why),
            *not_reached(downstream[1:], f"not reached: {first} failed"),
        ]
    out = []
    for k, hop in enumerate(downstream):
        got = answer.results[k] if k < len(answer.results) else None
        if got is None or got.node != hop.node:
            out.append(HopResult(hop.node, False, error="no result in the chain's answer"))
        elif not got.ok:
            out.append(HopResult(hop.node, False, error=got.error or "failed"))
        elif got.size != size or (sha256 and got.sha256 != sha256):
            out.append(
                HopResult(
                    hop.node,
                    False,
                    error=f"checksum mismatch: sent {size} bytes sha256 {short_hash(sha256)}..., "
                    f"it holds {got.size} bytes sha256 {short_hash(got.sha256)}...",
                )
            )
        else:
            out.append(got)
    return out


def as_transfer_results(
    results: Sequence[HopResult], targets: Sequence[tuple[Peer, str]], start: float, what: str
) -> list[TransferResult | TransferError]:
    """Hop results as a Transfer's ``push_many`` answers them, one per target."""
    seconds = time.perf_counter() - start
    out: list[TransferResult | TransferError] = []
    for (peer, _), r in zip(targets, results, strict=True):
        if r.ok:
            out.append(TransferResult(r.size, r.sha256, seconds))
        else:
            out.append(TransferError(f"{what} to {peer.name} failed: {r.error}"))
    return out


class Forward:
    """One hop's connection to its successor in a tcp chain (see the module docstring).

    :meth:`write` runs on the receiving thread; everything else on the trio thread."""

    def __init__(self, downstream: Sequence[Hop], idle_timeout: float) -> None:
        self.downstream = tuple(downstream)
        self.idle_timeout = idle_timeout
        self.conn: Connection | None = None
        self.sock: socket.socket | None = None
        self.error: str | None = None
        self.end_sent = False
        self.forwarded = 0

    @property
    def node(self) -> str:
        return self.downstream[0].node

    @classmethod
    async def open(
        cls,
        downstream: Sequence[Hop],
        size: int,
        nonce: bytes,
        codec: Codec,
        *,
        connect_timeout: float,
        idle_timeout: float,
        send_timeout: float,
    ) -> Forward:
        """Connect to ``downstream[0]`` and start its ChainStream; a Forward whose
        ``error`` says why not if that failed (the caller carries on without it)."""
        fwd = cls(downstream, idle_timeout)
        hop, rest = fwd.downstream[0], fwd.downstream[1:]
        try:
            fwd.conn = await connect((hop.host, hop.port), codec, connect_timeout)
        except RpcError as e:
            fwd.error = f"cannot connect: {e}"
            return fwd
        try:
            with trio.fail_after(idle_timeout):
                await fwd.conn.send(ChainStream(hop.name, size, nonce, rest))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            fwd.error = "connection lost"
            return fwd
        except trio.TooSlowError:
            fwd.error = "stopped reading"
            return fwd
        fwd.sock = rawstream.dup_socket(fwd.conn.stream.socket)  # type: ignore[attr-defined]
        fwd.sock.settimeout(send_timeout)
        return fwd

    def write(self, piece: memoryview) -> None:
        """Pass ``piece`` on (receiving thread); after a failure, do nothing."""
        if self.error is not None or self.sock is None:
            return
        try:
            if rawstream.answered(self.sock):
                self.error = rawstream.ANSWERED_EARLY
                return
            self.sock.sendall(piece)
            self.forwarded += len(piece)
        except TimeoutError:
            self.error = f"stopped reading for {self.sock.gettimeout():g} s"
        except OSError as e:
            self.error = f"connection lost: {reason(e)}"

    def _close_sock(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def pass_end(self, end: StreamEnd) -> None:
        """Pass the StreamEnd we verified on to the successor (a failure is noted)."""
        self._close_sock()
        if self.error is not None or self.conn is None or self.end_sent:
            return
        self.end_sent = True
        try:
            with trio.fail_after(self.idle_timeout):
                await self.conn.send(end)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.error = "connection lost"
        except trio.TooSlowError:
            self.error = "stopped reading"

    async def finish(self, end: StreamEnd | None, answer_timeout: float) -> list[HopResult]:
        """The downstream's results: pass ``end`` on if not done yet (None when our own
        copy failed: the successor then must not keep its bytes) and read its ChainEnd."""
        self._close_sock()
        conn = self.conn
        if conn is None:
            return self._failed(self.error or "not connected")
        if end is None:
            return self._failed(self.error or "the hop before it failed")
        await self.pass_end(end)
        answer: Any = None
        try:
            if self.error is None:
                answer = await conn.receive(answer_timeout)
            else:
                # It may have said why before it went; listen briefly.
                with trio.move_on_after(2.0):
                    with contextlib.suppress(Exception):
                        answer = await read_frame(conn.stream, conn.session)
                if not isinstance(answer, ErrorReply):
                    return self._failed(self.error)
        except trio.TooSlowError:
            return self._failed(f"no answer within {answer_timeout:g} s of the last byte")
        except Rejected as r:
            return self._failed(f"answer rejected ({r.reason})")
        except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return self._failed(self.error or "connection closed without an answer")
        return check_results(answer, self.downstream, end.size, end.sha256)

    def _failed(self, why: str) -> list[HopResult]:
        return [
            HopResult(self.node, False, error=why),
            *not_reached(self.downstream[1:], f"not reached: {self.node} failed"),
        ]

    async def aclose(self) -> None:
        self._close_sock()
        if self.conn is not None:
            with trio.CancelScope(shield=True):
                await self.conn.aclose()


class GrowingFile:
    """A file that another process is still writing (scp into this node's incoming
    directory), read up to its announced ``size`` as it grows (blocking, for threads).

    It waits up to ``appear_timeout`` for the file to exist; a read that finds no new
    byte waits ``TAIL_POLL`` and looks again, and fails after ``idle_timeout`` without
    growth, or at once when the file has been removed (its writer gave up)."""

    def __init__(self, path: str, size: int, *, idle_timeout: float, appear_timeout: float) -> None:
        self.path = path
        self.size = size
        self.idle_timeout = idle_timeout
        self.appear_timeout = appear_timeout
        self.pos = 0
        self.f: IO[bytes] | None = None
        self.check: Any = None  # called between waits; raises to stop (cancellation)

    def open(self) -> None:
        waited = 0.0
        while True:
            try:
                self.f = open(self.path, "rb", buffering=0)  # noqa: SIM115  (closed by close())
                return
            except FileNotFoundError:
                if waited >= self.appear_timeout:
                    raise TransferError(
                        f"{os.path.basename(self.path)} did not arrive "
                        f"within {self.appear_timeout:g} s"
                    ) from None
            if self.check is not None:
                self.check()
            time.sleep(TAIL_POLL)
            waited += TAIL_POLL

    def read(self, n: int) -> bytes:
        if self.f is None:
            self.open()
        assert self.f is not None
        want = min(n, self.size - self.pos)
        if want <= 0:
            return b""
        idle = 0.0
        while True:
            data = self.f.read(want)
            if data:
                self.pos += len(data)
                return data
            if os.fstat(self.f.fileno()).st_nlink == 0:
                raise TransferError(f"the upstream copy was removed after {self.pos} bytes")
            if idle >= self.idle_timeout:
                raise TransferError(
                    f"the upstream copy stopped growing at {self.pos} of {self.size} bytes "
                    f"for {self.idle_timeout:g} s"
                )
            if self.check is not None:
                self.check()
            time.sleep(TAIL_POLL)
            idle += TAIL_POLL

    def seek(self, pos: int) -> None:
        if pos != 0 or self.pos != 0:
            raise TransferError("a copy of an arriving file cannot start over")

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None
