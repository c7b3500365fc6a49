"""Authenticated framing: msgpack bodies under truncated HMAC-SHA256 tags.

Three sealers share one cluster secret and one set of ``rejected`` counters:

* :class:`Codec` seals ``body || HMAC(secret, body)[:16]``.  It authenticates origin
  only, so it is used where nothing travels on a wire: the in-process RPC of the
  virtual-time tests (net.memrpc).  Its ``open`` is the common checker.
* :class:`Session` seals the frames of one TCP connection (net.rpc).  Each side sends
  a fresh 16-byte nonce when the connection opens (the server at once, the client in
  front of its first frame: no extra round trip for the client to wait on beyond the
  server's hello), and every frame is tagged with the connection key
  ``K = HMAC(secret, "idunno-conn" || server_nonce || client_nonce)`` over
  ``direction || sequence number || body``.  A frame recorded on one connection fails
  on any other (another key), a frame replayed, dropped or reordered on its own
  connection fails (another sequence number), and a frame reflected back to its sender
  fails (another direction).  Requests and replies alternate on a connection, so a
  reply is bound to its request by its sequence number: a captured ``StoreAck(True)``
  cannot answer another ``Commit``.  No clock is needed.
* :class:`DatagramCodec` seals membership datagrams, which have no connection: the
  sealed body starts with the sender's boot id (random per process), a per-process
  counter, the send time (wall clock, ms) and the destination port.  A receiver drops
  a datagram sent more than ``window`` seconds ago or ahead (hosts run NTP: LAN clocks
  agree to well under a second; the default window is 30 s), one addressed to another
  port, and one whose counter it has already seen from that boot id (a sliding window
  of 1,024 counters per boot id, as IPsec's anti-replay window, RFC 4303 §3.4.3), and
  one sent more than ``BOOT_SLACK`` (2 s) before the receiving process started (it was
  meant for an earlier process at that address, whose window died with it).  Two
  replays are not caught: one to another host on the same port within the window, and
  one captured on its way to a process that ended, replayed to its successor within
  BOOT_SLACK of its start.  Either carries what a member said at most ``window``
  seconds earlier, and SWIM's order (incarnations only move forward, tombstones outlive
  the window: ``tombstone_time`` >= 60 s) makes such news stale wherever newer news has
  arrived (membership/core.py, invariants 1-3); tests/membership/test_replays.py
  replays whole captures and checks that no member comes back or goes.

A 16-byte (128-bit) tag is the usual truncation for HMAC-SHA256 (RFC 2104 §5 allows
half the hash length); it keeps a ping near 60 bytes.  Anything that fails is reported
as a :class:`Rejected` with a short reason, which callers count instead of raising
into the event loop.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from net import messages as _messages  # noqa: F401  (registers every message)
from net.wire import DecodeError, decode, encode

MAC_SIZE = 16
NONCE_SIZE = 16
# The server's hello: this magic, then its nonce.  The magic names the protocol so a
# client that reaches something else fails with a clear reason, not a MAC error.
HELLO_MAGIC = b"idn1"
HELLO_SIZE = len(HELLO_MAGIC) + NONCE_SIZE
CLIENT, SERVER = b"C", b"S"
_SEQ = struct.Struct(">Q")


class Rejected(Exception):
    """Incoming bytes that were dropped; ``reason`` is a counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class Codec:
    """Seals and opens messages with one cluster secret; counts what it rejects."""

    def __init__(self, secret: bytes, max_size: int) -> None:
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        self._secret = secret
        self.max_size = max_size
        self.rejected: collections.Counter[str] = collections.Counter()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._secret, body, hashlib.sha256).digest()[:MAC_SIZE]

    def encode(self, msg: Any) -> bytes:
        """``msg``'s body; ValueError if its sealed form would be over ``max_size``."""
        body = encode(msg)
        if len(body) + MAC_SIZE > self.max_size:
            size = len(body) + MAC_SIZE
            raise ValueError(f"{type(msg).__name__} is {size} bytes, over {self.max_size}")
        return body

    def seal_bytes(self, body: bytes) -> bytes:
        return body + self._mac(body)

    def seal(self, msg: Any) -> bytes:
        return self.seal_bytes(self.encode(msg))

    def _split(self, data: bytes) -> tuple[bytes, bytes]:
        if len(data) > self.max_size:
            raise Rejected("oversize", f"{len(data)} bytes")
        if len(data) <= MAC_SIZE:
            raise Rejected("short", f"{len(data)} bytes")
        return data[:-MAC_SIZE], data[-MAC_SIZE:]

    def _decode(self, body: bytes) -> Any:
        try:
            return decode(body)
        except DecodeError as e:
            raise Rejected("malformed", str(e)) from None

    def _counted(self, check: Callable[[], Any]) -> Any:
        try:
            return check()
        except Rejected as r:
            self.rejected[r.reason] += 1
            raise

    def open(self, data: bytes) -> Any:
        """The message in ``data``; raises :class:`Rejected` (and counts it) otherwise."""

        def check() -> Any:
            body, mac = self._split(data)
            if not hmac.compare_digest(mac, self._mac(body)):
                raise Rejected("bad_mac")
            return self._decode(body)

        return self._counted(check)

    def upload_key(self, nonce: bytes) -> bytes:
        """The one-time Poly1305 key (32 bytes) of an upload's raw bytes:
        HMAC-SHA256(secret, "idunno-upload" || nonce).

        The sender picks a fresh random ``nonce`` per upload and sends it in the upload's
        sealed header; one upload to several replicas uses one nonce, so the sender
        computes one tag for all of them (a tag per connection cost a 500 MB put to 4
        replicas a tenth of its time).  A one-time key authenticates one message: every
        replica is sent the same bytes, so there is one valid (bytes, tag) pair; bytes
        that differ (a file changed mid-send) fail the tag and are refused."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"an upload nonce is {NONCE_SIZE} bytes")
        return hmac.new(self._secret, b"idunno-upload" + nonce, hashlib.sha256).digest()

    def session(self, server_nonce: bytes, client_nonce: bytes, side: bytes) -> Session:
        """The frame sealer of one connection, for ``side`` (CLIENT or SERVER)."""
        return Session(self, self._secret, server_nonce, client_nonce, side)


def connection_key(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """K = HMAC-SHA256(secret, "idunno-conn" || server_nonce || client_nonce)."""
    material = b"idunno-conn" + server_nonce + client_nonce
    return hmac.new(secret, material, hashlib.sha256).digest()


class Session:
    """Seals and opens the frames of one connection: keyed by both nonces, each frame
    tagged over (direction, sequence number, body); see the module docstring."""

    def __init__(
        self, codec: Codec, secret: bytes, server_nonce: bytes, client_nonce: bytes, side: bytes
    ) -> None:
        if len(server_nonce) != NONCE_SIZE or len(client_nonce) != NONCE_SIZE:
            raise ValueError(f"nonces must be {NONCE_SIZE} bytes")
        if side not in (CLIENT, SERVER):
            raise ValueError(f"side must be {CLIENT!r} or {SERVER!r}")
        self.codec = codec
        self.max_size = codec.max_size
        self.rejected = codec.rejected
        self.key = connection_key(secret, server_nonce, client_nonce)
        self._out = side
        self._in = SERVER if side == CLIENT else CLIENT
        self.sent = 0  # frames sealed so far: the next one's sequence number
        self.received = 0  # frames opened so far

    def _tag(self, direction: bytes, seq: int, body: bytes) -> bytes:
        mac = hmac.new(self.key, direction + _SEQ.pack(seq), hashlib.sha256)
        mac.update(body)
        return mac.digest()[:MAC_SIZE]

    def encode(self, msg: Any) -> bytes:
        return self.codec.encode(msg)

    def stream_key(self, *, sending: bool) -> bytes:
        """The one-time key (32 bytes, for Poly1305) of the raw bytes that follow the last
        frame this side sent (``sending``) or received: both sides derive the same key
        from the connection key, the frame's direction and its sequence number, so
        every raw stream has its own."""
        direction, seq = (self._out, self.sent - 1) if sending else (self._in, self.received - 1)
        if seq < 0:
            raise ValueError("a raw stream follows a frame")
        material = b"idunno-stream" + direction + _SEQ.pack(seq)
        return hmac.new(self.key, material, hashlib.sha256).digest()

    def seal_bytes(self, body: bytes) -> bytes:
        """``body`` sealed as this side's next frame."""
        if len(body) + MAC_SIZE > self.max_size:
            raise ValueError(f"a frame of {len(body) + MAC_SIZE} bytes is over {self.max_size}")
        data = body + self._tag(self._out, self.sent, body)
        self.sent += 1
        return data

    def seal(self, msg: Any) -> bytes:
        return self.seal_bytes(self.codec.encode(msg))

    def open(self, data: bytes) -> Any:
        """The peer's next frame; :class:`Rejected` (counted) if it is not exactly that."""

        def check() -> Any:
            body, mac = self.codec._split(data)
            if not hmac.compare_digest(mac, self._tag(self._in, self.received, body)):
                raise Rejected("bad_mac")
            self.received += 1
            return self.codec._decode(body)

        return self.codec._counted(check)


# --- datagrams --------------------------------------------------------------------

# boot id (8 bytes), counter, send time in ms, destination port
_DATAGRAM = struct.Struct(">8sQQH")
DATAGRAM_OVERHEAD = _DATAGRAM.size + MAC_SIZE
REPLAY_WINDOW = 1024  # counters remembered below the highest seen, per boot id
DATAGRAM_WINDOW = 30.0  # seconds a datagram stays acceptable (hosts run NTP)
# A datagram sent this long before the receiving process started was meant for an
# earlier process at that address: refused (the new process has no window for it yet).
BOOT_SLACK = 2.0
MAX_SENDERS = 4096


class ReplayWindow:
    """The counters seen from one sender: the highest, and a bitmap of the
    ``REPLAY_WINDOW`` below it (bit k: ``top - k`` was seen)."""

    __slots__ = ("bits", "seen_at", "top")

    def __init__(self) -> None:
        self.top = -1
        self.bits = 0
        self.seen_at = 0.0

    def accept(self, n: int) -> str | None:
        """Mark ``n`` seen; None, or why it is refused ("replayed", "too_old")."""
        if n > self.top:
            shift = n - self.top
            self.bits = ((self.bits << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.top = n
            return None
        offset = self.top - n
        if offset >= REPLAY_WINDOW:
            return "too_old"
        if (self.bits >> offset) & 1:
            return "replayed"
        self.bits |= 1 << offset
        return None


class DatagramCodec(Codec):
    """Seals datagrams with (boot id, counter, time, destination port) inside the MAC and
    refuses stale, misaddressed and replayed ones; see the module docstring."""

    def __init__(
        self,
        secret: bytes,
        max_size: int,
        *,
        window: float = DATAGRAM_WINDOW,
        clock: Callable[[], float] = time.time,
        boot_id: bytes | None = None,
        max_senders: int = MAX_SENDERS,
    ) -> None:
        super().__init__(secret, max_size)
        self.window = window
        self.clock = clock
        self.boot_id = boot_id if boot_id is not None else os.urandom(8)
        if len(self.boot_id) != 8:
            raise ValueError("a boot id is 8 bytes")
        self.max_senders = max_senders
        self.started = clock()
        self._counter = 0
        # boot id -> its window, least recently heard first
        self._senders: collections.OrderedDict[bytes, ReplayWindow] = collections.OrderedDict()

    @property
    def senders(self) -> int:
        return len(self._senders)

    def seal(self, msg: Any, to_port: int = 0) -> bytes:
        """``msg`` for the member listening on ``to_port``."""
        body = encode(msg)
        size = _DATAGRAM.size + len(body) + MAC_SIZE
        if size > self.max_size:
            raise ValueError(f"{type(msg).__name__} is {size} bytes, over {self.max_size}")
        return self.seal_body(body, to_port)

    def seal_body(self, body: bytes, to_port: int = 0) -> bytes:
        """``body`` (msgpack) behind this sender's next freshness header, sealed."""
        millis = int(self.clock() * 1000)
        # A port beyond 16 bits reaches no one: the transport refuses the send.
        header = _DATAGRAM.pack(self.boot_id, self._counter, millis, to_port & 0xFFFF)
        self._counter += 1
        return self.seal_bytes(header + body)

    def open(self, data: bytes, at_port: int = 0) -> Any:
        """The message in a datagram that arrived at ``at_port`` (0: any port)."""

        def check() -> Any:
            body, mac = self._split(data)
            if not hmac.compare_digest(mac, self._mac(body)):
                raise Rejected("bad_mac")
            if len(body) < _DATAGRAM.size:
                raise Rejected("short", f"{len(data)} bytes")
            boot, counter, millis, port = _DATAGRAM.unpack_from(body)
            now = self.clock()
            age = now - millis / 1000
            if abs(age) > self.window:
                raise Rejected("stale", f"sent {age:.1f} s from now")
            if millis / 1000 < self.started - BOOT_SLACK:
                raise Rejected("before_boot", f"sent {self.started - millis / 1000:.1f} s before")
            if at_port and port != at_port:
                raise Rejected("misaddressed", f"for port {port}")
            seen = self._window_of(boot, now)
            problem = seen.accept(counter)
            if problem is not None:
                raise Rejected(problem, f"counter {counter}")
            seen.seen_at = now
            return self._decode(body[_DATAGRAM.size :])

        return self._counted(check)

    def _window_of(self, boot: bytes, now: float) -> ReplayWindow:
        seen = self._senders.get(boot)
        if seen is not None:
            self._senders.move_to_end(boot)
            return seen
        # Only datagrams that carry a valid MAC get here.  A sender not heard from for
        # `window` seconds can be forgotten safely: all it ever sent is stale by now.
        while self._senders and len(self._senders) >= self.max_senders:
            oldest = next(iter(self._senders.values()))
            if oldest.seen_at >= now - self.window:
                self.rejected["sender_evicted"] += 1  # only past max_senders live boots
            self._senders.popitem(last=False)
        seen = self._senders[boot] = ReplayWindow()
        return seen
