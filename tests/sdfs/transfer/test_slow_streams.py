"""A raw stream slower than the floor rate is cut off, its reservation released, and
slow streams wait on the transfer server's own thread limiter, not trio's default."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import trio

from net.messages import ErrorReply, GetStream, PutStream, StreamEnd, StreamStart
from net.rpc import Connection, client_handshake, connect, frame_codec, open_connection
from sdfs.transfer import TransferServer
from sdfs.transfer.rawstream import Floor, StreamBroken
from tests.helpers.transfers import (
    NONCE,
    SECRET,
    node_dirs,
    raw_client,
    tcp_server,
    upload_end,
    write,
)

pytestmark = pytest.mark.timeout(60)


def test_floor_allows_a_short_last_piece() -> None:
    floor = Floor(100, 0.0)
    floor.moved(10, 1000, 1000)  # the last 10 bytes of the stream: fine
    with pytest.raises(StreamBroken, match="slower than 100 bytes"):
        Floor(100, 0.0).moved(10, 10, 1000)


async def test_a_trickled_upload_is_cut_off_and_its_space_released(tmp_path: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2", floor_bytes=1000, floor_window=1.0)
    async with raw_client(server) as conn:
        await conn.send(PutStream("n", 1_000_000, NONCE))
        await trio.sleep(0.2)
        assert server._held == 1_000_000
        start = trio.current_time()
        reply = None
        with trio.fail_after(10):
            try:
                while True:
                    await conn.stream.send_all(b"x")
                    with trio.move_on_after(0.2):
                        reply = await conn.receive()
                        break
            except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
                pass
        assert trio.current_time() - start < 5
    assert reply is None or (isinstance(reply, ErrorReply) and "slower than" in reply.error)
    assert server._held == 0
    assert list(incoming.iterdir()) == []


async def test_a_download_read_too_slowly_is_cut_off(tmp_path: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    write(store / "files" / "big", os.urandom(20_000_000))
    server = TransferServer(incoming, store, node_name="H2", floor_bytes=10**9, floor_window=1.0)
    async with (
        tcp_server(server) as port,
        open_connection(("127.0.0.1", port), frame_codec(SECRET)) as conn,
    ):
        conn.stream.socket.setsockopt(  # type: ignore[attr-defined]
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )
        await conn.send(GetStream(str(store / "files" / "big")))
        assert isinstance(await conn.receive(), StreamStart)
        await trio.sleep(3)  # read nothing: the server's window passes
        got = 0
        with trio.fail_after(10):
            try:
                while chunk := await conn.stream.receive_some(1024 * 1024):
                    got += len(chunk)
            except trio.BrokenResourceError:
                pass
    assert got < 20_000_000
    assert server.downloads == 0 and server.bytes_out == 0


async def test_slow_streams_do_not_take_the_default_thread_limiter(tmp_path: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2", stream_threads=3, peer_threads=2)
    default = trio.to_thread.current_default_thread_limiter()
    async with tcp_server(server) as port, trio.open_nursery() as nursery:
        conns = []
        for i in range(6):
            conn = await nursery.start(_open, port)
            await conn.send(PutStream(f"n{i}", 1_000_000, NONCE))
            conns.append(conn)
        await trio.sleep(0.5)
        assert server.threads.borrowed_tokens == 2  # one peer IP: 2 of the 3
        assert default.borrowed_tokens == 0
        with trio.fail_after(2):  # store work still gets threads at once
            assert await trio.to_thread.run_sync(lambda: 42) == 42
        # Another peer IP still gets the third thread.
        other = await connect_from_other(port)
        await other.send(PutStream("other", 3, NONCE))
        await other.stream.send_all(b"abc")
        end = upload_end(other, b"abc")
        await other.send(end)
        with trio.fail_after(5):
            assert await other.receive() == StreamEnd(3, end.crc32, end.sha256, b"")
        await other.aclose()
        for conn in conns:
            await conn.aclose()
        nursery.cancel_scope.cancel()
    assert server._held == 0
    assert (incoming / "other").read_bytes() == b"abc"


async def connect_from_other(port: int) -> Connection:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.2", 0))
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    session, nonce = await client_handshake(stream, frame_codec(SECRET))
    return Connection(stream, session, ("127.0.0.1", port), nonce)


async def _open(port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    conn = await connect(("127.0.0.1", port), frame_codec(SECRET))
    task_status.started(conn)
    await trio.sleep_forever()
