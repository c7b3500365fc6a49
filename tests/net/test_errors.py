"""Typed errors (net.errors): every kind survives the wire as the same class and message."""

from __future__ import annotations

import pytest

from net import errors
from net.errors import (
    ClusterError,
    Conflict,
    ErrorKind,
    Invalid,
    NoQuorum,
    NotFound,
    NotReady,
    expect,
    from_failure,
    to_failure,
)
from net.messages import ConsoleReply, ErrorReply, Failure, Location
from net.rpc import frame_codec
from net.wire import decode, encode

CLASSES: dict[ErrorKind, type[ClusterError]] = {
    ErrorKind.FAILED: ClusterError,
    ErrorKind.NOT_READY: NotReady,
    ErrorKind.NOT_FOUND: NotFound,
    ErrorKind.INVALID: Invalid,
    ErrorKind.NO_QUORUM: NoQuorum,
    ErrorKind.CONFLICT: Conflict,
}


def test_every_kind_has_exactly_one_class():
    assert set(CLASSES) == set(ErrorKind)
    declared = [
        v
        for v in vars(errors).values()
        if isinstance(v, type) and issubclass(v, ClusterError) and v.__module__ == errors.__name__
    ]
    assert sorted(declared, key=lambda c: c.kind) == list(CLASSES.values())


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.name)
def test_each_kind_round_trips_through_failure_and_the_wire(kind: ErrorKind):
    cls = CLASSES[kind]
    message = f"{kind.name.lower()}: images/ü.jpg on H3"
    failure = to_failure(cls(message))
    assert failure == Failure(int(kind), message)
    for carried in (
        failure,
        decode(encode(failure)),
        frame_codec(b"s").open(frame_codec(b"s").seal(failure)),
    ):
        back = from_failure(carried)
        assert type(back) is cls
        assert str(back) == message
        assert back.kind == kind


def test_a_service_subclass_travels_as_its_kind():
    class NoSuchFile(NotFound):
        pass

    back = from_failure(decode(encode(to_failure(NoSuchFile("no such file: a.jpg")))))
    assert type(back) is NotFound
    assert str(back) == "no such file: a.jpg"


def test_a_kind_from_a_newer_peer_is_a_plain_cluster_error():
    back = from_failure(Failure(99, "something new went wrong"))
    assert type(back) is ClusterError
    assert str(back) == "something new went wrong"


def test_an_error_reply_is_a_plain_cluster_error():
    back = from_failure(ErrorReply("internal error: RuntimeError: boom"))
    assert type(back) is ClusterError
    assert str(back) == "internal error: RuntimeError: boom"


# --- expect -------------------------------------------------------------------------------


def test_expect_returns_the_expected_reply():
    reply = ConsoleReply(True, {})
    assert expect(reply, ConsoleReply, "ls") is reply


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.name)
def test_expect_raises_the_typed_error_a_failure_carries(kind: ErrorKind):
    with pytest.raises(CLASSES[kind]) as caught:
        expect(Failure(int(kind), "why, for a person"), Location, "locate a.jpg")
    assert type(caught.value) is CLASSES[kind]
    assert str(caught.value) == "why, for a person"


def test_expect_raises_a_cluster_error_for_an_error_reply():
    with pytest.raises(ClusterError) as caught:
        expect(ErrorReply("internal error: KeyError: 'x'"), Location, "locate a.jpg")
    assert type(caught.value) is ClusterError
    assert str(caught.value) == "internal error: KeyError: 'x'"


def test_expect_raises_a_cluster_error_for_an_unexpected_reply():
    with pytest.raises(ClusterError) as caught:
        expect(ConsoleReply(True, {}), Location, "locate a.jpg")
    assert type(caught.value) is ClusterError
    assert str(caught.value) == "locate a.jpg: unexpected answer ConsoleReply"


def test_a_failure_carries_one_bounded_line_whatever_the_error_quotes():
    from net.errors import MAX_ERROR_TEXT, Invalid, to_failure

    failure = to_failure(Invalid("unknown model " + repr("x\n" * 100_000)))
    assert "\n" not in failure.error and len(failure.error) == MAX_ERROR_TEXT
    assert failure.error.startswith("unknown model 'x\\nx") and failure.error.endswith("...")
    assert to_failure(Invalid("two\nlines")).error == "two lines"
