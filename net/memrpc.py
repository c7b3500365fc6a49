"""Request/response in one process: :func:`net.rpc.call` without TCP, for virtual time.

:class:`MemoryRpc` is to :mod:`net.rpc` what :mod:`net.memory` is to UDP.  Each
address serves a handler ``async (request, addr) -> reply``; :meth:`MemoryRpc.call`
(and the callers :meth:`MemoryRpc.caller` binds to a source address) have
``net.rpc.call``'s signature and error behaviour, so ``Peers(..., caller=...)`` and
the services on it run unchanged, dozens of nodes in one test on ``MockClock``.
Nothing here is used by a real node.  It lives beside :mod:`net.memory`, not in it:
that module is datagrams (no replies, no codec), this one is conversations.

What it keeps of TCP, because services depend on it:

* Both codecs see every message: the caller's seals the request and opens the reply,
  the server's opens the request and seals the reply.  A request that cannot be
  sealed is an RpcError in the caller, nothing sent, as from ``net.rpc.call``; a
  server with another secret rejects the request (counted in its codec) and closes
  without answering, so the caller gets RpcError, as on TCP.
* A request once sent is served even if its caller gives up (timeout, cancel): its
  side effects happen and its reply is thrown away.
* A handler that raises answers ``ErrorReply("internal error: ...")`` and is logged,
  as :class:`net.rpc.RpcServer` does; so does a reply that cannot be sealed
  (``internal error: cannot send ...``), counted in ``unsealable_replies``.

Faults, each as the caller would see it on a real network:

* delay: each direction arrives ``delay`` seconds after it left (a link's own delay,
  from :meth:`MemoryRpc.set_delay`, wins), so a call takes 2 x delay plus the
  handler's time.
* :meth:`MemoryRpc.crash`: kill -9.  New calls are refused at once ("Connection
  refused", as a port nobody listens on); handlers in flight are cancelled and
  never answer: their callers see the connection close one delay later, as the
  kernel closes a dead process's sockets.  ``serve`` again is a restart.
* :meth:`MemoryRpc.partition` / :meth:`MemoryRpc.heal`: a black hole.  A message
  that crosses the cut when it arrives is lost, and the caller times out after its
  ``timeout``; that includes calls to a crashed node across the cut.
* ``drop``: each message (request or reply, independently) is lost with this
  probability, drawn from a seeded RNG on arrival, so a run repeats exactly.  A lost
  message times out; a lost reply means the handler ran.

Every fault is checked when a message arrives, so one that starts mid-call catches
the messages still in flight.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import trio

from net.codec import Codec, Rejected
from net.errors import one_line
from net.memory import Partition
from net.messages import ErrorReply
from net.rpc import RPC_TIMEOUT, Handler, RpcError
from net.rpc import seal as rpc_seal
from net.transport import Address

log = logging.getLogger(__name__)

# The source of calls made through MemoryRpc.call: a client outside the cluster (a
# console).  TEST-NET-1, so it is never a member's address.
CLIENT: Address = ("192.0.2.1", 40000)

# What membership.peers.Peers takes as its caller: net.rpc.call's signature.
Caller = Callable[[Address, Codec, Any, float], Awaitable[Any]]

# None stands for "the server closed the connection without answering".
_Outcome = bytes | None


@dataclass(eq=False)
class _Server:
    """One process serving one address; a restart is a new _Server."""

    addr: Address
    codec: Codec
    handler: Handler
    alive: bool = True
    in_flight: set[trio.CancelScope] = field(default_factory=set)


class MemoryRpc:
    """An in-process network of RPC servers; tasks run in ``nursery``."""

    def __init__(
        self,
        nursery: trio.Nursery,
        delay: float = 0.0,
        drop: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"drop must be in [0, 1), got {drop}")
        self._nursery = nursery
        # Seconds each direction takes, unless set_delay gave the link its own.
        self.delay = delay
        self.drop = drop
        self.rng = random.Random(seed)
        self._servers: dict[Address, _Server] = {}
        self._link_delay: dict[frozenset[Address], float] = {}
        self._partition = Partition()
        # Calls that returned a reply (ErrorReply and Failure included).
        self.delivered = 0
        # Calls that raised RpcError, by reason: refused, timeout, closed, rejected.
        self.failures: collections.Counter[str] = collections.Counter()
        # Messages lost to ``drop`` (not to a partition).
        self.dropped = 0
        # Replies that could not be sealed (answered ErrorReply instead).
        self.unsealable_replies = 0
        # Requests that reached each address's handler.
        self.served: collections.Counter[Address] = collections.Counter()

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    # --- servers and faults -------------------------------------------------------------

    def serve(self, addr: Address, codec: Codec, handler: Handler) -> None:
        """Start serving ``handler`` at ``addr``; after a crash, this is the restart."""
        old = self._servers.get(addr)
        if old is not None and old.alive:
            raise OSError(f"address {addr} is in use")
        self._servers[addr] = _Server(addr, codec, handler)

    def crash(self, addr: Address) -> None:
        """kill -9 the server at ``addr`` (see the module docstring)."""
        server = self._servers.get(addr)
        if server is None:
            raise ValueError(f"nothing serves {addr}")
        server.alive = False
        for scope in server.in_flight:
            scope.cancel()

    def serving(self, addr: Address) -> bool:
        server = self._servers.get(addr)
        return server is not None and server.alive

    def partition(self, *groups: Iterable[Address]) -> None:
        """Lose every message between different groups (see :class:`net.memory.Partition`)."""
        self._partition.split(groups)

    def heal(self) -> None:
        self._partition.heal()

    def set_delay(self, a: Address, b: Address, seconds: float | None) -> None:
        """Give the link between ``a`` and ``b`` (both ways) its own delay; None: the
        network's again."""
        if seconds is None:
            self._link_delay.pop(frozenset((a, b)), None)
        else:
            self._link_delay[frozenset((a, b))] = seconds

    def delay_between(self, a: Address, b: Address) -> float:
        return self._link_delay.get(frozenset((a, b)), self.delay)

    # --- calls --------------------------------------------------------------------------

    async def call(
        self, addr: Address, codec: Codec, request: Any, timeout: float = RPC_TIMEOUT
    ) -> Any:
        """``net.rpc.call`` from :data:`CLIENT`, a client outside the cluster."""
        return await self._call(CLIENT, addr, codec, request, timeout)

    def caller(self, src: Address) -> Caller:
        """``net.rpc.call`` from ``src``: what a node at ``src`` hands to Peers.
        Partitions and link delays apply to ``src``; handlers see it as the peer."""

        async def call(
            addr: Address, codec: Codec, request: Any, timeout: float = RPC_TIMEOUT
        ) -> Any:
            return await self._call(src, addr, codec, request, timeout)

        return call

    async def _call(
        self, src: Address, addr: Address, codec: Codec, request: Any, timeout: float
    ) -> Any:
        host, port = addr
        await trio.lowlevel.checkpoint()
        # A request that cannot be sealed is an RpcError here, as from net.rpc.call.
        data = rpc_seal(codec, request)
        server = self._servers.get(addr)
        refused = server is None or not server.alive
        if refused and not self._partition.cut(src, addr):
            self._fail("refused", f"cannot reach {host}:{port}: Connection refused")
        send, receive = trio.open_memory_channel[_Outcome](1)
        if server is not None and not refused:
            self._nursery.start_soon(self._exchange, server, src, data, send)
        else:
            send.close()  # across the cut: nothing will ever answer
        try:
            with receive, trio.fail_after(timeout):
                try:
                    sealed = await receive.receive()
                except trio.EndOfChannel:
                    await trio.sleep_forever()
        except trio.TooSlowError:
            self._fail("timeout", f"{host}:{port} did not answer within {timeout:g} s")
        if sealed is None:
            self._fail(
                "closed",
                f"{host}:{port} closed the connection without answering "
                "(it may be stopping, or use another cluster secret)",
            )
        try:
            reply = codec.open(sealed)
        except Rejected as r:
            self._fail(
                "rejected",
                f"{host}:{port} sent a reply that was rejected ({r.reason}); "
                "is the cluster secret the same?",
            )
        self.delivered += 1
        return reply

    def _fail(self, reason: str, message: str) -> NoReturn:
        self.failures[reason] += 1
        raise RpcError(message)

    def _arrives(self, src: Address, dst: Address) -> bool:
        """Whether a message from ``src`` reaches ``dst`` now (partition, then drop)."""
        if self._partition.cut(src, dst):
            return False
        if self.drop and self.rng.random() < self.drop:
            self.dropped += 1
            return False
        return True

    async def _exchange(
        self,
        server: _Server,
        src: Address,
        data: bytes,
        replies: trio.MemorySendChannel[_Outcome],
    ) -> None:
        """One request on the server's side: it travels, is served, the reply travels."""
        with replies:
            await trio.sleep(self.delay_between(src, server.addr))
            if not self._arrives(src, server.addr):
                return
            outcome = await self._serve(server, src, data)
            await trio.sleep(self.delay_between(server.addr, src))
            if not self._arrives(server.addr, src):
                return
            # BrokenResourceError: the caller gave up before the reply came.
            with contextlib.suppress(trio.BrokenResourceError):
                replies.send_nowait(outcome)

    async def _serve(self, server: _Server, src: Address, data: bytes) -> _Outcome:
        """The sealed reply, or None where the server closes without one."""
        if not server.alive:
            return None  # it died with the request on the way: the connection resets
        try:
            request = server.codec.open(data)
        except Rejected as r:
            log.debug("dropped a request to %s from %s: %s", server.addr, src, r)
            return None
        self.served[server.addr] += 1
        reply: Any = None
        with trio.CancelScope() as scope:
            server.in_flight.add(scope)
            try:
                reply = await server.handler(request, src)
            except (Rejected, EOFError, trio.TooSlowError):
                return None  # as RpcServer: the conversation broke, close the connection
            except Exception as e:  # a handler bug answers, as RpcServer does
                log.exception("handler failed on %s from %s", type(request).__name__, src)
                reply = ErrorReply(one_line(f"internal error: {type(e).__name__}: {e}", 300))
            finally:
                server.in_flight.discard(scope)
        if scope.cancelled_caught or not server.alive:
            return None  # crashed while handling: it never answers
        try:
            return rpc_seal(server.codec, reply)
        except RpcError as e:  # as RpcServer: the caller hears why
            self.unsealable_replies += 1
            log.error("cannot answer %s from %s: %s", type(request).__name__, src, e)
            return server.codec.seal(ErrorReply(f"internal error: {e}"))
