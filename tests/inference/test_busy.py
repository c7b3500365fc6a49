"""The leader's bounded record of recent batches (the dashboard's busy timeline)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from inference.busy import BusyRecord
from net.messages import BusySpan
from node import dashboard
from tests.inference.test_service_virtual import COSTS, Paced, start_cluster, wait_done


def test_a_span_ends_at_the_answer_and_starts_its_processing_time_before() -> None:
    busy = BusyRecord()
    busy.sent(7, 100.0)
    span = busy.done("H2", 7, "job-1", "quick", (0.5, 0.5, 1.0), 110.0)
    # Queued behind another batch on the worker: it started 2 s before it ended.
    assert span == BusySpan("H2", "job-1", "quick", 108.0, 110.0, 3)


def test_a_span_never_starts_before_its_batch_was_sent() -> None:
    busy = BusyRecord()
    busy.sent(1, 100.0)
    # Queries run side by side report overlapping times: 3 x 2 s in 2.5 s.
    assert busy.done("H2", 1, "job-1", "m", (2.0, 2.0, 2.0), 102.5).start == 100.0
    # A batch another leader sent (no send time here): the processing time alone.
    assert busy.done("H3", 2, "job-1", "m", (2.0, 2.0), 103.0).start == 99.0
    # A clock that stepped back never gives a span that ends before it starts.
    busy.sent(3, 200.0)
    span = busy.done("H3", 3, "job-1", "m", (), 150.0)
    assert span.start == span.end == 150.0


def test_spans_are_those_of_the_horizon_newest_first_cut_oldest_first_returned() -> None:
    busy = BusyRecord()
    for k in range(10):
        busy.done("H1", k, "job-1", "m", (1.0,), 100.0 + 10 * k)  # ends 100, 110, ... 190
    within = busy.spans(190.0, 35.0, limit=100)
    assert [s.end for s in within] == [160.0, 170.0, 180.0, 190.0]
    assert [s.end for s in busy.spans(190.0, 1000.0, limit=2)] == [180.0, 190.0]
    assert busy.spans(500.0, 60.0, limit=100) == []


def test_memory_is_bounded() -> None:
    busy = BusyRecord(max_spans=3, max_pending=2)
    for k in range(5):
        busy.sent(k, float(k))
    busy.sent(1, 9.0)  # sent again (a retry): the newest, not the oldest
    # Kept: the two sent last (4, then 1 again); 2 and 3 were dropped, oldest first.
    assert busy.done("H1", 4, "j", "m", (0.0,), 20.0).start == 20.0
    assert busy.done("H1", 1, "j", "m", (30.0,), 20.0).start == 9.0
    assert busy.done("H1", 3, "j", "m", (30.0,), 20.0).start == -10.0  # send time dropped
    for k in range(10):
        busy.done("H1", 100 + k, "j", "m", (1.0,), 30.0 + k)
    assert len(busy) == 3
    assert [s.end for s in busy.spans(39.0, 60.0, 100)] == [37.0, 38.0, 39.0]


def test_a_failed_batch_leaves_no_send_time() -> None:
    busy = BusyRecord()
    busy.sent(5, 10.0)
    busy.gone(5)
    busy.gone(6)  # never sent: nothing to drop, no error
    assert busy.done("H1", 5, "j", "m", (1.0,), 20.0).start == 19.0


async def test_the_leader_records_each_answered_batch_as_the_workers_ran_it(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = await start_cluster(nursery, 3, paced, tmp_path, monkeypatch)
    client = cluster.client("H2")
    job = await client.submit("quick", count=30)
    await wait_done(client, job.job_id)
    leader = cluster.services["H1"].leader
    now = trio.current_time()
    spans = leader.busy.spans(now, 600.0, 1000)
    # One span per batch a worker ran, on that worker, over the time it ran it.
    runs = sorted(paced.runs, key=lambda r: (r.end, r.node))
    assert len(spans) == len(runs) and sum(s.queries for s in spans) == 30
    for span, run in zip(sorted(spans, key=lambda s: (s.end, s.worker)), runs, strict=True):
        assert (span.worker, span.job_id, span.model) == (run.node, job.job_id, "quick")
        assert span.queries == len(run.indices)
        assert span.start == pytest.approx(run.start, abs=1e-6)
        assert span.end == pytest.approx(run.end, abs=1e-6)
    # And the dashboard built from it shows the job, its model's figures and the spans.
    sched = leader.sched
    assert sched is not None
    reply = dashboard.build("H1", sched, leader.busy, now, {"error": "not asked"})
    assert [(j["job_id"], j["done"], j["total"]) for j in reply.jobs] == [(job.job_id, 30, 30)]
    quick = reply.models["quick"]
    assert quick["query_count"] == 30
    assert quick["latency"]["median"] == pytest.approx(COSTS["quick"])
    assert len(reply.busy) == len([s for s in spans if s.end >= now - dashboard.BUSY_HORIZON])
