"""sdfs.transfer.tcp: TcpTransfer against real TransferServers on 127.0.0.1 (and
handlers that lie, refuse or hang up), beyond the contract tests in test_base.py."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from net.messages import ErrorReply, GetStream, PutStream, StreamEnd, StreamStart
from net.rpc import Connection, frame_codec
from sdfs.transfer import Peer, TcpTransfer, TransferError, TransferServer
from tests.helpers.transfers import (
    BIG,
    SECRET,
    Recorder,
    leftovers,
    node_dirs,
    sha256,
    tcp_server,
    write,
)

pytestmark = pytest.mark.timeout(60)


async def test_tcp_checksum_mismatch_is_detected(tmp_path: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")

    async def lying(request: Any, conn: Connection) -> Any:
        reply = await server.handle(request, conn)
        if isinstance(reply, StreamEnd):
            return StreamEnd(reply.size, reply.crc32 ^ 1, reply.sha256, reply.tag)
        return reply

    async with tcp_server(server, lying) as port:
        peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
        with pytest.raises(TransferError, match=r"upload to H2 .*checksum mismatch"):
            await TcpTransfer(frame_codec(SECRET)).push(write(tmp_path / "s", b"abc"), peer, "n")
        write(store / "files" / "f", b"abc")
        with pytest.raises(TransferError, match="checksum mismatch"):
            await TcpTransfer(frame_codec(SECRET)).pull(
                peer, str(store / "files" / "f"), tmp_path / "o"
            )
    assert not (tmp_path / "o").exists()


async def test_tcp_wrong_secret_is_a_clear_error(tmp_path: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    async with tcp_server(TransferServer(incoming, store)) as port:
        peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
        write(store / "files" / "f", b"abc")
        with pytest.raises(TransferError, match=r"download of .* from H2 .* failed"):
            await TcpTransfer(frame_codec(b"other")).pull(
                peer, str(store / "files" / "f"), tmp_path / "o"
            )
        with pytest.raises(TransferError, match=r"upload to H2 .* failed"):
            await TcpTransfer(frame_codec(b"other")).push(store / "files" / "f", peer, "n")
    assert list(incoming.iterdir()) == []


# --- one read, several receivers ----------------------------------------------------


async def test_tcp_push_many_reaches_every_healthy_receiver(tmp_path: Path, big_file: Path) -> None:
    """One read of the file feeds every receiver; a refusing one and one that hangs up
    mid-stream fail alone, with their reasons, and the others get a whole copy."""
    servers: list[TransferServer] = []
    for i in range(4):
        incoming, store = node_dirs(tmp_path / f"n{i}")
        free = shutil.disk_usage(incoming).free
        reserve = free - 10_000_000 if i == 1 else 64 * 1024 * 1024  # n1: no room
        servers.append(TransferServer(incoming, store, node_name=f"H{i}", reserve_bytes=reserve))

    async def hang_up_midway(request: Any, conn: Connection) -> Any:
        assert isinstance(request, PutStream)
        await conn.stream.receive_some(1024 * 1024)
        await conn.aclose()
        return ErrorReply("gone")

    async with (
        tcp_server(servers[0]) as p0,
        tcp_server(servers[1]) as p1,
        tcp_server(servers[2], hang_up_midway) as p2,
        tcp_server(servers[3]) as p3,
    ):
        peers = [
            Peer(f"H{i}", "127.0.0.1", port, None, str(s.incoming_dir), str(s.store_dir))
            for i, (port, s) in enumerate(zip([p0, p1, p2, p3], servers, strict=True))
        ]
        progress = Recorder()
        results = await TcpTransfer(frame_codec(SECRET)).push_many(
            big_file, [(p, "v1-x") for p in peers], progress
        )
    digest = sha256(big_file)
    for i in (0, 3):
        result = results[i]
        assert not isinstance(result, TransferError), result
        assert result.size == BIG and result.sha256 == digest and result.crc32 is not None
        arrived = servers[i].incoming_dir / "v1-x"
        assert sha256(arrived) == digest
        noted = servers[i].arrivals.take(arrived)
        assert noted == digest, "a checked arrival is noted for ingest, with its digest"
    assert isinstance(results[1], TransferError)
    assert "not enough disk space on H1" in str(results[1])
    assert isinstance(results[2], TransferError) and "upload to H2" in str(results[2])
    assert [list(s.incoming_dir.iterdir()) for s in servers[1:3]] == [[], []]
    progress.check(BIG, label="big.bin -> H0, H1, H2, H3")


# --- a sender that breaks its word --------------------------------------------------


async def test_tcp_pull_of_a_file_that_changed_size_midway_fails(tmp_path: Path) -> None:
    """The server announces a size; a file cut short under it ends the stream early and
    the client keeps nothing."""
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")

    async def short(request: Any, conn: Connection) -> Any:
        assert isinstance(request, GetStream)
        await conn.send(StreamStart(10))
        await conn.stream.send_all(b"12345")
        await conn.aclose()
        return ErrorReply("cut")

    async with tcp_server(server, short) as port:
        peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
        with pytest.raises(TransferError, match=r"hung up after 5 of 10 bytes"):
            await TcpTransfer(frame_codec(SECRET)).pull(peer, "files/x", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert leftovers(tmp_path) == []
