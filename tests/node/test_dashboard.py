"""The dashboard's data: the leader's snapshot builder (pure, on simulated time), its
bounds, and the node's answer when it does not lead."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import trio
import trio.testing

from config.topology import profile
from inference.busy import BusyRecord
from inference.scheduler import Forget, Scheduler, SchedulerConfig
from net.errors import ErrorKind
from net.messages import (
    BusySpan,
    Dashboard,
    DashboardRequest,
    Failure,
    VersionRecord,
    VersionState,
)
from net.rpc import MAX_FRAME
from net.wire import decode, encode
from node import dashboard
from node.app import NodeApp
from sdfs.leader import LeaderState
from sdfs.metadata import Metadata
from tests.helpers.schedsim import SchedSim

COMMITTED = int(VersionState.COMMITTED)


def record(name: str, version: int, size: int) -> VersionRecord:
    return VersionRecord(name, version, f"put-{name}-{version}", size, "0" * 64, COMMITTED)


def run_jobs(jobs: int, queries: int, until: float) -> SchedSim:
    sim = SchedSim(Scheduler(SchedulerConfig(batch_size=2)), {"quick": 0.5})
    for w in ("H1", "H2"):
        sim.worker_up(w)
    for _ in range(jobs):
        sim.submit("quick", queries)
    sim.run_until(until)
    return sim


def test_jobs_show_progress_and_their_workers_newest_first() -> None:
    sim = run_jobs(jobs=2, queries=8, until=1.2)  # two batches of 2 answered per worker
    jobs = dashboard.jobs_view(sim.scheduler, ())
    assert [j["job_id"] for j in jobs] == ["job-2", "job-1"]
    for j in jobs:
        assert j["state"] == "running" and j["total"] == 8 and 0 < j["done"] < 8
        assert j["workers"] and set(j["workers"]) <= {"H1", "H2"}
    assert sum(j["done"] for j in jobs) == 4  # 2 workers x 1 batch of 2 in 1.2 s
    workers = dashboard.workers_view(sim.scheduler)
    assert set(workers) == {"H1", "H2"}
    assert all(w["batches"] == 1 and w["jobs"] and not w["stalled"] for w in workers.values())


def test_a_finished_job_stays_listed_after_the_scheduler_forgets_it() -> None:
    sim = run_jobs(jobs=1, queries=4, until=10.0)
    assert dashboard.jobs_view(sim.scheduler, ())[0]["state"] == "done"
    sim.feed(Forget("job-1"))  # its output is in the store
    assert dashboard.jobs_view(sim.scheduler, ()) == []  # not among the scheduler's own...
    [job] = dashboard.jobs_view(sim.scheduler, ["job-1", "job-99"])  # ...but known
    assert (job["job_id"], job["state"], job["done"], job["workers"]) == ("job-1", "done", 4, [])


def test_at_most_max_jobs_are_listed() -> None:
    sim = run_jobs(jobs=dashboard.MAX_JOBS + 5, queries=1, until=0.0)
    jobs = dashboard.jobs_view(sim.scheduler, ())
    assert len(jobs) == dashboard.MAX_JOBS
    assert jobs[0]["job_id"] == f"job-{dashboard.MAX_JOBS + 5}"


def test_each_models_rate_is_sampled_over_the_last_minute() -> None:
    sim = run_jobs(jobs=1, queries=40, until=30.0)  # 4 queries/s from 0.5 s to 10 s
    now = 30.0
    models = dashboard.models_view(sim.scheduler, now)
    quick = models["quick"]
    assert quick["query_count"] == 40
    assert set(quick["latency"]) >= {"mean", "median", "p90", "p95", "p99"}
    series = quick["rates"]
    assert [t for t, _ in series] == pytest.approx([now - 50.0 + 2.0 * k for k in range(26)])
    assert len(series) == dashboard.RATE_SPAN / dashboard.RATE_STEP + 1
    by_time = dict((round(t), r) for t, r in series)
    assert by_time[10] == pytest.approx(4.0, rel=0.15)  # the whole job in the window
    assert by_time[22] == 0.0 and by_time[30] == 0.0  # done by then
    assert by_time[-20] == 0.0  # before it started


def test_sdfs_per_node_counts_every_version_it_holds_and_lists_the_newest_files() -> None:
    md = Metadata(replication=3, keep=5)
    md.rebuild(
        {
            "H1": [record("a", 1, 100), record("a", 2, 120), record("b", 1, 7)],
            "H2": [record("a", 2, 120), record("c", 1, 50)],
            "H3": [record("b", 1, 7), record("c", 1, 50)],
            "H9": [record("c", 1, 50)],  # not live: counted nowhere
        }
    )
    for at, name in ((5.0, "b"), (6.0, "c"), (7.0, "a")):
        md.touch(name, at)
    out = dashboard.sdfs_summary(md, ["H1", "H2", "H3"], files=2)
    assert out["nodes"] == {
        "H1": {"files": 2, "bytes": 227},
        "H2": {"files": 2, "bytes": 170},
        "H3": {"files": 2, "bytes": 57},
    }
    assert (out["total_files"], out["total_bytes"]) == (3, 120 + 7 + 50)
    assert [f["name"] for f in out["files"]] == ["a", "c"]  # the two changed last
    a, c = out["files"]
    assert (a["replicas"], a["versions"], a["bytes"]) == (["H1", "H2"], [2, 1], 120)
    assert c["replicas"] == ["H2", "H3"]
    assert dashboard.sdfs_summary(md, ["H1"], files=0)["files"] == []


def test_the_reply_fits_a_frame_at_its_bounds() -> None:
    sim = run_jobs(jobs=dashboard.MAX_JOBS + 5, queries=3, until=5.0)
    busy = BusyRecord()
    for k in range(3 * dashboard.MAX_SPANS):
        end = 100.0 + k * 0.01
        busy.done(f"worker-{k % 50:02d}", f"job-{k}", "x" * 40, end - 0.1, end, (0.1,))
    md = Metadata(replication=4, keep=5)
    names = [f"images/{'n' * 180}-{k:06d}" for k in range(2000)]
    md.rebuild({f"H{i}": [record(n, v, 10**9) for n in names for v in (1, 2)] for i in range(4)})
    sdfs = dashboard.sdfs_summary(md, [f"H{i}" for i in range(4)], dashboard.MAX_FILES)
    now = 100.0 + 3 * dashboard.MAX_SPANS * 0.01
    reply = dashboard.build("H1", sim.scheduler, busy, now, sdfs)
    assert len(reply.jobs) == dashboard.MAX_JOBS
    assert len(reply.busy) == dashboard.MAX_SPANS
    assert len(reply.sdfs["files"]) == dashboard.MAX_FILES
    wire = encode(reply)
    assert len(wire) < MAX_FRAME // 8
    assert decode(wire) == reply
    body = dashboard.to_json(reply, "H3")
    assert body["served_by"] == "H3" and body["leader"] == "H1"
    assert body["busy"][0] == list(dataclasses.astuple(reply.busy[0]))
    assert isinstance(reply.busy[0], BusySpan)


async def test_a_node_that_does_not_lead_answers_not_ready(tmp_path: Path) -> None:
    config = dataclasses.replace(profile("test"), secret="a-test-secret-of-enough-bytes-0123")
    node = NodeApp(config, config.nodes[0], tmp_path)
    reply = await node.handle_request(DashboardRequest(50), node.me.address)
    assert isinstance(reply, Failure) and reply.kind == ErrorKind.NOT_READY
    assert "not the scheduler" in reply.error
    assert not isinstance(reply, Dashboard)


def test_the_sdfs_summary_is_counted_in_slices_and_survives_changes_between_them() -> None:
    md = Metadata(replication=2, keep=5)
    md.rebuild({"H1": [record(f"f{k:02d}", 1, 10) for k in range(25)]})
    steps = dashboard.sdfs_summary_steps(md, ["H1"], files=30, chunk=10)
    next(steps)  # 10 files counted
    del md.files["f15"]  # deleted meanwhile: skipped
    next(steps)  # 20
    with pytest.raises(StopIteration) as done:
        next(steps)
    summary = done.value.value
    assert summary["total_files"] == 24 and summary["nodes"]["H1"] == {"files": 24, "bytes": 240}
    assert len(summary["files"]) == 24 and "f15" not in {f["name"] for f in summary["files"]}


async def test_the_leader_answers_a_stale_sdfs_summary_while_it_counts_the_next(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    config = dataclasses.replace(profile("test"), secret="a-test-secret-of-enough-bytes-0123")
    node = NodeApp(config, config.nodes[0], tmp_path)
    md = Metadata(replication=2, keep=5)
    md.rebuild({"H1": [record("a", 1, 10)]})
    node.sdfs.leader.metadata, node.sdfs.leader.state = md, LeaderState.READY
    source = node.dashboard
    first = await source._sdfs_summary(5)
    assert first["total_files"] == 1
    md.add_inventory("H1", [record("b", 1, 10)])
    assert await source._sdfs_summary(5) is first  # fresh for SDFS_TTL
    await trio.sleep(dashboard.SDFS_TTL)
    async with trio.open_nursery() as nursery:
        node._nursery = nursery
        assert await source._sdfs_summary(5) is first  # stale: answered, and recounted
    assert (await source._sdfs_summary(5))["total_files"] == 2
    # Another table size is counted at once.
    assert len((await source._sdfs_summary(1))["files"]) == 1
    node.sdfs.leader.state = LeaderState.REBUILDING
    await trio.sleep(dashboard.SDFS_TTL)
    assert "rebuilding" in (await source._sdfs_summary(3))["error"]
