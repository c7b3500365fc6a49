"""The numbers a membership datagram may carry, checked before the core sees it.

The core trusts what authenticates: a suspicion of this node at incarnation
2**64 - 1 would make it refute at 2**64, which no message can carry any more (msgpack
stops at 64 bits), and a PingReq to port 99999 cannot be sent.  A datagram with a
number out of these ranges is dropped and counted (``rejected["out_of_range"]``) like
one that does not decode.
"""

from __future__ import annotations

import re
from typing import Any

from net.messages import Ack, Gossip, Ping, PingReq, Update

# Incarnations and sequence numbers only grow by one at a time from 0; 2**53 keeps
# them exact in JSON (list_mem) and far from msgpack's 64-bit limit.
MAX_COUNTER = 2**53
MAX_PORT = 65535
# A host a member can be reached at: a DNS name (RFC 1123: at most 253 characters of
# letters, digits, '-' and '.') or an IPv4 or IPv6 address (hex, ':', a '%' zone).  A
# name with other characters never resolves; worse, the resolver raises UnicodeError
# (not OSError) on some of them, and every call to the member would fail in a way
# nothing expects.
_HOST = re.compile(r"[A-Za-z0-9.:%_-]{1,253}")


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be a member's address, or None."""
    return None if _HOST.fullmatch(host) else f"host {host[:80]!r} is not a host name or address"


def _counter(value: int, what: str) -> str | None:
    return None if 0 <= value <= MAX_COUNTER else f"{what} {value} out of range"


def _update_problem(u: Update) -> str | None:
    # An unknown kind is a newer peer's news: the core counts it stale and goes on.
    if not u.name:
        return "update without a member name"
    if not 0 <= u.port <= MAX_PORT:
        return f"update for {u.name!r}: port {u.port} out of range"
    if u.host and host_problem(u.host):
        return f"update for {u.name!r}: {host_problem(u.host)}"
    return _counter(u.incarnation, f"update for {u.name!r}: incarnation")


def datagram_problem(msg: Any) -> str | None:
    """Why ``msg`` (a decoded membership datagram) must be dropped, or None."""
    if isinstance(msg, (Ping, Ack)):
        problem = _counter(msg.seq, "seq") or _counter(msg.incarnation, "incarnation")
        if problem:
            return problem
    if isinstance(msg, PingReq):
        if host_problem(msg.host) or not 1 <= msg.port <= MAX_PORT:
            return f"ping-req target address {msg.host[:80]!r}:{msg.port} is not usable"
        return _counter(msg.seq, "seq")
    # Gossip, Ping and Ack carry news as ``updates``; a Merge carries a member's whole
    # live view as ``members`` (found by the fuzzer: a Merge naming a member at port
    # 2**70 was taken in, and the leader's call to it raised OverflowError).
    for u in (*getattr(msg, "updates", ()), *getattr(msg, "members", ())):
        problem = _update_problem(u)
        if problem:
            return problem
    if isinstance(msg, (Ping, Ack, PingReq, Gossip)) and not msg.sender:
        return "no sender"
    return None
