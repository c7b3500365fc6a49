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


def test_a_span_runs_from_the_schedulers_start_to_the_answer() -> None:
    busy = BusyRecord()
    # Queued behind another batch on the worker: it started when that one was answered.
    span = busy.done("H2", "job-1", "quick", 108.0, 110.0, (0.5, 0.5, 1.0))
    assert span == BusySpan("H2", "job-1", "quick", 108.0, 110.0, 3)
    # A batch another leader sent (no start known here): the processing time alone.
    assert busy.done("H3", "job-1", "m", None, 103.0, (2.0, 2.0)).start == 99.0
    # A clock that stepped back never gives a span that ends before it starts.
    span = busy.done("H3", "job-1", "m", 200.0, 150.0, ())
    assert span.start == span.end == 150.0


def test_spans_are_those_of_the_horizon_newest_first_cut_oldest_first_returned() -> None:
    busy = BusyRecord()
    for k in range(10):
        end = 100.0 + 10 * k  # ends 100, 110, ... 190
        busy.done("H1", "job-1", "m", end - 1.0, end, (1.0,))
    within = busy.spans(190.0, 35.0, limit=100)
    assert [s.end for s in within] == [160.0, 170.0, 180.0, 190.0]
    assert [s.end for s in busy.spans(190.0, 1000.0, limit=2)] == [180.0, 190.0]
    assert busy.spans(500.0, 60.0, limit=100) == []


def test_memory_is_bounded() -> None:
    busy = BusyRecord(max_spans=3)
    for k in range(10):
        busy.done("H1", "j", "m", 29.0 + k, 30.0 + k, (1.0,))
    assert len(busy) == 3
    assert [s.end for s in busy.spans(39.0, 60.0, 100)] == [37.0, 38.0, 39.0]


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
