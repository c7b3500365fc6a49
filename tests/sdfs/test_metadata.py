"""The leader's metadata: quorums, placement, grants, rebuilds, deletes and repairs."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from net.messages import VersionRecord, VersionState
from sdfs.metadata import (
    GRANT_TIMEOUT,
    Metadata,
    Repair,
    placement,
    read_quorum,
    write_quorum,
)

PENDING = int(VersionState.PENDING)
COMMITTED = int(VersionState.COMMITTED)
DELETED = int(VersionState.DELETED)

RING = [f"H{i}" for i in range(1, 11)]
NAME = "images/cat.jpg"


def rec(
    name: str, version: int, state: int = COMMITTED, put_id: str | None = None
) -> VersionRecord:
    if state == DELETED:
        return VersionRecord(name, version, "", 0, "", DELETED)
    return VersionRecord(
        name,
        version,
        put_id if put_id is not None else f"put-{name}-{version}",
        version * 10,
        hashlib.sha256(f"{name}{version}".encode()).hexdigest(),
        state,
    )


def located(md: Metadata, name: str) -> list[tuple[int, set[str]]]:
    versions, _ = md.locate(name)
    return [(v.record.version, set(v.holders)) for v in versions]


# --- quorums -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, 7))
def test_quorums_intersect(n: int) -> None:
    w, r = write_quorum(n), read_quorum(n)
    assert 1 <= w <= n and 1 <= r <= n
    assert w + r > n
    if n >= 2:
        assert w < n  # one dead replica never blocks a write


def test_quorums_for_four_copies() -> None:
    assert (write_quorum(4), read_quorum(4)) == (3, 2)
    assert (write_quorum(1), read_quorum(1)) == (1, 1)


# --- placement -----------------------------------------------------------------------------


def test_placement_is_deterministic_and_independent_of_the_hash_seed() -> None:
    start = int.from_bytes(hashlib.sha1(NAME.encode()).digest()[:8], "big") % len(RING)
    expected = [RING[(start + i) % len(RING)] for i in range(4)]
    assert placement(NAME, RING, 4) == expected
    assert placement(NAME, list(RING), 4) == placement(NAME, tuple(RING), 4)


@pytest.mark.parametrize("name", [NAME, "a", "models/resnet50.pth", "ünï/猫.png"])
@pytest.mark.parametrize("count", [1, 3, 4, 10])
def test_placement_is_distinct_consecutive_ring_members(name: str, count: int) -> None:
    chosen = placement(name, RING, count)
    assert len(chosen) == count == len(set(chosen))
    start = RING.index(chosen[0])
    assert chosen == [RING[(start + i) % len(RING)] for i in range(count)]


def test_placement_count_is_capped_by_the_ring() -> None:
    assert sorted(placement(NAME, RING[:3], 4)) == sorted(RING[:3])
    assert placement(NAME, RING[:1], 4) == ["H1"]
    assert placement(NAME, [], 4) == []
    assert placement(NAME, RING, 0) == []


def test_placement_order_is_a_prefix_of_the_full_order() -> None:
    full = placement(NAME, RING, len(RING))
    for count in range(len(RING) + 1):
        assert placement(NAME, RING, count) == full[:count]


def test_placement_spreads_names_over_start_points() -> None:
    starts = Counter(placement(f"images/{i}.jpg", RING, 4)[0] for i in range(500))
    assert set(starts) == set(RING)
    assert max(starts.values()) < 500 * 0.2  # 10 % each on average


# --- grants --------------------------------------------------------------------------------


def test_grants_increase_strictly_per_file() -> None:
    md = Metadata(4, 5)
    got = [md.grant(NAME, f"p{i}", now=0.0) for i in range(5)]
    assert got == sorted(set(got)) and got[0] >= 1
    assert md.grant("other", "q", now=0.0) == 1
    md.abort("p4")
    assert md.grant(NAME, "p5", now=0.0) > got[-1]  # numbers are never reused


def test_grants_are_above_everything_any_node_holds() -> None:
    md = Metadata(4, 5)
    md.rebuild(
        {
            "H1": [rec(NAME, 3), rec("b", 2), rec("c", 4, DELETED)],
            "H2": [rec(NAME, 7, PENDING), rec("b", 9, PENDING)],
            "H3": [rec(NAME, 5, DELETED), rec(NAME, 6)],
        }
    )
    assert md.grant(NAME, "p", now=0.0) == 8
    assert md.grant("b", "p", now=0.0) == 10
    assert md.grant("c", "p", now=0.0) == 5
    assert md.grant("new", "p", now=0.0) == 1


def test_grants_survive_expiry_and_put_done_of_older_versions() -> None:
    md = Metadata(4, 5)
    g1 = md.grant(NAME, "p1", now=0.0)
    g2 = md.grant(NAME, "p2", now=0.0)
    md.expire_grants(GRANT_TIMEOUT + 1)
    md.put_done(rec(NAME, g1, put_id="p1"), ["H1"])
    assert md.grant(NAME, "p3", now=GRANT_TIMEOUT + 2) > g2


# --- rebuilding from inventories -----------------------------------------------------------


def test_rebuild_folds_inventories_together() -> None:
    md = Metadata(4, 5)
    md.rebuild(
        {
            "H1": [rec(NAME, 1), rec(NAME, 2), rec("gone", 1), rec("gone", 2, DELETED)],
            "H2": [rec(NAME, 1), rec(NAME, 2, PENDING), rec(NAME, 3, PENDING)],
            "H3": [rec(NAME, 2), rec("gone", 1), rec("only-pending", 1, PENDING)],
            "H4": [],
        }
    )
    assert located(md, NAME) == [(2, {"H1", "H2", "H3"}), (1, {"H1", "H2"})]
    assert md.locate("gone") == ([], True)
    assert md.locate("only-pending") == ([], False)
    assert md.names() == [NAME]
    (newest, _), _ = md.locate(NAME)
    assert newest.record == rec(NAME, 2)  # a pending copy of a committed version upgrades


def test_rebuild_starts_over() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec("a", 1)]})
    md.grant("a", "p", now=0.0)
    md.rebuild({"H2": [rec("b", 1)]})
    assert md.names() == ["b"]
    assert md.locate("a") == ([], False)
    assert md.grant("a", "p", now=0.0) == 1


@pytest.mark.parametrize("state", [COMMITTED, PENDING])
def test_conflicting_put_ids_for_one_version_keep_the_first_seen(state: int) -> None:
    first, second = rec(NAME, 4, state, "p-first"), rec(NAME, 4, state, "p-second")
    md = Metadata(4, 5)
    md.rebuild({"H1": [first], "H2": [second], "H3": [first]})
    versions = md.files[NAME].versions
    assert versions[4].record.put_id == "p-first"
    assert versions[4].holders == {"H1", "H3"}


@pytest.mark.parametrize("order", [("H1", "H2"), ("H2", "H1")])
def test_a_committed_put_beats_a_pending_one_with_the_same_version(
    order: tuple[str, str],
) -> None:
    """Two grants of one number across a change of leader: the committed put won."""
    held = {"H1": [rec(NAME, 4, PENDING, "loser")], "H2": [rec(NAME, 4, COMMITTED, "winner")]}
    md = Metadata(4, 5)
    md.rebuild({node: held[node] for node in order})
    (info,), deleted = md.locate(NAME)
    assert info.record.put_id == "winner" and not deleted
    assert info.holders == {"H2"}


def test_add_inventory_returns_stale_copies_below_a_tombstone() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(NAME, 5, DELETED), rec(NAME, 6)], "H2": [rec("b", 3, DELETED)]})
    stale = md.add_inventory(
        "H9",
        [rec(NAME, 2), rec(NAME, 5, PENDING), rec(NAME, 6), rec("b", 1), rec("b", 3, DELETED)],
    )
    assert stale == [("b", 3), (NAME, 5)]
    assert located(md, NAME) == [(6, {"H1", "H9"})]
    assert md.add_inventory("H8", [rec(NAME, 7)]) == []


def test_a_tombstone_seen_late_drops_what_it_covers() -> None:
    md = Metadata(4, 5)
    md.add_inventory("H1", [rec(NAME, 1), rec(NAME, 2), rec(NAME, 4)])
    md.add_inventory("H2", [rec(NAME, 3, DELETED)])
    assert located(md, NAME) == [(4, {"H1"})]
    md.add_inventory("H3", [rec(NAME, 4, DELETED)])
    assert md.locate(NAME) == ([], True)
    assert md.names() == []


def test_node_gone_removes_its_holdings() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(NAME, 1), rec("b", 1)], "H2": [rec(NAME, 1)]})
    md.node_gone("H1")
    assert located(md, NAME) == [(1, {"H2"})]
    assert located(md, "b") == [(1, set())]
    md.node_gone("H-unknown")
    assert located(md, NAME) == [(1, {"H2"})]


# --- puts and deletes ----------------------------------------------------------------------


def test_put_done_marks_committed_with_holders_and_trims_to_keep() -> None:
    md = Metadata(4, 3)
    for v in range(1, 6):
        version = md.grant(NAME, f"p{v}", now=0.0)
        assert version == v
        md.put_done(rec(NAME, v, PENDING, f"p{v}"), ["H1", "H2", "H3"])
    versions, deleted = md.locate(NAME)
    assert [v.record.version for v in versions] == [5, 4, 3]
    assert all(v.committed and v.holders == {"H1", "H2", "H3"} for v in versions)
    assert not deleted
    assert sorted(md.files[NAME].versions) == [3, 4, 5]


def test_put_done_replaces_a_pending_leftover_of_another_put() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(NAME, 2, PENDING, "old")]})
    md.put_done(rec(NAME, 2, PENDING, "new"), ["H2", "H3"])
    assert located(md, NAME) == [(2, {"H2", "H3"})]
    assert md.files[NAME].versions[2].record.put_id == "new"
    md.put_done(rec(NAME, 2, COMMITTED, "new"), ["H4"])  # a retried report adds holders
    assert located(md, NAME) == [(2, {"H2", "H3", "H4"})]


def test_put_done_at_or_below_a_tombstone_is_ignored() -> None:
    md = Metadata(4, 5)
    md.put_done(rec(NAME, 1), ["H1"])
    v = md.grant(NAME, "late", now=0.0)
    tomb = md.delete(NAME)
    md.put_done(rec(NAME, v, put_id="late"), ["H1"])
    assert md.locate(NAME) == ([], True)
    assert md.grant(NAME, "next", now=0.0) == tomb + 1


def test_delete() -> None:
    md = Metadata(4, 5)
    with pytest.raises(KeyError):
        md.delete("missing")
    md.rebuild({"H1": [rec(NAME, 1), rec(NAME, 6, PENDING)], "H2": [rec("p", 1, PENDING)]})
    with pytest.raises(KeyError):
        md.delete("p")  # nothing readable yet
    outstanding = md.grant(NAME, "racing", now=0.0)
    tomb = md.delete(NAME)
    assert tomb > outstanding > 6
    assert md.locate(NAME) == ([], True)
    assert md.names() == []
    with pytest.raises(KeyError):
        md.delete(NAME)
    v = md.grant(NAME, "again", now=0.0)
    assert v > tomb
    md.put_done(rec(NAME, v, put_id="again"), ["H3"])
    assert located(md, NAME) == [(v, {"H3"})]
    assert md.locate(NAME)[1] is False
    assert md.names() == [NAME]


def test_locate_is_newest_first() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(NAME, 1), rec(NAME, 3)], "H2": [rec(NAME, 2), rec(NAME, 4, PENDING)]})
    assert [v for v, _ in located(md, NAME)] == [3, 2, 1]
    assert md.locate("missing") == ([], False)


def test_names_glob_is_case_sensitive() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(n, 1) for n in ("images/a.jpg", "images/B.JPG", "models/x.pth")]})
    assert md.names() == ["images/B.JPG", "images/a.jpg", "models/x.pth"]
    assert md.names("images/*") == ["images/B.JPG", "images/a.jpg"]
    assert md.names("*.jpg") == ["images/a.jpg"]
    assert md.names("nothing*") == []


# --- repairs -------------------------------------------------------------------------------


def held_by_placement(name: str, ring: list[str], versions: range) -> Metadata:
    md = Metadata(4, 5)
    holders = placement(name, ring, 4)
    md.rebuild({n: [rec(name, v) for v in versions] for n in holders})
    return md


def test_a_fully_replicated_file_needs_no_repair() -> None:
    md = held_by_placement(NAME, RING, range(1, 3))
    assert md.repairs(RING, now=100.0) == []
    assert md.lost(RING) == []


def test_repair_after_three_holders_fail() -> None:
    md = held_by_placement(NAME, RING, range(1, 4))
    holders = placement(NAME, RING, 4)
    survivor, gone = holders[1], [holders[0], *holders[2:]]
    for node in gone:
        md.node_gone(node)
    live = [n for n in RING if n not in gone]

    (repair,) = md.repairs(live, now=100.0)
    expected_targets = tuple(n for n in placement(NAME, live, len(live)) if n != survivor)[:3]
    assert repair == Repair(
        NAME, survivor, expected_targets, tuple(rec(NAME, v) for v in (3, 2, 1))
    )
    assert len(set(repair.targets)) == 3 and survivor not in repair.targets
    assert not set(repair.targets) & set(gone)

    assert md.repairs(live, now=110.0) == []  # an order is out
    assert md.repairs(live, now=129.9) == []
    assert md.repairs(live, now=130.0) == [repair]  # retried after retry_after
    assert md.repairs(live, now=131.0, retry_after=60.0) == []

    md.repaired(NAME, repair.records, repair.targets)
    assert located(md, NAME)[0] == (3, {survivor, *repair.targets})
    assert md.repairs(live, now=131.0) == []


def test_repair_failed_allows_an_immediate_retry() -> None:
    md = held_by_placement(NAME, RING, range(1, 2))
    md.node_gone(placement(NAME, RING, 4)[0])
    live = [n for n in RING if n != placement(NAME, RING, 4)[0]]
    (first,) = md.repairs(live, now=0.0)
    assert md.repairs(live, now=1.0) == []
    md.repair_failed(NAME)
    assert md.repairs(live, now=2.0) == [first]


def test_repair_copies_only_what_the_source_holds() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(NAME, 1), rec(NAME, 2)], "H2": [rec(NAME, 2)], "H3": [rec(NAME, 2)]})
    ring = ["H1", "H2", "H3", "H4", "H5"]
    (repair,) = md.repairs(ring, now=0.0)
    assert len(repair.targets) == 1 and repair.targets[0] in ("H4", "H5")
    order = placement(NAME, ring, len(ring))
    assert repair.source == next(n for n in order if n in ("H1", "H2", "H3"))
    expected = (rec(NAME, 2), rec(NAME, 1)) if repair.source == "H1" else (rec(NAME, 2),)
    assert repair.records == expected


def test_repaired_ignores_other_puts_and_unknown_files() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(NAME, 1)]})
    md.repaired(NAME, [rec(NAME, 1, put_id="someone-else"), rec(NAME, 9)], ["H2"])
    md.repaired("unknown", [rec("unknown", 1)], ["H2"])
    assert located(md, NAME) == [(1, {"H1"})]
    assert md.names() == [NAME]


def test_a_file_whose_holders_are_all_gone_is_lost_not_repaired() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(NAME, 1)], "H2": [rec(NAME, 1)], "H3": [rec("safe", 1)]})
    live = RING[2:]
    assert md.lost(live) == [NAME]
    assert [r.name for r in md.repairs(live, now=0.0)] == ["safe"]
    assert md.lost(RING) == []


def test_a_small_ring_asks_only_for_as_many_copies_as_members() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(NAME, 1)]})
    (repair,) = md.repairs(["H1", "H2"], now=0.0)
    assert repair.source == "H1" and repair.targets == ("H2",)
    md.repaired(NAME, repair.records, repair.targets)
    assert md.repairs(["H1", "H2"], now=1.0) == []
    assert md.repairs(["H1"], now=2.0) == []


def test_repairs_skip_pending_only_and_deleted_files() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec("p", 1, PENDING), rec("d", 1), rec("d", 2, DELETED)]})
    assert md.repairs(RING, now=0.0) == []
    assert md.lost(RING[1:]) == []


def test_repairs_are_sorted_by_name_and_one_per_file() -> None:
    md = Metadata(4, 5)
    md.rebuild({"H1": [rec(n, v) for n in ("c", "a", "b") for v in (1, 2)]})
    repairs = md.repairs(RING, now=0.0)
    assert [r.name for r in repairs] == ["a", "b", "c"]
    assert all(len(r.targets) == 3 and r.source == "H1" for r in repairs)


def test_a_repair_pass_looks_only_at_files_that_may_lack_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # At 100,000 files a pass over every file held the leader's event loop for over a
    # second, every 2 s, and it missed its pings.  Only changes are looked at now.
    import sdfs.metadata

    md = Metadata(4, 5)
    ring = RING[:5]
    for i in range(1000):
        md.put_done(rec(f"f{i}", 1), placement(f"f{i}", ring, 4))
    looked: Counter[str] = Counter()
    real = sdfs.metadata.FileInfo.newest

    def counted(self: sdfs.metadata.FileInfo) -> sdfs.metadata.VersionInfo | None:
        looked[self.name] += 1
        return real(self)

    monkeypatch.setattr(sdfs.metadata.FileInfo, "newest", counted)
    assert md.repairs(ring, 0.0) == [] and md.lost(ring) == []
    assert len(looked) == 1000  # the first pass (a new ring) looks at every file
    looked.clear()
    md.put_done(rec("new", 1), ["H1"])  # one new file, on one node only
    [repair] = md.repairs(ring, 1.0)
    assert (repair.name, repair.source) == ("new", "H1")
    assert md.lost(ring) == []
    assert set(looked) == {"new"}
    looked.clear()
    md.node_gone("H2")  # a failure: every file H2 held is looked at again
    gone = [r.name for r in md.repairs(ring[:1] + ring[2:], 2.0)]
    held = sorted(f"f{i}" for i in range(1000) if "H2" in placement(f"f{i}", ring, 4))
    assert gone == held
