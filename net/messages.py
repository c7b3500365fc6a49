"""Every message the cluster sends, with its protocol tag.

THE TAG NUMBERS ARE PART OF THE PROTOCOL.  Append new messages with new numbers;
never renumber or reuse one.  Change a message's fields only by giving it a higher
``version`` in :func:`net.wire.message` and keeping old readers in mind.

Tags 1-19: membership datagrams (UDP).  20-29: admission (TCP, introducer).
30-39: console (TCP).  40-49: generic replies and streams.  50-89: SDFS (TCP).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from net.wire import message


class Status(enum.IntEnum):
    """A member's state as one node sees it.  Order matters nowhere; values do."""

    ALIVE = 0
    SUSPECT = 1
    FAILED = 2
    LEFT = 3

    @property
    def label(self) -> str:
        return self.name.lower()


class UpdateKind(enum.IntEnum):
    ALIVE = 0  # the member is up at this incarnation (join, or refutation)
    SUSPECT = 1  # `by` got no ack from it within the ping timeout
    FAILED = 2  # nobody heard a refutation within the cleanup time
    LEFT = 3  # the member left on purpose


@dataclass(frozen=True)
class Update:
    """One piece of membership news, gossiped on pings, acks and gossip pushes.

    ``host`` and ``port`` are only meaningful for ALIVE (so an unknown member can be
    added); other kinds send "" and 0 to stay small.
    """

    kind: int
    name: str
    incarnation: int
    host: str = ""
    port: int = 0
    by: str = ""


@dataclass(frozen=True)
class MemberRecord:
    """A member's entry in a membership snapshot."""

    name: str
    host: str
    port: int
    incarnation: int
    status: int


# --- membership datagrams ---------------------------------------------------------


@message(tag=1)
@dataclass(frozen=True)
class Ping:
    """Are you there?  ``incarnation`` is the sender's own, so a receiver that had
    declared the sender failed can tell it so."""

    seq: int
    sender: str
    incarnation: int
    updates: tuple[Update, ...] = ()


@message(tag=2)
@dataclass(frozen=True)
class Ack:
    """Answer to a Ping.  ``sender`` is the member that answered, also when a relay
    forwards the ack of an indirect probe."""

    seq: int
    sender: str
    incarnation: int
    updates: tuple[Update, ...] = ()


@message(tag=3)
@dataclass(frozen=True)
class PingReq:
    """Please ping ``target`` for me and forward its ack with my ``seq``."""

    seq: int
    sender: str
    target: str
    host: str
    port: int


@message(tag=4)
@dataclass(frozen=True)
class Gossip:
    """A push of queued updates to a random member, between pings."""

    sender: str
    updates: tuple[Update, ...]


# --- admission (TCP) ----------------------------------------------------------------


@message(tag=20)
@dataclass(frozen=True)
class JoinRequest:
    """A node asks the introducer to be admitted."""

    name: str
    host: str
    port: int
    incarnation: int


@message(tag=21)
@dataclass(frozen=True)
class MembershipSnapshot:
    """The membership as one member (or the introducer) knows it, tombstones included."""

    members: tuple[MemberRecord, ...]


@message(tag=22)
@dataclass(frozen=True)
class SnapshotRequest:
    """The introducer asks a member for its view."""


# --- console (TCP) --------------------------------------------------------------------


@message(tag=30)
@dataclass(frozen=True)
class ConsoleRequest:
    command: str
    args: tuple[str, ...] = ()


@message(tag=31)
@dataclass(frozen=True)
class ConsoleReply:
    ok: bool
    data: dict[str, Any]
    error: str = ""


# --- generic ---------------------------------------------------------------------------


@message(tag=40)
@dataclass(frozen=True)
class ErrorReply:
    """A request that could not be served; ``error`` is one line for a person."""

    error: str


@message(tag=41)
@dataclass(frozen=True)
class Chunk:
    """A piece of a streamed file.  An empty chunk ends the stream."""

    data: bytes


# --- SDFS: moving file contents between nodes (transfer = "tcp") ----------------------


@message(tag=50)
@dataclass(frozen=True)
class Upload:
    """Start of a stream into the receiver's incoming directory, file ``name`` there.

    Chunks follow, then an empty chunk; the receiver answers :class:`TransferDone`.
    """

    name: str
    size: int


@message(tag=51)
@dataclass(frozen=True)
class Download:
    """Send me the stored file at ``path`` (inside your store) as chunks, then an empty one."""

    path: str


@message(tag=52)
@dataclass(frozen=True)
class TransferDone:
    """End of a stream: what arrived, for the sender to compare."""

    size: int
    sha256: str
