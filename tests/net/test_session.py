"""Freshness, pure: connection sessions (keys, directions, sequence numbers) and the
datagram codec's window (time, destination port, replayed counters, bounded senders)."""

from __future__ import annotations

import pytest

from net.codec import (
    CLIENT,
    DATAGRAM_OVERHEAD,
    MAC_SIZE,
    NONCE_SIZE,
    REPLAY_WINDOW,
    SERVER,
    Codec,
    DatagramCodec,
    Rejected,
    ReplayWindow,
    connection_key,
)
from net.messages import Ack, ConsoleRequest, Gossip, Ping, StoreAck, Update
from net.rpc import frame_codec

SECRET = b"session-secret"
SN, CN = b"s" * NONCE_SIZE, b"c" * NONCE_SIZE


def pair(server_nonce: bytes = SN, client_nonce: bytes = CN, secret: bytes = SECRET):
    codec = frame_codec(secret)
    return (
        codec.session(server_nonce, client_nonce, CLIENT),
        codec.session(server_nonce, client_nonce, SERVER),
    )


def reason(opener, data: bytes) -> str:
    with pytest.raises(Rejected) as info:
        opener(data)
    return info.value.reason


def test_frames_go_both_ways_in_order() -> None:
    client, server = pair()
    for i in range(3):
        assert server.open(client.seal(ConsoleRequest(f"c{i}"))) == ConsoleRequest(f"c{i}")
        assert client.open(server.seal(StoreAck(True))) == StoreAck(True)
    assert (client.sent, client.received, server.sent, server.received) == (3, 3, 3, 3)


def test_the_key_depends_on_both_nonces_and_the_secret() -> None:
    base = connection_key(SECRET, SN, CN)
    assert base != connection_key(SECRET, b"t" * NONCE_SIZE, CN)
    assert base != connection_key(SECRET, SN, b"d" * NONCE_SIZE)
    assert base != connection_key(b"other", SN, CN)


def test_a_frame_from_another_connection_is_refused() -> None:
    """A request captured on one connection, replayed at the start of another."""
    old_client, _ = pair()
    _, new_server = pair(server_nonce=b"n" * NONCE_SIZE)  # the server's fresh nonce
    captured = old_client.seal(ConsoleRequest("delete", ("f",)))
    assert reason(new_server.open, captured) == "bad_mac"
    assert new_server.received == 0 and new_server.rejected["bad_mac"] == 1


def test_a_reply_from_another_connection_cannot_answer_a_request() -> None:
    """A StoreAck(True) recorded on one connection, sent as the answer on another: the
    client's own nonce makes the new connection's key differ even if the server's
    hello is replayed too."""
    _, old_server = pair()
    captured = old_server.seal(StoreAck(True))
    new_client, _ = pair(client_nonce=b"x" * NONCE_SIZE)  # hello replayed, fresh client nonce
    new_client.seal(ConsoleRequest("commit"))
    assert reason(new_client.open, captured) == "bad_mac"


def test_replayed_reordered_or_reflected_frames_are_refused() -> None:
    client, server = pair()
    first = client.seal(ConsoleRequest("a"))
    second = client.seal(ConsoleRequest("b"))
    assert reason(server.open, second) == "bad_mac"  # out of order
    assert server.open(first) == ConsoleRequest("a")
    assert reason(server.open, first) == "bad_mac"  # replayed on its own connection
    assert server.open(second) == ConsoleRequest("b")
    # Reflected: the client's own frame sent back to it as if from the server.
    fresh_client, _ = pair()
    own = fresh_client.seal(ConsoleRequest("x"))
    assert reason(fresh_client.open, own) == "bad_mac"


def test_a_reply_is_bound_to_its_request_by_sequence() -> None:
    """Two replies on one connection cannot be swapped: the first answers request 0."""
    client, server = pair()
    client.seal(ConsoleRequest("ingest"))
    client.seal(ConsoleRequest("commit"))
    server.received = 2  # it read both
    refusal, ack = server.seal(StoreAck(False, "no")), server.seal(StoreAck(True))
    assert reason(client.open, ack) == "bad_mac"
    assert client.open(refusal) == StoreAck(False, "no")


def test_a_failed_seal_does_not_use_a_sequence_number() -> None:
    client, server = pair()
    small = Codec(SECRET, 64).session(SN, CN, CLIENT)
    with pytest.raises(ValueError, match="over 64"):
        small.seal(ConsoleRequest("x" * 100))
    assert small.sent == 0
    assert server.open(client.seal(ConsoleRequest("y"))) == ConsoleRequest("y")


def test_bad_nonces_and_sides_are_refused() -> None:
    with pytest.raises(ValueError):
        frame_codec(SECRET).session(b"short", CN, CLIENT)
    with pytest.raises(ValueError):
        frame_codec(SECRET).session(SN, CN, b"X")


# --- datagrams -----------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def datagram_pair(clock: Clock, **kw):
    sender = DatagramCodec(SECRET, 1400, clock=clock, boot_id=b"sender-1", **kw)
    receiver = DatagramCodec(SECRET, 1400, clock=clock, boot_id=b"receiver", **kw)
    return sender, receiver


def test_a_datagram_opens_once() -> None:
    clock = Clock()
    sender, receiver = datagram_pair(clock)
    data = sender.seal(Ping(1, "H1", 0), 8002)
    assert (
        len(data) == len(Codec(SECRET, 1400).seal(Ping(1, "H1", 0))) + DATAGRAM_OVERHEAD - MAC_SIZE
    )
    assert receiver.open(data, 8002) == Ping(1, "H1", 0)
    assert reason(lambda d: receiver.open(d, 8002), data) == "replayed"
    assert receiver.rejected == {"replayed": 1}


def test_late_early_and_misaddressed_datagrams_are_refused() -> None:
    sender_clock, receiver_clock = Clock(), Clock()
    sender = DatagramCodec(SECRET, 1400, clock=sender_clock, window=30.0)
    receiver = DatagramCodec(SECRET, 1400, clock=receiver_clock, window=30.0)

    def open_(d: bytes):
        return receiver.open(d, 8002)

    old = sender.seal(Ack(1, "H1", 0), 8002)
    receiver_clock.now += 31
    assert reason(open_, old) == "stale"  # a capture replayed past the window
    sender_clock.now = receiver_clock.now + 20  # the sender's clock runs ahead: skew
    assert open_(sender.seal(Ack(2, "H1", 0), 8002)) == Ack(2, "H1", 0)
    sender_clock.now = receiver_clock.now + 31  # too far ahead to be a clock's skew
    assert reason(open_, sender.seal(Ack(3, "H1", 0), 8002)) == "stale"
    sender_clock.now = receiver_clock.now
    assert reason(open_, sender.seal(Ack(4, "H1", 0), 8003)) == "misaddressed"
    assert receiver.rejected == {"stale": 2, "misaddressed": 1}


def test_reordered_datagrams_pass_within_the_window_replays_never() -> None:
    clock = Clock()
    sender, receiver = datagram_pair(clock)
    sent = [sender.seal(Ping(i, "H1", 0), 1) for i in range(REPLAY_WINDOW + 5)]
    order = [*sent[5:], *sent[:5]]  # the first five arrive last: too old by then
    opened = 0
    for data in order:
        try:
            receiver.open(data, 1)
            opened += 1
        except Rejected as r:
            assert r.reason == "too_old"
    assert opened == REPLAY_WINDOW and receiver.rejected == {"too_old": 5}
    for data in sent[-10:]:
        assert reason(lambda d: receiver.open(d, 1), data) == "replayed"


def test_the_replay_window_marks_each_counter_once() -> None:
    w = ReplayWindow()
    assert [w.accept(n) for n in (5, 3, 5, 3, 4, 2000)] == [
        None,
        None,
        "replayed",
        "replayed",
        None,
        None,
    ]
    assert w.accept(2000 - REPLAY_WINDOW) == "too_old"
    assert w.accept(2000 - REPLAY_WINDOW + 1) is None


def test_each_sender_boot_has_its_own_window() -> None:
    clock = Clock()
    receiver = DatagramCodec(SECRET, 1400, clock=clock)
    a = DatagramCodec(SECRET, 1400, clock=clock)
    b = DatagramCodec(SECRET, 1400, clock=clock)  # a restart: a new boot id, counter 0
    assert a.boot_id != b.boot_id
    assert receiver.open(a.seal(Ping(1, "H1", 0), 7), 7) and receiver.open(
        b.seal(Ping(1, "H1", 0), 7), 7
    )
    assert receiver.senders == 2


def test_senders_are_bounded_and_quiet_ones_forgotten_first() -> None:
    clock = Clock()
    receiver = DatagramCodec(SECRET, 1400, clock=clock, max_senders=3)
    senders = [DatagramCodec(SECRET, 1400, clock=clock) for _ in range(5)]
    kept = senders[0].seal(Gossip("H1", (Update(0, "H1", 1, "h", 1),)), 9)
    for s in senders[:3]:
        receiver.open(s.seal(Ping(1, "H", 0), 9), 9)
    clock.now += 31  # all quiet past the window: forgetting them is safe
    for s in senders[3:]:
        receiver.open(s.seal(Ping(1, "H", 0), 9), 9)
    assert receiver.senders == 3 and "sender_evicted" not in receiver.rejected
    # A forgotten sender's old datagram is stale anyway.
    assert reason(lambda d: receiver.open(d, 9), kept) == "stale"


def test_a_datagram_with_another_secret_or_cut_short_is_refused() -> None:
    clock = Clock()
    sender, receiver = datagram_pair(clock)
    forged = DatagramCodec(b"other", 1400, clock=clock).seal(Ping(1, "H1", 0), 5)
    assert reason(lambda d: receiver.open(d, 5), forged) == "bad_mac"
    tiny = Codec(SECRET, 1400).seal_bytes(b"\x01\x02")  # authentic, no header
    assert reason(lambda d: receiver.open(d, 5), tiny) == "short"
    assert reason(lambda d: receiver.open(d, 5), sender.seal(Ping(1, "H1", 0), 5)[:-1]) == "bad_mac"
