"""sdfs.transfer.server: what TransferServer refuses on its own, whatever the client
checked (frames sent by hand where the client would never send them)."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import pytest

from net.messages import ErrorReply, GetStream, PutStream
from net.rpc import frame_codec
from sdfs.transfer import Peer, TcpTransfer, TransferError, TransferServer
from tests.helpers.transfers import (
    NONCE,
    SECRET,
    make_env,
    node_dirs,
    raw_client,
    tcp_server,
    upload_end,
    write,
)

pytestmark = pytest.mark.timeout(60)


async def test_tcp_server_refuses_bad_names_itself(tmp_path: Path) -> None:
    """The server does not trust the client's check."""
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")
    async with raw_client(server) as conn:
        await conn.send(PutStream("../escape", 4, NONCE))
        reply = await conn.receive()
    assert "refused" in reply.error and "'/'" in reply.error
    assert not (incoming.parent / "escape").exists()


async def test_tcp_receiver_refuses_bytes_that_do_not_match_the_senders_checksum(
    tmp_path: Path,
) -> None:
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")
    async with raw_client(server) as conn:
        await conn.send(PutStream("n", 3, NONCE))
        await conn.stream.send_all(b"abc")
        await conn.send(upload_end(conn, b"abc", meant=b"abd"))  # it meant to send abd
        reply = await conn.receive()
    assert isinstance(reply, ErrorReply) and "arrived damaged" in reply.error
    assert list(incoming.iterdir()) == []
    assert not server.arrivals.take(incoming / "n")


def crc_twin(data: bytes) -> bytes:
    """Other bytes of the same length with the same CRC-32: for equal lengths,
    crc(a ^ d) = crc(a) ^ crc(d) ^ crc(zeros), so a set of bit flips whose
    crc(d) ^ crc(zeros) cancel (33 flips are linearly dependent in 32 bits) keeps it."""
    zeros = zlib.crc32(bytes(len(data)))
    basis: dict[int, tuple[int, int]] = {}  # leading bit -> (crc difference, flips)
    for bit in range(33):
        flip = bytearray(len(data))
        flip[bit // 8] = 1 << (bit % 8)
        value, flips = zlib.crc32(bytes(flip)) ^ zeros, 1 << bit
        while value:
            top = value.bit_length() - 1
            if top not in basis:
                basis[top] = (value, flips)
                break
            value, flips = value ^ basis[top][0], flips ^ basis[top][1]
        else:
            twin = bytearray(data)
            for b in range(33):
                if flips >> b & 1:
                    twin[b // 8] ^= 1 << (b % 8)
            return bytes(twin)
    raise AssertionError("33 vectors in 32 bits are always dependent")


async def test_a_stream_altered_on_the_wire_with_its_crc_kept_is_refused(tmp_path: Path) -> None:
    """Someone who can splice bytes into the connection forges the CRC-32 with ease; the
    SHA-256 in the trailer, sealed with the connection's key, still refuses the bytes, and
    nothing is renamed into place or noted for ingest."""
    genuine = b"the model weights, v1"
    forged = crc_twin(genuine)
    assert forged != genuine and zlib.crc32(forged) == zlib.crc32(genuine)
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")
    async with raw_client(server) as conn:
        await conn.send(PutStream("n", len(genuine), NONCE))
        await conn.stream.send_all(forged)  # the bytes as altered in transit
        await conn.send(upload_end(conn, forged, meant=genuine))
        reply = await conn.receive()
    assert isinstance(reply, ErrorReply) and "arrived damaged" in reply.error
    assert list(incoming.iterdir()) == []
    assert server.arrivals.take(incoming / "n") is None
    assert server.damaged == 1 and server.uploads == 0


async def test_tcp_download_through_a_symlink_out_of_the_store_is_refused(tmp_path: Path) -> None:
    async with make_env("tcp", tmp_path) as env:
        write(env.store.parent / "outside", b"secret")
        (env.store / "files" / "link").symlink_to(env.store.parent / "outside")
        with pytest.raises(TransferError, match=r"H2: refused to send .*not inside the store"):
            await env.transfer.pull(env.peer, str(env.store / "files" / "link"), env.work / "o")
        # A symlink that stays inside the store is fine.
        write(env.store / "files" / "real", b"ok")
        (env.store / "files" / "alias").symlink_to(env.store / "files" / "real")
        await env.transfer.pull(env.peer, str(env.store / "files" / "alias"), env.work / "o")
        assert (env.work / "o").read_bytes() == b"ok"


async def test_tcp_disk_full_is_refused_with_the_reason(tmp_path: Path, big_file: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    free = shutil.disk_usage(incoming).free
    # Leave 10 MB usable: the 50 MB upload must be refused before a byte is written,
    # while the client is already streaming.
    server = TransferServer(incoming, store, node_name="H2", reserve_bytes=free - 10_000_000)
    async with tcp_server(server) as port:
        peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
        with pytest.raises(TransferError, match=r"not enough disk space on H2: need 52.4 MB, have"):
            await TcpTransfer(frame_codec(SECRET)).push(big_file, peer, "n")
        # A small file still fits.
        await TcpTransfer(frame_codec(SECRET)).push(write(tmp_path / "s", b"tiny"), peer, "m")
    assert sorted(p.name for p in incoming.iterdir()) == ["m"]
    assert server.refused == 1 and server.uploads == 1


@pytest.mark.parametrize(
    "request_",
    [
        PutStream(
            "x/" * 4_000_000, 1, NONCE
        ),  # a 8 MB name: its repr alone is over the frame limit
        PutStream("\x00" * 3_000_000, 1, NONCE),  # each NUL is 4 characters in a repr
        PutStream("n", -1, NONCE),
        PutStream("n", 3, b"short"),
        GetStream("\x00" * 3_000_000),
        GetStream("../" * 1_000_000 + "etc/passwd"),
        GetStream("files/" + "a" * 5000),
    ],
    ids=[
        "huge-name",
        "nul-name",
        "negative-size",
        "short-nonce",
        "nul-path",
        "huge-path",
        "long-part",
    ],
)
async def test_tcp_server_refuses_hostile_requests_with_one_short_line(
    tmp_path: Path, request_: object
) -> None:
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2", linger=0.1)
    async with raw_client(server) as conn:
        await conn.send(request_)
        reply = await conn.receive()
    assert isinstance(reply, ErrorReply) and reply.error.startswith("H2: ")
    assert any(w in reply.error for w in ("refused", "no such file", "cannot read")), reply
    assert "\n" not in reply.error and len(reply.error) <= 1000
    assert list(incoming.iterdir()) == []
