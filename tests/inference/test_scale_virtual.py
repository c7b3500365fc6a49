"""The inference service at scale, on virtual time (see test_service_virtual.py).

Many jobs one after another leave nothing behind on the leader or its standby; a
worker that misses its first capacity request still gets work; a duplicate answer is
not logged as a query run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from inference.events import BatchDone, BatchLost, Takeover, WorkerStalled
from inference.leader import CAPACITY_TIMEOUT
from inference.scheduler import SchedulerConfig
from net.messages import AssignBatch, StoreAck
from tests.helpers.memrpc_cluster import RpcCluster
from tests.inference.test_service_virtual import (
    Paced,
    assert_each_query_once,
    start_cluster,
    timing_rows,
    wait_done,
)


async def test_jobs_one_after_another_leave_the_leader_and_standby_tables_bounded(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jobs, keep = 2000, 1000
    cluster = await start_cluster(nursery, 3, paced, tmp_path, monkeypatch)
    client = cluster.client("H3")
    leader, standby = cluster.services["H1"], cluster.services["H2"]
    for k in range(jobs):
        job = await client.submit("quick", pattern=f"j{k}", count=2)
        await wait_done(client, job.job_id, poll=0.1)
    await trio.sleep(2.0)  # the last output written, its Forget replicated
    sched = leader.leader.sched
    assert sched is not None and sched.config.keep_finished == keep
    snap = sched.snapshot()
    assert snap["jobs"] == snap["batches"] == snap["retired"] == []
    assert [f["job_id"] for f in snap["finished"]] == [f"job-{k}" for k in range(1001, 2001)]
    assert leader.leader._writing == set()
    # The standby's copy is the same, event for event.
    assert standby.copy.scheduler is not None and standby.copy.seq == leader.leader.seq
    assert standby.copy.scheduler.snapshot() == snap
    # The recent jobs still answer C4; an evicted one is read from its output file.
    assert (await client.status(f"job-{jobs}")).done == 2
    out = await client.get_output("job-1", tmp_path / "old.jsonl")
    assert (out.results, out.state) == (2, "done")
    assert len(cluster.files.data) == jobs
    # What went to the standby: events only (one snapshot, of an empty scheduler).
    sent = leader.replicator.sent
    assert sent.snapshots == 1 and sent.snapshot_bytes < 1024


async def test_a_worker_that_misses_its_first_capacity_request_gets_work(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow_until = CAPACITY_TIMEOUT + 1.0  # the first request and a retry time out

    def slow_link(rpc: RpcCluster) -> None:
        # H1 (the leader) to H3: slower than the capacity request's timeout for now.
        rpc.rpc.set_delay(rpc.node("H1").address, rpc.node("H3").address, CAPACITY_TIMEOUT)

    cluster = await start_cluster(nursery, 3, paced, tmp_path, monkeypatch, slow_link)
    await trio.sleep(slow_until)
    cluster.rpc.rpc.set_delay(cluster.rpc.node("H1").address, cluster.rpc.node("H3").address, None)
    await trio.sleep(10.0)  # a retry after the back-off gets through
    client = cluster.client("H2")
    job = await client.submit("quick", count=60)
    await wait_done(client, job.job_id)
    assert {r.node for r in paced.runs} == {"H1", "H2", "H3"}
    assert "H3" in cluster.services["H1"].leader.sched.workers()  # type: ignore[union-attr]


async def test_a_duplicate_answer_is_not_logged_as_a_query_run(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = await start_cluster(nursery, 3, paced, tmp_path, monkeypatch)
    client = cluster.client("H3")
    job = await client.submit("quick", count=40)
    await wait_done(client, job.job_id)
    await trio.sleep(1.0)
    assert_each_query_once(cluster, "H1", job.job_id, "quick", 40)
    before = timing_rows(tmp_path / "H1")
    assert sorted(int(r["query"]) for r in before) == list(range(40))
    # A worker's retried report arrives again (its first reply was lost), for a batch
    # of a job still running and for one of a job already forgotten.
    job2 = await client.submit("quick", pattern="two", count=400)
    done = [a.event for a in cluster.applied if isinstance(a.event, BatchDone)]
    await trio.sleep(1.0)
    done2 = [
        a.event
        for a in cluster.applied
        if isinstance(a.event, BatchDone) and a.event.results[0][1]["input"].startswith("two/")
    ]
    leader = cluster.services["H1"].leader
    for event in (done[0], done2[0]):
        leader.apply(event)
    after = timing_rows(tmp_path / "H1")
    assert len(after) == len(before) + sum(len(e.results) for e in done2)
    sched = leader.sched
    assert sched is not None and sched.duplicates == len(done[0].results) + len(done2[0].results)
    await wait_done(client, job2.job_id)


async def test_a_result_the_leader_acknowledged_survives_its_crash(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The leader answers a worker's result only once its standby holds it: a result
    acknowledged and then lost with the leader would leave its batch on the new
    leader until the batch timed out (60 s), since the worker does not send it again."""
    link = 0.2  # the leader to its standby, each way

    def slow_standby(rpc: RpcCluster) -> None:
        rpc.rpc.set_delay(rpc.node("H1").address, rpc.node("H2").address, link)

    cluster = await start_cluster(nursery, 3, paced, tmp_path, monkeypatch, slow_standby)
    client = cluster.client("H3")
    n = 300
    job = await client.submit("quick", count=n)
    # Crash H1 just after a batch ended on H3 (no delay to H1): H3's result is applied
    # but not yet on the standby (old code: and already acknowledged).
    await trio.sleep(1.0)
    on_h3 = sum(r.node == "H3" for r in paced.runs)
    await cluster.rpc.wait_until(lambda: sum(r.node == "H3" for r in paced.runs) > on_h3, 5)
    await trio.sleep(link / 4)
    t_crash = trio.current_time()
    cluster.rpc.crash("H1")
    await wait_done(client, job.job_id)
    took = [a for a in cluster.applied if a.node == "H2" and isinstance(a.event, Takeover)]
    assert len(took) == 1
    # Nothing waited for a batch timeout: every result reached the new leader.
    timed_out = [
        x
        for a in cluster.applied
        if a.node == "H2"
        for x in a.actions
        if isinstance(x, BatchLost) and "no answer" in x.reason
    ]
    assert timed_out == []
    finished = (await client.status(job.job_id)).finished_at
    timeout = SchedulerConfig().batch_timeout
    assert finished is not None and t_crash < took[0].time < finished < took[0].time + timeout
    await trio.sleep(1.0)
    # Each query is in the output once.  (A batch the old leader dispatched just
    # before it died, not yet on the standby, may run twice: its late answer is a
    # duplicate; and a result it had replicated but not acknowledged comes again.)
    inputs = [f"quick/{i}" for i in range(n)]
    lines = cluster.files.data[f"outputs/{job.job_id}.jsonl"].decode().splitlines()
    assert [json.loads(x)["input"] for x in lines] == inputs


async def test_workers_that_let_a_batch_time_out_are_asked_again_and_get_work(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every worker's first batch vanishes (as one a dying leader recorded but never
    sent): each times out and its worker stalls, with nothing left to answer.  Asked
    what it can run, a live worker is announced again, and the job completes."""
    cluster = await start_cluster(nursery, 2, paced, tmp_path, monkeypatch)
    for service in cluster.services.values():
        real = service.worker.assign
        dropped: list[int] = []

        def assign(request: AssignBatch, real: Any = real, dropped: list[int] = dropped) -> Any:
            if not dropped:
                dropped.append(request.batch_id)
                return StoreAck(True)  # taken, never run, never answered
            return real(request)

        monkeypatch.setattr(service.worker, "assign", assign)
    client = cluster.client("H2")
    job = await client.submit("quick", count=20)
    with trio.fail_after(3 * SchedulerConfig().batch_timeout):
        await wait_done(client, job.job_id)
    stalled = [x for a in cluster.applied for x in a.actions if isinstance(x, WorkerStalled)]
    assert sorted(x.worker for x in stalled) == ["H1", "H2"]
    assert (await client.status(job.job_id)).done == 20
