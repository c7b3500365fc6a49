"""Request/response over TCP: length-prefixed, authenticated frames on trio.

A connection opens with a handshake that costs the client no round trip of its own:
the server sends its hello (``HELLO_MAGIC`` and a fresh nonce) as soon as it accepts,
the client puts its own nonce in front of its first frame.  Every frame after that is
a 4-byte big-endian length followed by a message sealed with the connection's
:class:`net.codec.Session` (keyed by both nonces, tagged over direction and sequence
number), so a frame captured on one connection is refused on any other, and on its
own if replayed, reordered or reflected.  A connection carries any number of
request/reply pairs; the server answers each request with exactly one reply, in
order, so a reply's sequence number binds it to its request.

Streaming requests (file uploads and downloads) are conversations rather than
pairs: a request whose type the server lists in ``streams`` is handed, with its
:class:`Connection`, to a stream handler that reads and writes as many frames
as it needs (``Chunk``s) and returns the final reply.

Servers never let a peer hurt them: a frame that is too long, fails its MAC or
does not decode closes that connection and is counted; a peer that goes quiet
mid-frame is cut off after ``IDLE_TIMEOUT``, and every frame must arrive whole within
its deadline (``frame_deadline``) counted from its first byte, so a byte every few
seconds holds nothing for long.  A server holds at most ``max_connections``
connections, ``max_per_peer`` from one IP address; beyond them a new connection is
closed at once and counted in ``RpcServer.rejected``.  Before its first frame has
authenticated, a connection may announce at most ``PREAUTH_FRAME`` bytes freely;
a larger unauthenticated frame must fit in a budget shared by all connections
(``unverified_bytes``) or the connection is closed, so peers without the secret
cannot make the server buffer more than about max_connections * PREAUTH_FRAME +
unverified_bytes.  A handler that raises, or returns a
reply that cannot be sealed (a value msgpack refuses, a frame over ``MAX_FRAME``),
answers an :class:`ErrorReply` instead; anything else that goes wrong with one
connection drops it and is counted in ``RpcServer.errors``.  No request ends the
server.  A caller's request that cannot be sealed is an :class:`RpcError`, like any
other call that gets no usable reply.
"""

from __future__ import annotations

import collections
import logging
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from net.codec import (
    CLIENT,
    HELLO_MAGIC,
    HELLO_SIZE,
    NONCE_SIZE,
    SERVER,
    Codec,
    Rejected,
    Session,
)
from net.errors import one_line
from net.messages import ErrorReply
from net.transport import Address

log = logging.getLogger(__name__)

HEADER = struct.Struct(">I")
# Control messages (membership snapshots, console replies) are small; 16 MiB leaves
# room for a large `ls-all` while refusing absurd lengths before allocating.
MAX_FRAME = 16 * 1024 * 1024
IDLE_TIMEOUT = 30.0
# A control frame is small: 10 s from its first byte to its last is generous even on a
# loaded node, and short enough that a trickling peer cannot hold a connection.
FRAME_DEADLINE = 10.0
# Larger frames get this many bytes per second more (the slowest link we support).
FRAME_MIN_RATE = 1_000_000
# 512 connections in all: the largest cluster (tens of nodes, a few calls each in
# flight) uses a fraction; each costs a task and a descriptor.
MAX_CONNECTIONS = 512
# 128 per peer IP: a node's own fan-out (replication, input fetches: 8 per worker)
# stays below it even on one host, where every node of a local cluster shares
# 127.0.0.1 (nine workers fetching from one holder open 72); one host cannot take
# every slot.
MAX_PER_PEER = 128
# Requests that authenticate are rarely larger than this (a grant, a console line).
PREAUTH_FRAME = 64 * 1024
# Bytes held at once, over all connections, for unauthenticated frames above
# PREAUTH_FRAME: room for a few large legitimate requests, not for a flood.
UNVERIFIED_BYTES = 64 * 1024 * 1024
# A request that does no bulk work (a lookup, a grant, an ack) is answered within this
# long or taken as lost.  Requests that copy or hash a file add time per byte.
RPC_TIMEOUT = 5.0

Handler = Callable[[Any, Address], Awaitable[Any]]
StreamHandler = Callable[[Any, "Connection"], Awaitable[Any]]


class RpcError(Exception):
    """A call that got no usable reply; the message is one line for a person."""


def frame_codec(secret: bytes) -> Codec:
    return Codec(secret, MAX_FRAME)


def frame_deadline(length: int) -> float:
    """Seconds a frame of ``length`` bytes may take from its first byte to its last."""
    return FRAME_DEADLINE + length / FRAME_MIN_RATE


async def _receive_exactly(
    stream: trio.abc.ReceiveStream, n: int, idle: float | None = None
) -> bytes:
    """``n`` bytes; EOFError if the stream ends first, trio.TooSlowError if nothing
    arrives for ``idle`` seconds (when given)."""
    buf = bytearray()
    while len(buf) < n:
        if idle is None:
            chunk = await stream.receive_some(n - len(buf))
        else:
            with trio.fail_after(idle):
                chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


async def read_frame(stream: trio.abc.ReceiveStream, session: Session) -> Any:
    """The peer's next message; EOFError at a clean end, Rejected for a bad frame."""
    header = await _receive_exactly(stream, HEADER.size)
    (length,) = HEADER.unpack(header)
    if length > session.max_size:
        session.rejected["oversize"] += 1
        raise Rejected("oversize", f"frame of {length} bytes")
    body = await _receive_exactly(stream, length)
    return session.open(body)


async def client_handshake(stream: trio.abc.ReceiveStream, codec: Codec) -> tuple[Session, bytes]:
    """Read the server's hello; our session and the nonce to send before our first frame.

    EOFError if the server closes first, Rejected (counted) if what it sent is no hello."""
    hello = await _receive_exactly(stream, HELLO_SIZE)
    if not hello.startswith(HELLO_MAGIC):
        codec.rejected["bad_hello"] += 1
        raise Rejected("bad_hello", "the server did not greet as a cluster node")
    nonce = os.urandom(NONCE_SIZE)
    return codec.session(hello[len(HELLO_MAGIC) :], nonce, CLIENT), nonce


async def greet(stream: trio.abc.Stream, codec: Codec) -> Session:
    """The client's half of the handshake at once (hello read, our nonce sent): for
    callers that write frames on a raw stream themselves."""
    session, nonce = await client_handshake(stream, codec)
    await stream.send_all(nonce)
    return session


def encode(codec: Codec | Session, msg: Any) -> bytes:
    """The body of ``msg``; RpcError if it cannot be sealed (see :func:`seal`)."""
    try:
        return codec.encode(msg)
    except Exception as e:  # TypeError, ValueError, OverflowError, RecursionError, ...
        reason = one_line(f"{type(e).__name__}: {e}", 300)
        raise RpcError(f"cannot send {type(msg).__name__}: {reason}") from None


def seal(codec: Codec | Session, msg: Any) -> bytes:
    """``msg`` sealed; RpcError if it cannot be.

    msgpack refuses some values (an int beyond 64 bits, a set, nesting deeper than
    its limit) with one of several exception types; a sealed message may be over the
    codec's size limit.  Either way nothing is sent and the caller learns why."""
    try:
        return codec.seal(msg)
    except Exception as e:  # TypeError, ValueError, OverflowError, RecursionError, ...
        reason = one_line(f"{type(e).__name__}: {e}", 300)
        raise RpcError(f"cannot send {type(msg).__name__}: {reason}") from None


def seal_frame(session: Session, msg: Any) -> bytes:
    """The frame (header and sealed body) of ``msg``; RpcError if it cannot be sealed."""
    data = seal(session, msg)
    return HEADER.pack(len(data)) + data


async def write_frame(stream: trio.abc.SendStream, session: Session, msg: Any) -> None:
    """Send one sealed message; RpcError (nothing sent) if it cannot be sealed."""
    await stream.send_all(seal_frame(session, msg))


class Connection:
    """Sealed frames both ways over one TCP stream; for streaming conversations.

    ``prefix`` (a client's nonce) goes out in front of the first frame sent."""

    def __init__(
        self, stream: trio.abc.Stream, session: Session, peer: Address, prefix: bytes = b""
    ) -> None:
        self.stream = stream
        self.session = session
        self.peer = peer
        self._prefix = prefix

    async def send(self, msg: Any) -> None:
        frame = seal_frame(self.session, msg)
        prefix, self._prefix = self._prefix, b""
        await self.stream.send_all(prefix + frame)

    async def receive(self, timeout: float = IDLE_TIMEOUT) -> Any:
        """The next message; EOFError at the end, Rejected for a bad frame,
        trio.TooSlowError if nothing arrives within ``timeout`` seconds."""
        with trio.fail_after(timeout):
            return await read_frame(self.stream, self.session)

    async def aclose(self) -> None:
        await self.stream.aclose()


def _check_port(host: str, port: int) -> None:
    """RpcError for a port no connection can go to: getaddrinfo raises OverflowError,
    not OSError, on one past a C long, which no caller expects."""
    if not 0 < port < 65536:
        raise RpcError(f"cannot reach {host}:{port}: port out of range")


async def connect(addr: Address, codec: Codec, timeout: float = 5.0) -> Connection:
    """A connection to ``addr``, handshake read, that the caller closes; RpcError if
    unreachable or if what answers is no cluster node with our secret's protocol."""
    host, port = addr
    _check_port(host, port)
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise RpcError(f"{host}:{port} did not accept a connection within {timeout:g} s") from None
    except (OSError, UnicodeError) as e:  # UnicodeError: a name the resolver cannot encode
        raise RpcError(f"cannot reach {host}:{port}: {_reason(e)}") from None
    try:
        with trio.fail_after(timeout):
            session, nonce = await client_handshake(stream, codec)
    except BaseException as e:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        if isinstance(e, trio.TooSlowError):
            raise RpcError(f"{host}:{port} did not answer within {timeout:g} s") from None
        if isinstance(e, (EOFError, trio.BrokenResourceError, OSError)):
            raise RpcError(f"{host}:{port} closed the connection without answering") from None
        if isinstance(e, Rejected):
            raise RpcError(f"{host}:{port} is not a cluster node ({e.reason})") from None
        raise
    return Connection(stream, session, addr, nonce)


@asynccontextmanager
async def open_connection(
    addr: Address, codec: Codec, timeout: float = 5.0
) -> AsyncIterator[Connection]:
    """A connection to ``addr`` for a streaming conversation; RpcError if unreachable."""
    conn = await connect(addr, codec, timeout)
    async with conn.stream:
        yield conn


class RpcServer:
    """Serves one handler on a TCP port (and a stream handler for streaming requests)."""

    def __init__(
        self,
        codec: Codec,
        handler: Handler,
        stream_handler: StreamHandler | None = None,
        streams: tuple[type[Any], ...] = (),
        max_connections: int = MAX_CONNECTIONS,
        max_per_peer: int = MAX_PER_PEER,
        unverified_bytes: int = UNVERIFIED_BYTES,
    ) -> None:
        self.codec = codec
        self.handler = handler
        self.stream_handler = stream_handler
        self.streams = streams
        self.max_connections = max_connections
        self.max_per_peer = max_per_peer
        self.connections = 0  # accepted, ever
        self.open = 0  # open now
        self.per_peer: collections.Counter[str] = collections.Counter()
        # Connections closed unread ("max_connections", "max_per_peer") and frames
        # refused before their MAC was checked ("unverified_budget", "slow_frame").
        self.rejected: collections.Counter[str] = collections.Counter()
        self.unverified_free = unverified_bytes
        # Connections dropped for a fault of ours rather than the peer's (a reply that
        # could not be sealed even as an error, an unexpected exception), by cause.
        self.errors: collections.Counter[str] = collections.Counter()

    async def serve(
        self,
        host: str,
        port: int,
        *,
        task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners)
        await trio.serve_listeners(self._serve_connection, listeners)

    async def _read_request(
        self, stream: trio.abc.ReceiveStream, session: Session | None, server_nonce: bytes
    ) -> tuple[Any, Session]:
        """The next request and the connection's session (made from the client's nonce,
        which comes before the first frame): EOFError at a clean end (or after
        IDLE_TIMEOUT between requests), trio.TooSlowError if it does not arrive whole
        in time, Rejected for a bad frame or one over the unverified budget."""
        first: bytes | bytearray = b""
        with trio.move_on_after(IDLE_TIMEOUT):
            first = await stream.receive_some(1)
            if not first:
                raise EOFError
        if not first:  # waited IDLE_TIMEOUT between requests: a clean end
            raise EOFError
        start = trio.current_time()
        with trio.CancelScope(deadline=start + FRAME_DEADLINE) as scope:
            if session is None:
                rest = await _receive_exactly(stream, NONCE_SIZE - 1, IDLE_TIMEOUT)
                session = self.codec.session(server_nonce, bytes(first) + rest, SERVER)
                header = await _receive_exactly(stream, HEADER.size, IDLE_TIMEOUT)
            else:
                header = bytes(first) + await _receive_exactly(
                    stream, HEADER.size - 1, IDLE_TIMEOUT
                )
            (length,) = HEADER.unpack(header)
            if length > self.codec.max_size:
                self.codec.rejected["oversize"] += 1
                raise Rejected("oversize", f"frame of {length} bytes")
            held = 0
            if not session.received and length > PREAUTH_FRAME:
                if length > self.unverified_free:
                    self.rejected["unverified_budget"] += 1
                    raise Rejected("unverified_budget", f"unauthenticated frame of {length} bytes")
                held = length
                self.unverified_free -= held
            try:
                scope.deadline = start + frame_deadline(length)
                body = await _receive_exactly(stream, length, IDLE_TIMEOUT)
                return session.open(body), session
            finally:
                self.unverified_free += held
        self.rejected["slow_frame"] += 1
        raise trio.TooSlowError

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            peer = stream.socket.getpeername()
            addr: Address = (peer[0], peer[1])
        except OSError:
            await stream.aclose()
            return
        ip = addr[0]
        if self.open >= self.max_connections or self.per_peer[ip] >= self.max_per_peer:
            cause = "max_connections" if self.open >= self.max_connections else "max_per_peer"
            self.rejected[cause] += 1
            await stream.aclose()
            return
        self.connections += 1
        self.open += 1
        self.per_peer[ip] += 1
        try:
            await self._converse(stream, addr)
        finally:
            self.open -= 1
            self.per_peer[ip] -= 1
            if not self.per_peer[ip]:
                del self.per_peer[ip]

    async def _converse(self, stream: trio.SocketStream, addr: Address) -> None:
        session: Session | None = None
        try:
            async with stream:
                server_nonce = os.urandom(NONCE_SIZE)
                with trio.fail_after(FRAME_DEADLINE):  # 20 bytes: the socket buffer takes them
                    await stream.send_all(HELLO_MAGIC + server_nonce)
                while True:
                    try:
                        request, session = await self._read_request(stream, session, server_nonce)
                    except EOFError:
                        return
                    try:
                        if self.stream_handler is not None and isinstance(request, self.streams):
                            conn = Connection(stream, session, addr)
                            reply = await self.stream_handler(request, conn)
                        else:
                            reply = await self.handler(request, addr)
                    except (Rejected, EOFError, trio.TooSlowError):
                        raise  # the conversation broke; close the connection
                    except Exception as e:  # a handler bug must not kill the server
                        log.exception("handler failed on %s from %s", type(request).__name__, addr)
                        self.errors["handler"] += 1
                        error = f"internal error: {type(e).__name__}: {e}"
                        reply = ErrorReply(one_line(error, 300))
                    await stream.send_all(self._reply_frame(session, request, reply, addr))
        except Rejected as r:
            log.debug("dropped connection from %s: %s", addr, r)
        except (EOFError, trio.TooSlowError):
            log.debug("connection from %s ended mid-conversation", addr)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        except Exception:  # the last line of defence: this connection ends, the server runs
            self.errors["connection"] += 1
            log.exception("dropped connection from %s after an unexpected error", addr)

    def _reply_frame(self, session: Session, request: Any, reply: Any, addr: Address) -> bytes:
        """The sealed ``reply``, or an ErrorReply saying why it could not be sealed."""
        try:
            return seal_frame(session, reply)
        except RpcError as e:
            self.errors["unsealable_reply"] += 1
            log.error("cannot answer %s from %s: %s", type(request).__name__, addr, e)
            return seal_frame(session, ErrorReply(f"internal error: {e}"))


def _reason(e: BaseException) -> str:
    """The operating system's words for a failed connection, on one line.

    trio's ``open_tcp_stream`` raises a bare "all attempts to connect ... failed"
    OSError and keeps each attempt's error (e.g. ECONNREFUSED) in ``__cause__``.
    """
    cause = e.__cause__
    attempts = cause.exceptions if isinstance(cause, BaseExceptionGroup) else (cause,)
    for err in (e, *attempts):
        if isinstance(err, OSError) and err.errno:
            return os.strerror(err.errno)  # "Connection refused", without trio's prefix
        if isinstance(err, OSError) and err.strerror:
            return err.strerror
    return str(e) or type(e).__name__


async def call(addr: Address, codec: Codec, request: Any, timeout: float = RPC_TIMEOUT) -> Any:
    """Send one request to ``addr`` and return its reply.

    Raises :class:`RpcError` when ``request`` cannot be sealed (nothing is sent), the
    peer cannot be reached, does not answer within ``timeout`` seconds, or answers
    with something that does not authenticate.
    An :class:`ErrorReply` is returned as is; callers decide what it means.
    """
    host, port = addr
    body = encode(codec, request)  # RpcError, before connecting, if it cannot be sent
    _check_port(host, port)
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                session, nonce = await client_handshake(stream, codec)
                data = session.seal_bytes(body)
                await stream.send_all(nonce + HEADER.pack(len(data)) + data)
                return await read_frame(stream, session)
    except trio.TooSlowError:
        raise RpcError(f"{host}:{port} did not answer within {timeout:g} s") from None
    except (OSError, UnicodeError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
        # UnicodeError: a host name the resolver cannot encode (IDNA)
        raise RpcError(f"cannot reach {host}:{port}: {_reason(e)}") from None
    except EOFError:
        # Servers close without a word on a frame that fails its MAC.
        raise RpcError(
            f"{host}:{port} closed the connection without answering "
            "(it may be stopping, or use another cluster secret)"
        ) from None
    except Rejected as r:
        raise RpcError(
            f"{host}:{port} sent a reply that was rejected ({r.reason}); "
            "is the cluster secret the same?"
            if r.reason != "bad_hello"
            else f"{host}:{port} is not a cluster node (it did not greet as one)"
        ) from None
