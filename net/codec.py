"""Authenticated framing: msgpack body + truncated HMAC-SHA256 of the cluster secret.

``seal`` gives ``body || mac``; ``open`` checks size, then the MAC (in constant
time), then decodes.  Anything that fails is reported as a :class:`Rejected` with a
short reason, which callers count instead of raising into the event loop.

A 16-byte (128-bit) tag is the usual truncation for HMAC-SHA256 (RFC 2104 §5
allows half the hash length); it keeps a ping near 30 bytes.

The MAC authenticates origin within the cluster, not freshness: a captured datagram
can be replayed.  Replays are harmless to SWIM (incarnations only move forward), and
the console's commands carry no secrets; a nonce would be the next step if that
changed.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
from typing import Any

from net import messages as _messages  # noqa: F401  (registers every message)
from net.wire import DecodeError, decode, encode

MAC_SIZE = 16


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

    def seal_bytes(self, body: bytes) -> bytes:
        return body + self._mac(body)

    def seal(self, msg: Any) -> bytes:
        data = self.seal_bytes(encode(msg))
        if len(data) > self.max_size:
            raise ValueError(f"{type(msg).__name__} is {len(data)} bytes, over {self.max_size}")
        return data

    def open(self, data: bytes) -> Any:
        """The message in ``data``; raises :class:`Rejected` (and counts it) otherwise."""
        try:
            if len(data) > self.max_size:
                raise Rejected("oversize", f"{len(data)} bytes")
            if len(data) <= MAC_SIZE:
                raise Rejected("short", f"{len(data)} bytes")
            body, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
            if not hmac.compare_digest(mac, self._mac(body)):
                raise Rejected("bad_mac")
            try:
                return decode(body)
            except DecodeError as e:
                raise Rejected("malformed", str(e)) from None
        except Rejected as r:
            self.rejected[r.reason] += 1
            raise
