"""The broadcast queue: each update goes out a bounded number of times, fewest-sent first."""

from __future__ import annotations

import msgpack

from membership.gossip import BroadcastQueue, encoded_size
from net.messages import Update, UpdateKind
from net.wire import to_plain


def alive(name: str, inc: int = 0) -> Update:
    return Update(int(UpdateKind.ALIVE), name, inc, "10.0.0.1", 8000)


def test_encoded_size_is_the_msgpack_size():
    u = alive("H1", 3)
    assert encoded_size(u) == len(msgpack.packb(to_plain(u), use_bin_type=True))


def test_each_update_is_sent_exactly_limit_times():
    q = BroadcastQueue()
    q.push(alive("H1"))
    sends = 0
    while q.take(budget=10_000, limit=5):
        sends += 1
    assert sends == 5
    assert len(q) == 0 and "H1" not in q


def test_fresh_news_goes_first():
    q = BroadcastQueue()
    q.push(alive("old"))
    q.take(10_000, limit=10)
    q.push(alive("new"))
    size = encoded_size(alive("new"))
    # Room for one update only: the unsent one wins.
    assert q.take(size, limit=10) == (alive("new"),)
    # Both sent once now: the newer goes first, then the one sent fewer times.
    assert q.take(size, limit=10) == (alive("new"),)
    assert q.take(size, limit=10) == (alive("old"),)


def test_among_equally_sent_updates_the_newest_goes_first():
    q = BroadcastQueue()
    q.push(alive("first"))
    q.push(alive("second"))
    assert q.take(encoded_size(alive("second")), limit=10) == (alive("second"),)


def test_news_about_the_destination_goes_first():
    q = BroadcastQueue()
    suspicion = Update(int(UpdateKind.SUSPECT), "H7", 0, by="H1")
    q.push(suspicion)
    q.take(10_000, limit=10)  # sent once already: others now come first
    q.push(alive("H2"))
    q.push(alive("H3"))
    budget = encoded_size(alive("H3"))  # room for one update
    assert q.take(budget, limit=10, prefer="H7") == (suspicion,)
    assert q.take(budget, limit=10, prefer="nobody") == (alive("H3"),)


def test_budget_is_respected_and_skipped_updates_keep_their_count():
    q = BroadcastQueue()
    small = alive("H1")
    big = Update(int(UpdateKind.ALIVE), "H-with-a-very-long-name" * 4, 0, "10.0.0.1", 1)
    q.push(big)
    q.push(small)
    assert q.take(encoded_size(small), limit=2) == (small,)
    # The big one did not fit and was not counted as sent, so it now goes first.
    assert q.take(10_000, limit=2) == (big, small)
    assert q.take(10_000, limit=2) == (big,)
    assert len(q) == 0


def test_a_newer_update_replaces_the_queued_one():
    q = BroadcastQueue()
    q.push(Update(int(UpdateKind.SUSPECT), "H2", 0, by="H1"))
    q.take(10_000, limit=10)
    q.push(alive("H2", 1))
    assert len(q) == 1
    assert q.has_fresh()
    assert q.take(10_000, limit=10) == (alive("H2", 1),)


def test_has_fresh_and_clear():
    q = BroadcastQueue()
    assert not q.has_fresh()
    assert q.take(10_000, limit=3) == ()
    q.push(alive("H1"))
    assert q.has_fresh()
    q.take(10_000, limit=3)
    assert not q.has_fresh() and len(q) == 1
    q.clear()
    assert len(q) == 0


def test_uncounted_takes_ride_along_free():
    q = BroadcastQueue()
    q.push(alive("H1"))
    for _ in range(100):  # pings and acks to ring neighbours do not spend the budget
        assert q.take(10_000, limit=2, count=False) == (alive("H1"),)
    assert q.has_fresh()
    assert q.take(10_000, limit=2) == (alive("H1"),)
    assert q.take(10_000, limit=2) == (alive("H1"),)
    assert len(q) == 0
