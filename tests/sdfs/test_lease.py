"""The lease's pure part (sdfs.lease.Follower): whom a member promises, and its floors."""

from __future__ import annotations

import pytest

from net.errors import Invalid
from net.messages import Floor
from sdfs.lease import FLOORS_PAGE, LEASE, Follower, majority


def test_majority_of_the_configured_nodes() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5, 10)] == [1, 2, 2, 3, 3, 6]


def test_a_member_that_just_started_promises_nobody_for_a_lease_period() -> None:
    f = Follower(booted=100.0)
    assert not f.renew("H1", 1, (), 100.0 + LEASE - 0.01).ok
    assert f.renew("H1", 1, (), 100.0 + LEASE).ok


def test_a_promise_to_one_leader_keeps_every_other_out_until_it_runs_out() -> None:
    f = Follower(booted=-LEASE)
    assert f.renew("H1", 1, (), 0.0).ok
    refused = f.renew("H2", 2, (), LEASE - 0.01)
    assert (refused.ok, refused.term, refused.leader) == (False, 1, "H1")
    assert f.renew("H1", 1, (), 1.0).ok  # H1 renews: the promise now runs to 1 + LEASE
    assert not f.renew("H2", 2, (), LEASE + 0.5).ok
    assert f.renew("H2", 2, (), 1.0 + LEASE).ok
    assert f.promised("H2", 1.0 + LEASE) and not f.promised("H1", 1.0 + LEASE)


def test_terms_only_grow_and_one_term_has_one_leader() -> None:
    f = Follower(booted=-LEASE)
    assert f.renew("H1", 5, (), 0.0).ok
    later = 10 * LEASE
    assert not f.renew("H2", 4, (), later).ok  # lower term, even after expiry
    assert not f.renew("H2", 5, (), later).ok  # the same term for another leader
    assert not f.renew("H1", 4, (), later).ok  # the same leader going back in terms
    assert f.renew("H1", 6, (), 1.0).ok  # the same leader, a new term: at once
    assert f.renew("H2", 7, (), 1.0 + LEASE).ok


def test_floors_are_recorded_only_from_the_promised_leader_and_only_grow() -> None:
    f = Follower(booted=-LEASE)
    assert f.renew("H1", 1, (Floor("a", 3), Floor("b", 1)), 0.0).ok
    assert f.renew("H1", 1, (Floor("a", 2),), 0.5).ok  # an older number changes nothing
    assert not f.renew("H2", 2, (Floor("a", 9),), 1.0).ok  # refused: not recorded
    assert dict(f.floors) == {"a": 3, "b": 1}


def test_bad_floors_are_refused_whole_and_change_nothing() -> None:
    f = Follower(booted=-LEASE)
    with pytest.raises(Invalid):
        f.renew("H1", 1, (Floor("ok", 1), Floor("/etc/passwd", 1)), 0.0)
    with pytest.raises(Invalid):
        f.renew("H1", 1, (Floor("ok", 0),), 0.0)
    with pytest.raises(Invalid):
        f.renew("", 1, (), 0.0)
    assert dict(f.floors) == {} and f.promise.leader is None


def test_floors_come_in_pages_that_neither_skip_nor_repeat() -> None:
    f = Follower(booted=-LEASE)
    floors = tuple(Floor(f"n/{i:06d}", i + 1) for i in range(FLOORS_PAGE * 2 + 5))
    assert f.renew("H1", 1, floors, 0.0).ok
    seen: list[Floor] = []
    after = ""
    pages = 0
    while True:
        page = f.page(after)
        pages += 1
        seen.extend(page.floors)
        if not page.next_after:
            break
        after = page.next_after
    assert pages == 3
    assert seen == list(floors)
