"""The numbers a membership datagram may carry, checked before the core sees it.

The core trusts what authenticates: a suspicion of this node at incarnation
2**64 - 1 would make it refute at 2**64, which no message can carry any more (msgpack
stops at 64 bits), and a PingReq to port 99999 cannot be sent.  A datagram with a
number out of these ranges is dropped and counted (``rejected["out_of_range"]``) like
one that does not decode.
"""

from __future__ import annotations

from typing import Any

from net.messages import Ack, Gossip, Ping, PingReq, Update

# Incarnations and sequence numbers only grow by one at a time from 0; 2**53 keeps
# them exact in JSON (list_mem) and far from msgpack's 64-bit limit.
MAX_COUNTER = 2**53
MAX_PORT = 65535


def _counter(value: int, what: str) -> str | None:
    return None if 0 <= value <= MAX_COUNTER else f"{what} {value} out of range"


def _update_problem(u: Update) -> str | None:
    # An unknown kind is a newer peer's news: the core counts it stale and goes on.
    if not u.name:
        return "update without a member name"
    if not 0 <= u.port <= MAX_PORT:
        return f"update for {u.name!r}: port {u.port} out of range"
    return _counter(u.incarnation, f"update for {u.name!r}: incarnation")


def datagram_problem(msg: Any) -> str | None:
    """Why ``msg`` (a decoded membership datagram) must be dropped, or None."""
    if isinstance(msg, (Ping, Ack)):
        problem = _counter(msg.seq, "seq") or _counter(msg.incarnation, "incarnation")
        if problem:
            return problem
    if isinstance(msg, PingReq):
        if not msg.host or not 1 <= msg.port <= MAX_PORT:
            return f"ping-req target address {msg.host!r}:{msg.port} is not usable"
        return _counter(msg.seq, "seq")
    for u in getattr(msg, "updates", ()):
        problem = _update_problem(u)
        if problem:
            return problem
    if isinstance(msg, (Ping, Ack, PingReq, Gossip)) and not msg.sender:
        return "no sender"
    return None
