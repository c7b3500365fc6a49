"""Typed failures shared by every part, and how they cross the wire.

A service raises a :class:`ClusterError` subclass that says *what kind* of failure
it is; callers decide by type (retry a :class:`NotReady`, report a
:class:`NotFound`), never by matching the message.  The message is one line for a
person; only the console's command table turns it into console output.

Over RPC a failure travels as :class:`net.messages.Failure` ``(kind, error)``:
:func:`to_failure` builds it from an exception and :func:`from_failure` raises the
same type on the caller's side, so a typed error survives a hop to the leader.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:  # the wire layer (msgpack) is imported only where failures travel
    from net.messages import ErrorReply, Failure

T = TypeVar("T")


class ErrorKind(enum.IntEnum):
    """What a failure means to its caller.  Values are on the wire: append only."""

    FAILED = 0  # anything else: the operation failed and retrying will not help
    NOT_READY = 1  # retry soon: no leader yet, the leader is rebuilding, not a member
    NOT_FOUND = 2  # no such file, job or member
    INVALID = 3  # a bad argument: a name, a number out of range, an unknown model
    NO_QUORUM = 4  # too few replicas or nodes answered to meet the quorum
    CONFLICT = 5  # the request contradicts the current state (already a member, busy)


class ClusterError(Exception):
    """An operation that failed for a reason a person should read (one line)."""

    kind: ClassVar[ErrorKind] = ErrorKind.FAILED


class NotReady(ClusterError):
    kind = ErrorKind.NOT_READY


class NotFound(ClusterError):
    kind = ErrorKind.NOT_FOUND


class Invalid(ClusterError):
    kind = ErrorKind.INVALID


class NoQuorum(ClusterError):
    kind = ErrorKind.NO_QUORUM


class Conflict(ClusterError):
    kind = ErrorKind.CONFLICT


_BY_KIND: dict[int, type[ClusterError]] = {
    int(cls.kind): cls for cls in (ClusterError, NotReady, NotFound, Invalid, NoQuorum, Conflict)
}


def error_kind(value: int) -> ErrorKind:
    """The kind a peer sent; FAILED for a number this version does not know."""
    try:
        return ErrorKind(value)
    except ValueError:
        return ErrorKind.FAILED


def typed_error(kind: int, text: str) -> ClusterError:
    """The ClusterError subclass for ``kind`` (ClusterError itself for FAILED or unknown)."""
    return _BY_KIND.get(kind, ClusterError)(text)


# The longest error text a Failure carries: messages quote what they were sent
# ("unknown model '...'"), and what a peer sent may be megabytes.
MAX_ERROR_TEXT = 1000


def one_line(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text`` on one line of at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def to_failure(error: ClusterError) -> Failure:
    from net.messages import Failure

    return Failure(int(error.kind), one_line(str(error)))


def from_failure(reply: Failure | ErrorReply) -> ClusterError:
    """The typed error a Failure (or a plain ErrorReply) stands for."""
    from net.messages import ErrorReply

    if isinstance(reply, ErrorReply):
        return ClusterError(reply.error)
    return typed_error(reply.kind, reply.error)


def expect(reply: Any, cls: type[T], what: str) -> T:
    """``reply`` if it is a ``cls``; raise the error it carries otherwise.

    ``what`` names the request for a person ("locate images/a.jpg")."""
    from net.messages import ErrorReply, Failure

    if isinstance(reply, cls):
        return reply
    if isinstance(reply, (Failure, ErrorReply)):
        raise from_failure(reply)
    raise ClusterError(f"{what}: unexpected answer {type(reply).__name__}")
