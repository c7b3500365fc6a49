"""The bulk of a TCP transfer: raw bytes between two sealed frames, pumped by threads.

A transfer over the nodes' own port (``transfer = "tcp"``) is a sealed header
(PutStream or StreamStart, net.messages) announcing ``size``, exactly ``size`` raw
bytes, and a sealed ``StreamEnd(size, crc32, sha256, tag)``.  The bytes are not framed:
a MAC and a msgpack copy per MiB on both sides cost more CPU than everything else in a
put, and a put to 4 replicas does that 8 times per byte.

Integrity and authenticity:

- On the wire, a Poly1305 tag of the bytes (``tag``) under a one-time key: an
  upload's from the cluster secret and the random nonce in its sealed PutStream
  (net.codec.Codec.upload_key; one upload to several replicas has one nonce, so the
  sender computes one tag for all), a download's from the connection's key and the
  header frame's sequence number (net.codec.Session.stream_key); the StreamEnd that
  carries it is itself sealed with the connection's key.  Every receiver checks the
  tag on arrival, before the file is renamed into place: whoever can splice bytes
  into a node's TCP connection cannot make them pass without the cluster secret.
  (A CRC-32 alone, as before, anyone can forge.)  Poly1305 runs at ~8 GB/s here,
  faster than the CRC-32 it replaces on receivers and four times faster than SHA-256,
  so a put to 4 replicas on one host stays as fast.
- The CRC-32 (zlib's) stays in the StreamEnd of a download for the reader's checks
  and reports; an upload's sender no longer computes it (its receivers trust the tag).
- End to end, the SHA-256 in the file's VersionRecord: the writer computes it in the
  same pass that reads the bytes it sends and MACs, and sends it in the StreamEnd of
  an upload; a receiver that verified the tag knows those are the bytes the SHA-256
  was computed over, and ingest checks it against the digest the leader granted.
  Every reader (``get``) checks the SHA-256 before the copy replaces its destination.

The pumps below are blocking, for worker threads.  Sockets, files, zlib.crc32 and
hashlib all release the GIL on large buffers (Poly1305 holds it, ~30 us a piece), so
the pumps of several transfers run in parallel on several cores and the node's trio
thread (membership) stays free.
They work on a duplicate of the trio socket's descriptor, with a short timeout so
they notice cancellation (``check``) within POLL seconds; the descriptor keeps
O_NONBLOCK, which trio needs when it takes the connection back for the trailer.
"""

from __future__ import annotations

import hmac
import os
import queue
import select
import socket
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from typing import IO, Any

from cryptography.hazmat.primitives.poly1305 import Poly1305

BUFFER = 256 * 1024
"""Most bytes per read, write and hash update: large enough that per-call costs vanish,
small enough that a piece is still in the CPU's cache when it is checksummed and
written (with 1 MiB, a put to 4 replicas on one 2-core host took twice as long)."""

RING = 8
"""Buffers between a receiver and its hashing thread."""

POLL = 0.5
"""Seconds a pump blocks before it looks at cancellation again."""


class Floor:
    """A floor rate: at least ``min_bytes`` in every ``window`` seconds, or the stream is
    cut off (a peer that trickles a byte now and then holds a thread otherwise)."""

    def __init__(self, min_bytes: int, window: float) -> None:
        self.min_bytes = min_bytes
        self.window = window
        self._start = time.monotonic()
        self._bytes = 0

    def moved(self, n: int, total: int, size: int) -> None:
        """Note ``n`` more bytes; StreamBroken if the last window was too slow."""
        self._bytes += n
        self.check(total, size)

    def check(self, total: int, size: int) -> None:
        now = time.monotonic()
        if now - self._start < self.window:
            return
        # The last piece of a stream may be short: only what was left counts.
        if self._bytes < min(self.min_bytes, size - total + self._bytes):
            raise StreamBroken(
                f"slower than {self.min_bytes} bytes in {self.window:g} s "
                f"({self._bytes} bytes, {total} of {size} in all)"
            )
        self._start = now
        self._bytes = 0


def stream_mac(key: bytes) -> Poly1305:
    """The MAC of one raw stream (``key`` from net.codec.Session.stream_key)."""
    return Poly1305(key)


def tag_matches(mac: Poly1305, tag: bytes) -> bool:
    """Whether ``tag`` is ``mac``'s (finalizes it; constant time)."""
    return hmac.compare_digest(mac.finalize(), tag)


class StreamBroken(Exception):
    """The other side went away or went quiet; the message is one line for a person."""


def dup_socket(sock: Any) -> socket.socket:
    """A blocking-with-timeout Python socket on a duplicate of ``sock``'s descriptor
    (``sock`` is trio's socket; closing the duplicate leaves it open)."""
    dup = socket.socket(fileno=os.dup(sock.fileno()))
    dup.settimeout(POLL)
    return dup


def _never() -> None:
    pass


def receive(
    sock: socket.socket,
    size: int,
    sink: Callable[[memoryview], None],
    *,
    idle_timeout: float,
    hashers: Sequence[Any] = (),
    inline: Sequence[Any] = (),
    crc: bool = True,
    check: Callable[[], None] = _never,
    progress: Callable[[int], None] | None = None,
    floor: Floor | None = None,
) -> int:
    """Receive exactly ``size`` bytes, handing each piece to ``sink``.

    Returns their CRC-32 (0 if not ``crc``).  ``hashers`` (hashlib objects) see the same
    bytes, on a second thread, so a SHA-256 costs the transfer no time on a machine with
    a core to spare; ``inline`` ones (a fast MAC) see them on this thread, while each
    piece is in the CPU's cache.  StreamBroken if the peer hangs up first or sends nothing for
    ``idle_timeout`` seconds, or more slowly than ``floor``; ``check`` is called
    between blocking calls and may raise (cancellation)."""
    ring = [memoryview(bytearray(max(1, min(BUFFER, size)))) for _ in range(RING if hashers else 1)]
    free: queue.Queue[int] = queue.Queue()
    full: queue.Queue[tuple[int, int] | None] = queue.Queue()
    for k in range(len(ring)):
        free.put(k)

    def hash_pieces() -> None:
        while (item := full.get()) is not None:
            k, n = item
            for h in hashers:
                h.update(ring[k][:n])
            free.put(k)

    hasher = threading.Thread(target=hash_pieces, daemon=True) if hashers else None
    if hasher is not None:
        hasher.start()
    crc_value = 0
    got = 0
    idle = 0.0
    try:
        while got < size:
            k = free.get()
            view = ring[k]
            while True:
                check()
                try:
                    n = sock.recv_into(view, min(len(view), size - got))
                    break
                except TimeoutError:
                    idle += POLL
                    if idle >= idle_timeout:
                        raise StreamBroken(f"nothing arrived for {idle_timeout:g} s") from None
                    if floor is not None:
                        floor.check(got, size)
                except OSError as e:
                    raise StreamBroken(f"connection lost: {e.strerror or e}") from None
            if n == 0:
                raise StreamBroken(f"the sender hung up after {got} of {size} bytes")
            idle = 0.0
            if floor is not None:
                floor.moved(n, got + n, size)
            # Each piece is checksummed and written while it is still in the CPU's cache.
            piece = view[:n]
            if crc:
                crc_value = zlib.crc32(piece, crc_value)
            for mac in inline:
                mac.update(piece)
            sink(piece)
            got += n
            if hasher is not None:
                full.put((k, n))
            else:
                free.put(k)
            if progress is not None:
                progress(got)
    finally:
        if hasher is not None:
            full.put(None)
            hasher.join()
    return crc_value


def answered(sock: socket.socket) -> bool:
    """Whether the receiver has sent something (a refusal) while we were still sending."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


ANSWERED_EARLY = "answered before the end of the stream"

SENDFILE_STEP = 8 * 1024 * 1024


def _sendfile(
    f: IO[bytes],
    size: int,
    sock: socket.socket,
    idle_timeout: float,
    stop: threading.Event,
    sent: list[int],
    i: int,
    floor: Floor | None = None,
) -> str | None:
    """Send ``size`` bytes of ``f`` on ``sock`` with sendfile(2); None, or why not."""
    out, fd = sock.fileno(), f.fileno()
    offset = 0
    idle = 0.0
    while offset < size:
        if stop.is_set():
            return "stopped"
        if answered(sock):
            return ANSWERED_EARLY
        try:
            n = os.sendfile(out, fd, offset, min(SENDFILE_STEP, size - offset))
        except BlockingIOError:  # the socket is non-blocking (trio's): wait for room
            _, writable, _ = select.select([], [sock], [], POLL)
            if not writable:
                idle += POLL
                if idle >= idle_timeout:
                    return f"stopped reading for {idle_timeout:g} s"
            if floor is not None:
                try:
                    floor.check(offset, size)
                except StreamBroken as e:
                    return f"read {e}"
            continue
        except OSError as e:
            return f"connection lost: {e.strerror or e}"
        if n == 0:
            return f"the file shrank to {offset} bytes while it was being sent"
        offset += n
        sent[i] = offset
        idle = 0.0
        if floor is not None:
            try:
                floor.moved(n, offset, size)
            except StreamBroken as e:
                return f"read {e}"
    return None


def send(
    f: IO[bytes],
    size: int,
    socks: Sequence[socket.socket],
    *,
    idle_timeout: float,
    hashers: Sequence[Any] = (),
    check: Callable[[], None] = _never,
    progress: Callable[[int], None] | None = None,
    floor: Callable[[], Floor] | None = None,
    crc: bool = True,
) -> tuple[int, list[str | None]]:
    """Send the first ``size`` bytes of file ``f`` to every socket in ``socks``.

    Returns (their CRC-32, per socket: None if it took them all, else why not).  A
    thread per receiver sends with sendfile(2), which hands the kernel's cached pages
    to the socket without copying them through Python; this thread reads the file
    once alongside, for the CRC-32 and ``hashers``.  (Had the file changed between
    the two reads, the receivers' CRC-32 differs from ours and the transfer fails.)
    A receiver that fails, or answers early (ANSWERED_EARLY: its refusal waits to be
    read), or reads more slowly than a fresh ``floor()``, is dropped and the others
    go on.  OSError from reading ``f``, or ValueError if it shrank, stops everything."""
    errors: list[str | None] = [None] * len(socks)
    sent = [0] * len(socks)
    stop = threading.Event()

    def sender(i: int) -> None:
        limit = floor() if floor is not None else None
        errors[i] = _sendfile(f, size, socks[i], idle_timeout, stop, sent, i, limit)

    def report() -> None:
        if progress is not None:
            progress(min((sent[i] for i in range(len(socks)) if errors[i] is None), default=0))

    threads = [threading.Thread(target=sender, args=(i,), daemon=True) for i in range(len(socks))]
    for t in threads:
        t.start()
    checksum = 0
    done = 0
    buf = bytearray(max(1, min(BUFFER, size)))
    view = memoryview(buf)
    try:
        while done < size:
            check()
            n = os.preadv(f.fileno(), [view[: min(len(buf), size - done)]], done)
            if n == 0:
                raise ValueError(f"the file shrank to {done} bytes while it was being sent")
            piece = view[:n]
            if crc:
                checksum = zlib.crc32(piece, checksum)
            for h in hashers:
                h.update(piece)
            done += n
            report()
        for t in threads:
            while t.is_alive():
                check()
                t.join(POLL)
                report()
    finally:
        stop.set()
        for t in threads:
            t.join()
    return checksum, errors
