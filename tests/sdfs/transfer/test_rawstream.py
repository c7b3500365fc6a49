"""sdfs.transfer.rawstream: the pumps on their own, over a socket pair (test_tcp.py runs
them inside real conversations)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import zlib
from pathlib import Path

import pytest

from sdfs.transfer import rawstream

pytestmark = pytest.mark.timeout(60)


def test_send_and_receive_agree_on_the_bytes_the_crc_and_the_hash(tmp_path: Path) -> None:
    data = os.urandom(3 * rawstream.BUFFER + 123)  # several buffers and a short last one
    src = tmp_path / "f"
    src.write_bytes(data)
    got = bytearray()
    received = hashlib.sha256()
    crcs: list[int] = []
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(rawstream.POLL)
        b.settimeout(rawstream.POLL)

        def receive() -> None:
            crcs.append(
                rawstream.receive(b, len(data), got.extend, idle_timeout=5, hashers=[received])
            )

        receiver = threading.Thread(target=receive)
        receiver.start()
        sent = hashlib.sha256()
        with src.open("rb") as f:
            crc, errors = rawstream.send(f, len(data), [a], idle_timeout=5, hashers=[sent])
        receiver.join(10)
    assert errors == [None]
    assert bytes(got) == data
    assert crcs == [crc] and crc == zlib.crc32(data)
    assert received.hexdigest() == sent.hexdigest() == hashlib.sha256(data).hexdigest()


def test_a_sender_that_hangs_up_early_breaks_the_stream() -> None:
    a, b = socket.socketpair()
    with b:
        b.settimeout(rawstream.POLL)
        with a:
            a.sendall(b"12345")
        with pytest.raises(rawstream.StreamBroken, match="hung up after 5 of 10 bytes"):
            rawstream.receive(b, 10, lambda piece: None, idle_timeout=5)
