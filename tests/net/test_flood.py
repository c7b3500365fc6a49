"""RpcServer under connection floods: caps on connections, frame deadlines and the
budget for unauthenticated large frames (real loopback sockets, short constants)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from net import rpc
from net.codec import NONCE_SIZE
from net.messages import ConsoleReply, ConsoleRequest
from net.rpc import HEADER, RpcServer, call, frame_codec, open_connection
from net.transport import Address

pytestmark = pytest.mark.timeout(60)

SECRET = b"flood-secret"


async def echo(request: Any, addr: Address) -> Any:
    return ConsoleReply(True, {"n": len(request.command)})


@asynccontextmanager
async def serving(**caps: Any) -> AsyncIterator[tuple[RpcServer, Address]]:
    server = RpcServer(frame_codec(SECRET), echo, **caps)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        host, port = listeners[0].socket.getsockname()[:2]
        yield server, (host, port)
        nursery.cancel_scope.cancel()


async def connect_from(source: str, addr: Address) -> trio.SocketStream:
    """A TCP connection to ``addr`` from the loopback address ``source``."""
    sock = trio.socket.socket()
    await sock.bind((source, 0))
    await sock.connect(addr)
    return trio.SocketStream(sock)


async def closed_by_server(stream: trio.SocketStream, within: float = 5.0) -> bool:
    with trio.move_on_after(within):
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def test_connections_beyond_the_caps_are_closed_and_counted() -> None:
    async with serving(max_connections=5, max_per_peer=3) as (server, addr):
        held = [await connect_from("127.0.0.2", addr) for _ in range(3)]
        extra = await connect_from("127.0.0.2", addr)
        assert await closed_by_server(extra)
        held += [await connect_from("127.0.0.3", addr) for _ in range(2)]
        extra2 = await connect_from("127.0.0.4", addr)
        assert await closed_by_server(extra2)
        assert server.rejected["max_per_peer"] == 1
        assert server.rejected["max_connections"] == 1
        assert server.open == 5
        for s in (*held, extra, extra2):
            await s.aclose()
        with trio.fail_after(5):
            while server.open:  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert not server.per_peer
        reply = await call(addr, frame_codec(SECRET), ConsoleRequest("ok"))
        assert reply == ConsoleReply(True, {"n": 2})


async def test_a_frame_trickled_a_byte_at_a_time_is_cut_off_at_its_deadline(monkeypatch) -> None:
    monkeypatch.setattr(rpc, "FRAME_DEADLINE", 0.5)
    async with serving() as (server, addr):
        stream = await trio.open_tcp_stream(*addr)
        async with stream:
            start = trio.current_time()
            await stream.send_all(b"n" * NONCE_SIZE + HEADER.pack(100))
            with trio.move_on_after(5):
                try:
                    while True:  # each byte would reset an idle timer
                        await stream.send_all(b"x")
                        await trio.sleep(0.1)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            assert await closed_by_server(stream, 1)
            assert trio.current_time() - start < 3
        assert server.rejected["slow_frame"] == 1


async def test_unauthenticated_large_frames_share_one_budget() -> None:
    async with serving(unverified_bytes=300_000) as (server, addr):
        first = await trio.open_tcp_stream(*addr)
        nonce = b"n" * NONCE_SIZE
        await first.send_all(nonce + HEADER.pack(200_000) + b"\0" * 100_000)  # holds 200 kB
        await trio.sleep(0.2)
        assert server.unverified_free == 100_000
        second = await trio.open_tcp_stream(*addr)
        await second.send_all(nonce + HEADER.pack(200_000) + b"\0" * 1000)
        assert await closed_by_server(second)
        assert server.rejected["unverified_budget"] == 1
        # Small frames need no budget: a caller with the secret is still answered.
        reply = await call(addr, frame_codec(SECRET), ConsoleRequest("ok"))
        assert reply == ConsoleReply(True, {"n": 2})
        await first.aclose()
        await second.aclose()
        with trio.fail_after(5):
            while server.unverified_free != 300_000:  # noqa: ASYNC110
                await trio.sleep(0.01)


async def test_an_authenticated_connection_may_send_large_frames() -> None:
    codec = frame_codec(SECRET)
    async with serving(unverified_bytes=0) as (server, addr):
        big = ConsoleRequest("x" * 200_000)
        async with open_connection(addr, codec) as conn:
            await conn.send(ConsoleRequest("hello"))
            assert await conn.receive() == ConsoleReply(True, {"n": 5})
            await conn.send(big)
            assert await conn.receive() == ConsoleReply(True, {"n": 200_000})
        # The same frame first on a fresh connection: over the (empty) budget.
        with pytest.raises(rpc.RpcError):
            await call(addr, codec, big)
        assert server.rejected["unverified_budget"] == 1


def test_loopback_aliases_are_usable() -> None:
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.close()
