"""The standby copy: typed events in sequence, refusals that make the leader resend."""

from __future__ import annotations

import logging

import pytest

from inference import standby
from inference.events import Event, SetBatchSize, Submit, WorkerUp
from inference.scheduler import Scheduler
from inference.standby import StandbyCopy, snapshot_parts
from net.messages import (
    CopyPartRequest,
    CopyState,
    ErrorReply,
    Ping,
    StandbyEvent,
    StandbySnapshot,
    StandbySnapshotPart,
    StoreAck,
)
from net.wire import encode

LOG = logging.getLogger("test.standby")


def _copy_of(leader: Scheduler, seq: int = 0) -> StandbyCopy:
    copy = StandbyCopy(LOG)
    assert copy.snapshot(StandbySnapshot("H1", seq, leader.snapshot())) == StoreAck(True)
    return copy


def test_events_in_sequence_keep_the_copy_identical() -> None:
    leader = Scheduler()
    copy = _copy_of(leader)
    events: list[Event] = [
        WorkerUp("H2", {"threads": 2, "gpu": None, "slots": 2}, 1.0),
        SetBatchSize("resnet50", 4),
        Submit(None, "resnet50", ("images/a.jpg", "images/b.jpg"), 2.0),
    ]
    for event in events:
        leader.handle(event)
    reply = copy.events(StandbyEvent("H1", 1, tuple(encode(e) for e in events)))
    assert reply == StoreAck(True)
    assert copy.seq == 3
    assert copy.scheduler is not None and copy.scheduler.snapshot() == leader.snapshot()
    taken = copy.take()
    assert taken is not None and taken[1:] == (3, "H1")
    assert copy.take() is None  # handed over once


def test_gaps_other_leaders_and_foreign_messages_are_refused() -> None:
    leader = Scheduler()
    up = encode(WorkerUp("H2", {"threads": 1}, 1.0))
    assert not StandbyCopy(LOG).events(StandbyEvent("H1", 1, (up,))).ok  # no copy yet
    copy = _copy_of(leader, seq=5)
    assert not copy.events(StandbyEvent("H1", 7, (up,))).ok  # a gap
    assert not copy.events(StandbyEvent("H9", 6, (up,))).ok  # another leader
    ping = encode(Ping(1, "H1", 0, ()))
    assert "Ping is not a scheduler event" in copy.events(StandbyEvent("H1", 6, (ping,))).error
    copy = _copy_of(leader, seq=5)
    assert "undecodable" in copy.events(StandbyEvent("H1", 6, (b"\x01",))).error
    assert copy.take() is not None  # whoever's it is: a takeover chose it as the freshest


def _parts_of(copy: StandbyCopy, term: int, seq: int) -> list[StandbySnapshotPart]:
    parts: list[StandbySnapshotPart] = []
    while not parts or len(parts) < parts[0].parts:
        part = copy.fetch(CopyPartRequest(term, seq, len(parts)))
        assert isinstance(part, StandbySnapshotPart), part
        parts.append(part)
    return parts


def test_copies_refuse_older_terms_and_take_newer_ones() -> None:
    leader = Scheduler()
    leader.handle(WorkerUp("H2", {"threads": 1}, 1.0))
    copy = StandbyCopy(LOG)
    assert copy.state("H4") == CopyState("H4", "", 0, 0)  # holds nothing
    assert copy.snapshot(StandbySnapshot("H3", 40, leader.snapshot(), 2)).ok
    assert copy.state("H4") == CopyState("H4", "H3", 2, 40)
    up = encode(WorkerUp("H5", {"threads": 1}, 2.0))
    # A leader of an older term: refused, however far ahead its event numbers are.
    for reply in (
        copy.snapshot(StandbySnapshot("H1", 99, leader.snapshot(), 1)),
        copy.part(snapshot_parts("H1", 99, leader, 1)[0]),
        copy.events(StandbyEvent("H1", 41, (up,), 1)),
    ):
        assert not reply.ok and "older than this copy" in reply.error
    assert copy.state("H4") == CopyState("H4", "H3", 2, 40)
    # The same term: only in sequence, and a snapshot only from the same event on.
    assert not copy.snapshot(StandbySnapshot("H3", 39, leader.snapshot(), 2)).ok
    assert copy.events(StandbyEvent("H3", 41, (up,), 2)).ok and copy.fresh == (2, 41)
    # A newer term: its events need a snapshot first; its snapshot is taken, whatever
    # its event number (a new leadership may have fewer events than the stale one).
    assert "send a snapshot" in copy.events(StandbyEvent("H2", 42, (up,), 3)).error
    assert all(copy.part(p).ok for p in snapshot_parts("H2", 7, leader, 3))
    assert copy.state("H4") == CopyState("H4", "H2", 3, 7)
    # A leader's own state kept when it steps down follows the same rule.
    assert not copy.keep(Scheduler(), "H4", 2, 100)
    assert copy.keep(Scheduler(), "H4", 3, 8) and copy.state("H4") == CopyState("H4", "H4", 3, 8)


def test_a_new_leader_fetches_a_copy_part_by_part_and_only_the_one_it_chose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(standby, "SNAPSHOT_PART", 256)  # several parts
    leader = Scheduler()
    leader.handle(WorkerUp("H2", {"threads": 2, "slots": 2}, 1.0))
    leader.handle(Submit(None, "resnet50", tuple(f"images/{i}.jpg" for i in range(50)), 2.0))
    holder = StandbyCopy(LOG)
    assert all(holder.part(p).ok for p in snapshot_parts("H1", 12, leader, 4))
    # Asked for another state than it holds (it moved on since it answered): refused.
    assert isinstance(holder.fetch(CopyPartRequest(4, 11, 0)), ErrorReply)
    assert isinstance(holder.fetch(CopyPartRequest(3, 12, 0)), ErrorReply)
    assert isinstance(holder.fetch(CopyPartRequest(4, 12, 99)), ErrorReply)
    newcomer = StandbyCopy(LOG)
    newcomer.term, newcomer.seq = 3, 500  # its own stale state's floor, an older term
    parts = _parts_of(holder, 4, 12)
    assert len(parts) > 3
    for part in parts:
        assert part.leader == "H1" and (part.term, part.seq) == (4, 12)
        assert newcomer.part(part).ok
    assert newcomer.fresh == (4, 12) and newcomer.scheduler is not None
    assert newcomer.scheduler.snapshot() == leader.snapshot()
    taken = newcomer.take()
    assert taken is not None and taken[1:] == (12, "H1")
    assert newcomer.fresh == (4, 12)  # the floor stays: nothing older is taken later
    assert not newcomer.snapshot(StandbySnapshot("H9", 11, leader.snapshot(), 4)).ok
