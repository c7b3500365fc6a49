"""The standby copy: typed events in sequence, refusals that make the leader resend."""

from __future__ import annotations

import logging

from inference.events import Event, SetBatchSize, Submit, WorkerUp
from inference.scheduler import Scheduler
from inference.standby import StandbyCopy
from net.messages import Ping, StandbyEvent, StandbySnapshot, StoreAck
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
