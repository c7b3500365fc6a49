"""The message registry and msgpack encoding: round trips, and what decoding refuses."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inference.events  # noqa: F401  (registers the scheduler's events, tags 100-139)
from net import messages
from net.messages import (
    Ack,
    ChainEnd,
    ChainStream,
    ConsoleReply,
    ConsoleRequest,
    Dashboard,
    DashboardRequest,
    ErrorReply,
    Gossip,
    JoinRequest,
    MemberRecord,
    MembershipSnapshot,
    Ping,
    PingReq,
    RelayFile,
    SnapshotRequest,
    Update,
)
from net.wire import DecodeError, _from_plain, decode, encode, message, registered

# --- strategies built from the messages' own annotations ----------------------------------

# Values msgpack carries unchanged (lists stay lists), for Any and dict fields.
_plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def strategy_for(hint: Any) -> st.SearchStrategy[Any]:
    """Every value a field with this annotation may hold (and that wire supports)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return _plain
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy_for(a) for a in typing.get_args(hint)))
    if hint is type(None):
        return st.none()
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(strategy_for(args[0]), max_size=4).map(tuple)
        return st.tuples(*(strategy_for(a) for a in args))
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), _plain, max_size=4)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return record_strategy(hint)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        int: st.integers(-(2**63), 2**64 - 1),
        float: st.floats(allow_nan=False),
        str: st.text(max_size=20),
        bytes: st.binary(max_size=20),
        bool: st.booleans(),
    }
    if hint in simple:
        return simple[hint]
    raise TypeError(f"no strategy for field type {hint!r}: teach tests/net/test_wire.py")


def record_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy_for(hints[f.name]) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


ALL_MESSAGES = sorted(registered().items())


# --- the registry -------------------------------------------------------------------------


def test_protocol_tags_never_change():
    """THE TAG NUMBERS ARE PART OF THE PROTOCOL: these may be appended to, never moved."""
    expected = {
        1: Ping,
        2: Ack,
        3: PingReq,
        4: Gossip,
        20: JoinRequest,
        21: MembershipSnapshot,
        22: SnapshotRequest,
        30: ConsoleRequest,
        31: ConsoleReply,
        40: ErrorReply,
        43: ChainEnd,
        79: ChainStream,
        140: RelayFile,
        160: DashboardRequest,
        161: Dashboard,
    }
    reg = registered()
    for tag, cls in expected.items():
        assert reg[tag] is cls
        assert tag == cls.TAG
    assert 86 not in reg  # LeaderCommand's, retired: never reused


def test_every_registered_message_is_a_frozen_dataclass():
    for _, cls in ALL_MESSAGES:
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen, cls.__name__  # type: ignore[attr-defined]


def test_a_tag_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="tag 1 is already Ping"):

        @message(tag=1)
        @dataclasses.dataclass(frozen=True)
        class Impostor:
            x: int


def test_only_dataclasses_can_be_messages():
    with pytest.raises(TypeError, match="must be a dataclass"):
        message(tag=999)(int)
    assert 999 not in registered()


def test_unregistered_types_are_not_encoded():
    with pytest.raises(TypeError, match="not a registered message"):
        encode(Update(0, "H1", 0))


def test_registered_returns_a_copy():
    registered().clear()
    assert registered()


# --- round trips --------------------------------------------------------------------------


@pytest.mark.parametrize(("tag", "cls"), ALL_MESSAGES, ids=[c.__name__ for _, c in ALL_MESSAGES])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_every_message_type_round_trips(tag, cls, data):
    msg = data.draw(record_strategy(cls))
    assert decode(encode(msg)) == msg


def test_messages_with_nested_records_round_trip():
    ping = Ping(
        7,
        "H1",
        3,
        (Update(0, "H2", 1, "10.0.0.2", 8002), Update(1, "H3", 0, by="H1")),
    )
    back = decode(encode(ping))
    assert back == ping
    assert isinstance(back.updates, tuple) and isinstance(back.updates[0], Update)
    snap = MembershipSnapshot((MemberRecord("H1", "127.0.0.1", 8001, 2, 0),))
    assert decode(encode(snap)) == snap


def test_wire_layout_is_tag_version_then_fields():
    """The layout is protocol too: a golden encoding guards it."""
    ping = Ping(5, "H1", 2, (Update(1, "H3", 0, by="H1"),))
    assert msgpack.unpackb(encode(ping)) == [1, 1, 5, "H1", 2, [[1, "H3", 0, "", 0, "H1"]]]
    assert msgpack.unpackb(encode(SnapshotRequest())) == [22, 1]


def test_an_integer_is_accepted_where_a_float_is_expected():
    # No message has a float field yet; the field check is exercised directly.
    assert _from_plain(3, float, "x") == 3.0
    assert isinstance(_from_plain(3, float, "x"), float)
    with pytest.raises(DecodeError, match="x: expected a number"):
        _from_plain(True, float, "x")


def test_older_versions_are_still_read():
    body = msgpack.packb([40, 0, "old but fine"])
    assert decode(body) == ErrorReply("old but fine")


# --- what decoding refuses ----------------------------------------------------------------


def packed(*items: Any) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not msgpack"),
        (b"\xc1", "not msgpack"),
        (packed(1, 1, 1, "H1", 0, []) + b"\x00", "not msgpack"),  # trailing bytes
        (msgpack.packb({"tag": 1}), "not a [tag, version"),
        (msgpack.packb(1), "not a [tag, version"),
        (packed(1), "not a [tag, version"),
        (packed("1", 1, 1, "H1", 0, []), "tag and version must be integers"),
        (packed(1, 1.0, 1, "H1", 0, []), "tag and version must be integers"),
        (packed(True, 1, 1, "H1", 0, []), "tag and version must be integers"),
        (packed(1, True, 1, "H1", 0, []), "tag and version must be integers"),
        (packed(9999, 1), "unknown message tag 9999"),
        (packed(-1, 1), "unknown message tag -1"),
        (packed(1, 2, 1, "H1", 0, []), "Ping version 2 is newer than ours"),
        (packed(1, 1, 1, "H1", 0), "expected 4 fields for Ping"),
        (packed(1, 1, 1, "H1", 0, [], "extra"), "expected 4 fields for Ping"),
        (packed(1, 1, "1", "H1", 0, []), "Ping.seq: expected an integer"),
        (packed(1, 1, True, "H1", 0, []), "Ping.seq: expected an integer"),
        (packed(1, 1, 1.5, "H1", 0, []), "Ping.seq: expected an integer"),
        (packed(1, 1, 1, b"H1", 0, []), "Ping.sender: expected str"),
        (packed(1, 1, 1, None, 0, []), "Ping.sender: expected str"),
        (packed(1, 1, 1, "H1", 0, "x"), "Ping.updates: expected an array"),
        (packed(1, 1, 1, "H1", 0, [[0, "H2"]]), "expected 6 fields for Update"),
        (packed(1, 1, 1, "H1", 0, [[0, "H2", "0", "", 0, ""]]), "Update.incarnation"),
        (packed(1, 1, 1, "H1", 0, [5]), "expected 6 fields for Update"),
        (packed(31, 1, 1, {}, ""), "ConsoleReply.ok: expected bool"),
        (packed(31, 1, True, [], ""), "ConsoleReply.data: expected a map"),
        (packed(30, 1, "ls", ["a", 2]), "ConsoleRequest.args[1]: expected str"),
        (packed(20, 1, "H1", "h", "8001", 0), "JoinRequest.port: expected an integer"),
    ],
)
def test_malformed_messages_raise_decode_error(data, reason):
    with pytest.raises(DecodeError, match=None) as info:
        decode(data)
    assert reason in str(info.value)


def test_decode_error_is_a_value_error():
    assert issubclass(DecodeError, ValueError)


def test_messages_module_registers_what_it_defines():
    defined = {
        obj
        for obj in vars(messages).values()
        if isinstance(obj, type) and obj.__module__ == messages.__name__ and hasattr(obj, "TAG")
    }
    assert defined <= set(registered().values())
