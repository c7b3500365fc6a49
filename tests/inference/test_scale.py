"""Issue 10 (scale), inference side: what the leader and its standby hold stays bounded.

* A finished job is forgotten once its output is written; a bounded table of recent
  summaries still answers C4 status.
* A snapshot of any size reaches the standby in parts that each fit a frame (a job of
  100,000 queries with image rows is over 16 MiB as one message).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from inference import standby
from inference.events import Assign, Submit
from inference.scheduler import Scheduler, SchedulerConfig
from inference.standby import SNAPSHOT_PART, Replicator, StandbyCopy, snapshot_parts
from net import wire
from net.messages import (
    ErrorReply,
    StandbyEvent,
    StandbySnapshot,
    StandbySnapshotPart,
    StoreAck,
)
from net.rpc import MAX_FRAME
from net.transport import Address
from tests.helpers.memrpc_cluster import RpcCluster

LOG = logging.getLogger("test.scale")
MODEL = "resnet50"
CAP = {"threads": 2, "gpu": None, "slots": 1}
# What an image job's result row looks like (five classes with their labels).
LABELS = ["golden retriever", "tabby cat", "Egyptian cat", "lynx", "tiger cat"]


def image_row(name: str, i: int) -> dict[str, Any]:
    top5 = [[(i * 7 + k) % 1000, LABELS[k], round(0.9 / (k + 1), 6)] for k in range(5)]
    return {"input": name, "top5": top5}


def finished_jobs(s: Scheduler, n: int, now: float = 0.0) -> None:
    """``n`` one-query jobs, each run to the end and forgotten."""
    for _ in range(n):
        job_id = s.next_job_id()
        (a,) = [
            x for x in s.submit(None, MODEL, [f"images/{job_id}.jpg"], now) if isinstance(x, Assign)
        ]
        s.batch_done(a.worker, a.batch_id, [(0, image_row(a.queries[0][1], 0))], [0.1], now + 1)
        assert s.status(job_id)["state"] == "done"
        s.forget(job_id)
        now += 2


def test_finished_jobs_are_forgotten_into_a_bounded_table_of_summaries() -> None:
    s = Scheduler(SchedulerConfig(keep_finished=3))
    s.worker_up("H1", CAP, 0.0)
    finished_jobs(s, 5)
    assert s.job_ids() == []
    # The three most recent still answer C4 status, with their final figures.
    for n in (3, 4, 5):
        status = s.status(f"job-{n}")
        assert (status["state"], status["done"], status["total"]) == ("done", 1, 1)
        assert status["finished_at"] == 2 * (n - 1) + 1
    for n in (1, 2):
        with pytest.raises(KeyError):
            s.status(f"job-{n}")
    # Ids are never reused, and the table travels with the state to the standby.
    with pytest.raises(ValueError, match="already used"):
        s.submit("job-5", MODEL, ["images/x.jpg"], 20.0)
    copy = Scheduler.restore(s.snapshot())
    assert copy.snapshot() == s.snapshot()
    assert copy.status("job-4") == s.status("job-4")
    # The copy evolves as the leader does (job-6 in, job-3 out of the table).
    finished_jobs(copy, 1, 30.0)
    finished_jobs(s, 1, 30.0)
    assert copy.snapshot() == s.snapshot()
    with pytest.raises(KeyError):
        copy.status("job-3")


def test_two_thousand_jobs_one_after_another_leave_no_state_behind() -> None:
    s = Scheduler(SchedulerConfig(keep_finished=100))
    s.worker_up("H1", CAP, 0.0)
    s.worker_up("H2", CAP, 0.0)
    finished_jobs(s, 2000)
    snap = s.snapshot()
    assert snap["jobs"] == [] and snap["batches"] == [] and snap["retired"] == []
    assert len(snap["finished"]) == 100
    assert len(wire.encode(StandbySnapshot("H1", 1, snap))) < 64 * 1024


def running_job(n: int, done: int) -> Scheduler:
    """One image job of ``n`` queries with ``done`` of them answered, the rest out or
    pending, on four workers."""
    s = Scheduler(SchedulerConfig(max_batch_seconds=None))
    s.set_batch_size(MODEL, 4096)
    for w in ("H1", "H2", "H3", "H4"):
        s.worker_up(w, CAP, 0.0)
    out = [a for a in s.submit(None, MODEL, [f"images/{i:06d}.jpg" for i in range(n)], 0.0)]
    now = 1.0
    while s.status("job-1")["done"] < done:
        a = next(x for x in out if isinstance(x, Assign))
        out.remove(a)
        rows = [(i, image_row(name, i)) for i, name in a.queries]
        out += s.batch_done(a.worker, a.batch_id, rows, [0.01] * len(rows), now)
        now += 1.0
    assert s.status("job-1")["state"] == "running"
    return s


@pytest.fixture(scope="module")
def big() -> Scheduler:
    """A job of 100,000 queries, 98,000 answered (built once: it takes a second or two).
    Tests may add to it but compare only with its state at the time."""
    return running_job(100_000, 98_000)


def test_a_100000_query_job_snapshots_in_parts_that_each_fit_a_frame(big: Scheduler) -> None:
    leader = big
    parts = snapshot_parts("H1", 9, leader)
    # As one message it would not fit a frame: that is what the parts are for.
    assert sum(len(p.data) for p in parts) > MAX_FRAME
    assert len(parts) > 1 and all(len(p.data) <= SNAPSHOT_PART for p in parts)
    assert all(len(wire.encode(p)) < MAX_FRAME for p in parts)
    copy = StandbyCopy(LOG)
    for p in parts[:-1]:
        assert copy.part(p) == StoreAck(True)
        assert copy.scheduler is None  # restored all at once, at the end
    assert copy.part(parts[-1]) == StoreAck(True)
    assert copy.scheduler is not None and (copy.seq, copy.leader) == (9, "H1")
    assert copy.scheduler.snapshot() == leader.snapshot()


def test_snapshot_parts_out_of_order_or_from_another_snapshot_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(standby, "SNAPSHOT_PART", 64 * 1024)
    leader = running_job(5_000, 2_000)
    parts = snapshot_parts("H1", 3, leader)
    other = snapshot_parts("H1", 4, leader)
    assert len(parts) >= 2
    copy = StandbyCopy(LOG)
    assert copy.part(parts[0]) == StoreAck(True)
    assert not copy.part(other[1]).ok  # another snapshot's part: start again
    assert not copy.part(parts[1]).ok  # the first part was dropped with it
    bad = StandbySnapshotPart("H1", 3, 5, 2, b"")
    assert not copy.part(bad).ok
    garbage = StandbySnapshotPart("H1", 3, 0, 1, b"\xc1not msgpack")
    assert "undecodable" in copy.part(garbage).error
    assert copy.scheduler is None
    for p in other:
        assert copy.part(p).ok
    assert copy.seq == 4 and copy.scheduler is not None


async def test_the_replicator_gets_a_100000_query_job_to_the_standby(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, big: Scheduler
) -> None:
    """Over the in-memory RPC network, whose codecs refuse frames over MAX_FRAME."""
    leader = big
    rpc = RpcCluster(nursery, 3)
    await rpc.start_all()
    await rpc.wait_until(rpc.converged, timeout=60)
    me, other = rpc.node("H1").peers.ring()[:2]
    copy = StandbyCopy(LOG)

    async def serve(request: Any, addr: Address) -> Any:
        if isinstance(request, StandbySnapshotPart):
            return copy.part(request)
        if isinstance(request, StandbyEvent):
            return copy.events(request)
        return ErrorReply(f"unexpected {type(request).__name__}")

    rpc.node(other).serve(serve)
    replicator = Replicator(me, rpc.node(me).peers, lambda: (leader, 9, 1), LOG)
    nursery.start_soon(replicator.run)
    replicator.restart()
    await rpc.wait_until(lambda: copy.scheduler is not None, timeout=5)
    assert (copy.seq, copy.leader) == (9, me) and copy.scheduler is not None
    assert copy.scheduler.status("job-1") == leader.status("job-1")
    # Then events, in order, as they are applied.
    event = Submit(None, MODEL, ("images/late.jpg",), 50.0)
    leader.handle(event)
    replicator.push(10, event)
    await rpc.wait_until(lambda: copy.seq == 10, timeout=5)
    assert copy.scheduler is not None and copy.scheduler.snapshot() == leader.snapshot()
    sent = replicator.sent
    assert sent.snapshots == 1 and sent.events == 1
    assert sent.snapshot_bytes > MAX_FRAME and sent.bytes == sent.snapshot_bytes + sent.event_bytes
