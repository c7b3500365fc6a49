"""Sealing and opening: the MAC, the size limits, and the counted reasons for a drop."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from net.codec import MAC_SIZE, Codec, Rejected
from net.messages import Ack, ErrorReply, Gossip, Ping, Update
from net.wire import encode, registered

SECRET = b"cluster-secret"


def rejected_reason(codec: Codec, data: bytes) -> str:
    with pytest.raises(Rejected) as info:
        codec.open(data)
    return info.value.reason


def test_seal_then_open_round_trips():
    codec = Codec(SECRET, 1400)
    msg = Ping(1, "H1", 0, (Update(0, "H2", 3, "127.0.0.1", 8002),))
    data = codec.seal(msg)
    assert data[:-MAC_SIZE] == encode(msg)
    assert len(data) == len(encode(msg)) + MAC_SIZE
    assert codec.open(data) == msg
    assert not codec.rejected


def test_a_ping_stays_small():
    # The module promises about 30 bytes for a ping; it must stay far below a datagram.
    assert len(Codec(SECRET, 1400).seal(Ping(123456, "H10", 7))) <= 40


def test_empty_secret_is_refused():
    with pytest.raises(ValueError, match="secret"):
        Codec(b"", 1400)


def test_bad_mac_is_rejected_and_counted():
    codec = Codec(SECRET, 1400)
    data = bytearray(codec.seal(Ack(1, "H2", 0)))
    data[-1] ^= 0x01
    assert rejected_reason(codec, bytes(data)) == "bad_mac"
    body = bytearray(codec.seal(Ack(1, "H2", 0)))
    body[3] ^= 0x40  # a changed body no longer matches its MAC either
    assert rejected_reason(codec, bytes(body)) == "bad_mac"
    assert codec.rejected == {"bad_mac": 2}


def test_other_secret_is_rejected():
    ours, theirs = Codec(SECRET, 1400), Codec(b"another-cluster", 1400)
    assert rejected_reason(ours, theirs.seal(Ping(1, "H1", 0))) == "bad_mac"


def test_truncated_datagrams_are_rejected():
    codec = Codec(SECRET, 1400)
    data = codec.seal(Gossip("H1", (Update(2, "H3", 1, by="H1"),)))
    assert rejected_reason(codec, data[:-1]) == "bad_mac"
    assert rejected_reason(codec, data[: MAC_SIZE + 1]) == "bad_mac"
    assert rejected_reason(codec, data[:MAC_SIZE]) == "short"
    assert rejected_reason(codec, b"") == "short"
    assert codec.rejected == {"bad_mac": 2, "short": 2}


def test_oversize_is_rejected_before_the_mac_is_computed():
    codec = Codec(SECRET, 100)
    big = Codec(SECRET, 10_000).seal(ErrorReply("x" * 200))
    assert rejected_reason(codec, big) == "oversize"
    assert codec.rejected == {"oversize": 1}


def test_sealing_an_oversize_message_raises_value_error():
    codec = Codec(SECRET, 100)
    with pytest.raises(ValueError, match=r"ErrorReply is .* bytes, over 100"):
        codec.seal(ErrorReply("x" * 200))


def test_authentic_garbage_is_malformed():
    codec = Codec(SECRET, 1 << 20)
    bodies = [
        b"\xc1",  # a byte msgpack never uses
        b"\x92\x01",  # an array that ends too soon
        b"\x93\x01\x01\x81\x90\x00",  # a map keyed by an array: unhashable in Python
        b"\xdd\xff\xff\xff\xff",  # an array claiming four billion items
        b"\x91" * 5000,  # nesting deeper than msgpack's limit
        msgpack.packb([9999, 1]),
        msgpack.packb([1, 1, "seq", "H1", 0, []]),
    ]
    for body in bodies:
        assert rejected_reason(codec, codec.seal_bytes(body)) == "malformed", body[:8]
    assert codec.rejected == {"malformed": len(bodies)}


def test_rejected_message_carries_reason_and_detail():
    codec = Codec(SECRET, 1400)
    with pytest.raises(Rejected) as info:
        codec.open(codec.seal_bytes(msgpack.packb([9999, 1])))
    assert info.value.reason == "malformed"
    assert "unknown message tag 9999" in str(info.value)
    assert str(Rejected("bad_mac")) == "bad_mac"


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_random_bytes_only_ever_raise_rejected(data):
    codec = Codec(SECRET, 1400)
    with pytest.raises(Rejected) as info:
        codec.open(data)
    assert info.value.reason in ("oversize", "short", "bad_mac")
    assert sum(codec.rejected.values()) == 1


# Authentic (correctly MAC'd) bodies that are msgpack of arbitrary shape: these reach
# the decoder's field checks, which a forged datagram never does.
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(_scalars, inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    tag=st.sampled_from([*sorted(registered()), 65535, -1]),
    version=st.integers(-2, 3),
    fields=st.lists(_values, max_size=7),
)
def test_authentic_random_messages_only_ever_raise_rejected(tag, version, fields):
    codec = Codec(SECRET, 1 << 20)
    body = msgpack.packb([tag, version, *fields], use_bin_type=True)
    try:
        codec.open(codec.seal_bytes(body))
    except Rejected as r:
        assert r.reason == "malformed"


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=300))
def test_authentic_random_bytes_only_ever_raise_rejected(body):
    codec = Codec(SECRET, 1400)
    try:
        codec.open(codec.seal_bytes(body))
    except Rejected as r:
        assert r.reason == "malformed"
