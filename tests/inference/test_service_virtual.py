"""The whole inference service (leader, hot standby, workers) on virtual time.

Every node of an :class:`~tests.helpers.memrpc_cluster.RpcCluster` runs a real
:class:`~inference.service.InferenceService` over its own membership (real SWIM
failure detection on the in-memory network) and :class:`~net.memrpc.MemoryRpc`,
with ``clock=trio.current_time`` and a file store in a dict.  Membership events reach
the service as ``node/app.py`` wires them.  Jobs are of a toy kind, :class:`Paced`,
whose batches take exactly ``cost x queries`` virtual seconds on the worker (one batch
at a time per worker, as the worker process runs them), so every time below is exact.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from config.topology import InferenceConfig
from inference.client import InferenceClient
from inference.events import (
    Action,
    Assign,
    BatchDone,
    BatchLost,
    Event,
    Query,
    Row,
    Takeover,
    WorkerDown,
)
from inference.files import FileStore
from inference.kinds.base import BatchOutput, WorkerContext
from inference.leader import TERM_BATCHES, Lease
from inference.scheduler import SchedulerConfig
from inference.service import InferenceService
from inference.worker import REPORT_RETRY_MAX_DELAY
from membership.peers import LEADER_RETRY_FIRST, LEADER_RETRY_MAX
from net.errors import Invalid
from net.messages import Ping
from tests.helpers.dictfiles import DictFiles
from tests.helpers.memrpc_cluster import RpcCluster

# Seconds per query of each toy model, on every worker.
COSTS = {"quick": 0.1, "slow": 0.3}


@dataclass(frozen=True)
class Run:
    """One batch a worker ran to the end: where, when, which queries."""

    node: str
    model: str
    start: float
    end: float
    indices: tuple[int, ...]
    inputs: tuple[str, ...]


class Paced:
    """A toy kind: query ``i`` of a job over COUNT inputs is ``PATTERN/i`` (``MODEL/i``
    without a pattern), so each job's inputs are its own; a batch holds
    its worker for ``COSTS[model]`` virtual seconds per query and reports that much per
    query.  Every batch that runs to the end is noted in :attr:`runs`."""

    name = "toy-paced"
    models: tuple[str, ...] = tuple(COSTS)

    def __init__(self) -> None:
        self.runs: list[Run] = []

    def canonical(self, model: str) -> str | None:
        return model.lower() if model.lower() in COSTS else None

    async def queries(
        self, files: FileStore, model: str, pattern: str | None, count: int | None
    ) -> list[str]:
        if count is None:
            raise Invalid("a paced job needs a COUNT")
        return [f"{pattern or model}/{i}" for i in range(count)]

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        node = ctx.cache.parent.name  # the node's data dir is named after it
        cost = COSTS[model]
        async with ctx.slot:  # one batch at a time, as in the worker process
            start = trio.current_time()
            await trio.sleep(cost * len(queries))
        indices, inputs = tuple(i for i, _ in queries), tuple(x for _, x in queries)
        self.runs.append(Run(node, model, start, trio.current_time(), indices, inputs))
        rows = tuple((i, {"input": name, "by": node}) for i, name in queries)
        return BatchOutput(rows, tuple(cost for _ in rows))

    def error_row(self, input: str, error: str) -> Row:
        return {"input": input, "error": error}

    def output_line(self, row: Row) -> dict[str, Any]:
        return dict(row)


@dataclass(frozen=True)
class Applied:
    """One event a leader applied, when, and the actions it returned."""

    time: float
    node: str
    event: Event
    actions: tuple[Action, ...]


@dataclass
class Cluster:
    """The nodes, their services, the toy kind's record and every event a leader applied."""

    rpc: RpcCluster
    kind: Paced
    files: DictFiles
    services: dict[str, InferenceService] = field(default_factory=dict)
    applied: list[Applied] = field(default_factory=list)

    def client(self, via: str) -> InferenceClient:
        return InferenceClient(self.rpc.node(via).peers, self.files)

    def assigns(self, since: float = 0.0) -> list[tuple[float, str, Assign]]:
        return [
            (a.time, a.node, x)
            for a in self.applied
            if a.time >= since
            for x in a.actions
            if isinstance(x, Assign)
        ]


async def start_cluster(
    nursery: trio.Nursery,
    n: int,
    kind: Paced,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    before_services: Callable[[RpcCluster], None] | None = None,
    lease_for: Callable[[str], Lease] | None = None,
) -> Cluster:
    """``before_services`` sees the converged cluster before any service starts;
    ``lease_for`` gives each node its lease (default: the service's fallback)."""
    rpc = RpcCluster(nursery, n, trace=True)
    await rpc.start_all()
    await rpc.wait_until(rpc.converged, timeout=60)
    if before_services is not None:
        before_services(rpc)
    cluster = Cluster(rpc, kind, DictFiles())
    config = dataclasses.replace(rpc.config, inference=SCENARIO_INFERENCE)
    for node in rpc.live():
        service = InferenceService(
            config,
            node.member.node,
            node.core,
            node.frames,
            cluster.files,
            data / node.name,
            clock=trio.current_time,
            view=node.peers,
            lease=lease_for(node.name) if lease_for is not None else None,
        )
        cluster.services[node.name] = service
        node.serve(service.handle)
        node.member.service.listeners.append(service.on_membership_event)
        # Leader.apply is where every scheduler event passes: noting each (with the
        # time and the actions it returned) lets the tests assert exact times.
        real_apply = service.leader.apply

        def spy(event: Event, name: str = node.name, real: Any = real_apply) -> list[Action]:
            leading = cluster.services[name].leader.active
            actions: list[Action] = real(event)
            if leading:
                cluster.applied.append(Applied(trio.current_time(), name, event, tuple(actions)))
            return actions

        monkeypatch.setattr(service.leader, "apply", spy)
    # Every node answers before any starts leading (as a node serves before it joins).
    for node in rpc.live():
        await node.nursery.start(cluster.services[node.name].run)
    return cluster


async def wait_done(client: InferenceClient, job_id: str, poll: float = 0.5) -> float:
    while True:
        status = await client.status(job_id)
        if status.state in ("done", "failed"):
            assert status.finished_at is not None
            return float(status.finished_at)
        await trio.sleep(poll)


# --- what the scenarios share --------------------------------------------------------------

COST = COSTS["quick"]
# Queries per batch the scheduler settles on for "quick": its batches are capped at
# max_batch_seconds (0.5 s here, set for these scenarios, whose times were worked out
# for it) of estimated work, under the default batch size of 8.
SCENARIO_INFERENCE = InferenceConfig(max_batch_seconds=0.5)
BATCH = 5
BATCH_TIME = BATCH * COST


def test_the_batches_are_what_the_scenarios_assume() -> None:
    config = SchedulerConfig(max_batch_seconds=SCENARIO_INFERENCE.max_batch_seconds)
    assert config.max_batch_seconds is not None
    assert BATCH == int(config.max_batch_seconds / COST + 1e-9) < config.batch_size


def next_slot_free(after: float) -> float:
    """The first instant at or after ``after`` when workers that never stalled free a
    slot: each probes one query in [0, COST], then runs BATCH_TIME batches back to back."""
    k = math.ceil((after - COST) / BATCH_TIME - 1e-9)
    return COST + k * BATCH_TIME


def report_attempts(finished: float, until: float) -> list[float]:
    """When a worker offers a batch's result to a leader, from ``finished`` on, while
    every attempt is refused at once (call_leader's back-off, capped for workers)."""
    times, t, delay = [finished], finished, LEADER_RETRY_FIRST
    while t < until:
        t += delay
        times.append(t)
        delay = min(delay * 2, REPORT_RETRY_MAX_DELAY)
    return times


def first_report(finished: list[float], takeover: float) -> float:
    """When the first of the results of batches ``finished`` while there was no leader
    reaches the new one, which took over at ``takeover``."""
    return min(next(t for t in report_attempts(f, takeover + 1) if t >= takeover) for f in finished)


def copy_on(cluster: Cluster, node: str) -> tuple[str | None, int]:
    """Whose scheduler ``node`` holds a standby copy of, and as of which event."""
    copy = cluster.services[node].copy
    return copy.leader, copy.seq


def failed_at(cluster: Cluster, observer: str, name: str) -> float:
    ((t, _),) = cluster.rpc.sim.members[observer].events_of("failed", name)
    return t


def detection(cluster: Cluster, name: str, crashed: float) -> float:
    """When membership declares ``name`` failed: its first unanswered ping after the
    crash, plus ping_timeout (suspected), plus cleanup_time (failed)."""
    config = cluster.rpc.config.membership
    first_ping = cluster.rpc.sim.sent(Ping, dst=name, since=crashed)[0].time
    # A monitor pings every ping_duration; so detection takes at most the three together.
    assert crashed < first_ping <= crashed + config.ping_duration
    return first_ping + config.ping_timeout + config.cleanup_time


def assert_each_query_once(cluster: Cluster, leader: str, job_id: str, prefix: str, n: int) -> None:
    """One result per query index, and every query ran to the end exactly once.

    The job's inputs are ``PREFIX/0`` .. ``PREFIX/n-1`` (see :meth:`Paced.queries`)."""
    inputs = [f"{prefix}/{i}" for i in range(n)]
    sched = cluster.services[leader].leader.sched
    assert sched is not None
    # Written, so forgotten: the results are in the output file only.
    assert sched.forgotten(job_id) and job_id not in sched.job_ids()
    assert sched.duplicates == sched.strays == 0
    ran = Counter(x for r in cluster.kind.runs for x in r.inputs if x.startswith(f"{prefix}/"))
    assert sorted(ran) == sorted(inputs) and set(ran.values()) == {1}
    # The output file the leader wrote says the same, one line per query, in order.
    lines = cluster.files.data[f"outputs/{job_id}.jsonl"].decode().splitlines()
    assert [json.loads(x)["input"] for x in lines] == inputs


def timing_rows(data_dir: Path) -> list[dict[str, str]]:
    with (data_dir / "query_timings.csv").open() as f:
        return list(csv.DictReader(f))


def lost_queries(cluster: Cluster, lost: list[BatchLost]) -> list[int]:
    sent = {a.batch_id: a for _, _, a in cluster.assigns()}
    return sorted(i for b in lost for i, _ in sent[b.batch_id].queries)


# --- the scenarios ---------------------------------------------------------------------------


async def test_the_standby_takes_over_mid_job_and_every_query_runs_once(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 200
    cluster = await start_cluster(nursery, 5, paced, tmp_path, monkeypatch)
    services = cluster.services
    client = cluster.client("H5")
    job = await client.submit("quick", count=n)
    assert trio.current_time() == 0.0

    # Mid-job and mid-batch: H1 (leader and worker) runs [2.1, 2.6], and holds the
    # next batch in its second slot.
    await trio.sleep(2.25)
    t_crash = trio.current_time()
    assert copy_on(cluster, "H2") == ("H1", services["H1"].leader.seq)  # the standby is current
    cluster.rpc.crash("H1")
    t_done = await wait_done(client, job.job_id)

    # H2, next in ring order, takes over the instant its membership declares H1 failed.
    t_failed = detection(cluster, "H1", t_crash)
    assert failed_at(cluster, "H2", "H1") == pytest.approx(t_failed, abs=1e-9)
    assert t_failed == pytest.approx(6.596426655840455, abs=1e-9)  # seed 1's ping phases
    (takeover,) = [a for a in cluster.applied if isinstance(a.event, Takeover)]
    assert (takeover.node, takeover.time) == ("H2", failed_at(cluster, "H2", "H1"))
    # Under lease term 1 (the fallback's): its batch ids start at TERM_BATCHES.
    assert takeover.event == Takeover(("H2", "H3", "H4", "H5"), takeover.time, TERM_BATCHES)
    # H1's two batches (the one it ran, the one queued behind it) go back to the queue;
    # nothing is dispatched yet: every survivor still holds two batches, whose results
    # it could not hand to any leader since the crash.
    lost = [x for x in takeover.actions if isinstance(x, BatchLost)]
    assert [(b.worker, b.requeued) for b in lost] == [("H1", BATCH), ("H1", BATCH)]
    assert not [x for x in takeover.actions if isinstance(x, Assign)]

    # Work resumes when the first held result reaches H2: the survivors finished their
    # batches at 2.6 and 3.1 and have offered the results every 0.25 s since.
    stuck = [r.end for r in paced.runs if r.node != "H1" and t_crash < r.end <= t_failed]
    assert sorted(set(stuck)) == [2.6, 3.1] and len(stuck) == 8
    t_resume = first_report(stuck, t_failed)
    assert t_resume == pytest.approx(6.65, abs=1e-9)
    after = cluster.assigns(since=t_failed)
    assert after[0][0] == pytest.approx(t_resume, abs=1e-9)
    assert {node for _, node, _ in after} == {"H2"}
    # The lost queries go out first, to survivors.
    first_two = after[:2]
    assert sorted(i for _, _, a in first_two for i, _ in a.queries) == lost_queries(cluster, lost)
    assert {a.worker for _, _, a in after} <= {"H2", "H3", "H4", "H5"}

    # Every query exactly once, and the time the rates predict.  Done at t_resume: each
    # worker's probe (one query), H1's four batches (ending 0.6 .. 2.1), and the six of
    # each survivor (ending 0.6 .. 3.1); the rest runs on four workers, BATCH each per
    # BATCH_TIME.
    assert_each_query_once(cluster, "H2", job.job_id, "quick", n)
    done = 5 + 4 * BATCH + 4 * 6 * BATCH
    assert sum(len(r.indices) for r in paced.runs if r.end <= t_resume) == done
    rounds = math.ceil((n - done) / (4 * BATCH))
    assert t_done == pytest.approx(t_resume + rounds * BATCH_TIME, abs=1e-9)
    assert t_done == pytest.approx(8.15, abs=1e-9)
    # Without the crash: the probe, then ceil(195 / 25) rounds on five workers (4.1 s).

    # The two leaders' timing logs (query_timings.csv) together list every query once,
    # each under its job and model, the batches H2 adopted from H1 included.
    logged = timing_rows(tmp_path / "H1") + timing_rows(tmp_path / "H2")
    assert sorted(int(r["query"]) for r in logged) == list(range(n))
    assert {(r["job_id"], r["model"]) for r in logged} == {(job.job_id, "quick")}

    # The new leader's standby is H3, and its copy is current.
    leader = services["H2"].leader.state()
    assert leader is not None
    await cluster.rpc.wait_until(
        lambda: copy_on(cluster, "H3") == ("H2", services["H2"].leader.seq), timeout=5
    )
    assert services["H3"].copy.scheduler is not None
    assert services["H3"].copy.scheduler.snapshot() == leader[0].snapshot()


async def test_a_worker_dying_mid_batch_has_its_batches_requeued_when_detected(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 400
    cluster = await start_cluster(nursery, 5, paced, tmp_path, monkeypatch)
    client = cluster.client("H5")
    job = await client.submit("quick", count=n)
    await trio.sleep(2.25)  # H4 runs [2.1, 2.6] and holds the next batch
    t_crash = trio.current_time()
    cluster.rpc.crash("H4")
    t_done = await wait_done(client, job.job_id)

    # The leader hears of it from its own membership and requeues H4's two batches then.
    t_failed = detection(cluster, "H4", t_crash)
    assert failed_at(cluster, "H1", "H4") == pytest.approx(t_failed, abs=1e-9)
    (down,) = [a for a in cluster.applied if isinstance(a.event, WorkerDown)]
    assert (down.node, down.time) == ("H1", failed_at(cluster, "H1", "H4"))
    assert down.event == WorkerDown("H4", down.time)
    lost = [x for x in down.actions if isinstance(x, BatchLost)]
    assert [(b.worker, b.requeued, b.reason) for b in lost] == [
        ("H4", BATCH, "worker H4 is down"),
        ("H4", BATCH, "worker H4 is down"),
    ]
    # Until then nothing was sent to H4 (its slots looked busy); from then on its queries
    # are first in line, and go out at the next instant a survivor frees a slot.
    assert all(a.worker != "H4" for t, _, a in cluster.assigns() if t > t_crash)
    after = cluster.assigns(since=t_failed)
    t_requeue = next_slot_free(t_failed)
    assert after[0][0] == after[1][0] == pytest.approx(t_requeue, abs=1e-9)
    assert t_failed < t_requeue < t_failed + BATCH_TIME
    assert sorted(i for _, _, a in after[:2] for i, _ in a.queries) == lost_queries(cluster, lost)

    # Every query once; the time is what four workers' rates predict, since they never
    # idled: H4 did its probe and four batches (ending 0.6 .. 2.1); everything else, the
    # requeued queries included, ran on the other four, BATCH per BATCH_TIME each.
    assert_each_query_once(cluster, "H1", job.job_id, "quick", n)
    assert sum(len(r.indices) for r in paced.runs if r.node == "H4") == 1 + 4 * BATCH
    rounds = math.ceil((n - 5 - 4 * BATCH) / (4 * BATCH))
    assert t_done == pytest.approx(COST + rounds * BATCH_TIME, abs=1e-9)
    assert t_done == pytest.approx(9.6, abs=1e-9)


async def test_two_jobs_under_the_fair_policy_get_the_same_query_rate(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = await start_cluster(nursery, 5, paced, tmp_path, monkeypatch)
    client = cluster.client("H3")
    quick = await client.submit("quick", count=600)
    slow = await client.submit("slow", count=300)
    rates_mid: dict[str, Any] = {}

    async def sample_c1() -> None:
        await trio.sleep(15.0)
        rates_mid.update(await client.rates())

    nursery.start_soon(sample_c1)
    t_slow = await wait_done(client, slow.job_id)
    t_quick = await wait_done(client, quick.job_id)

    # Equal query rates r for both: r x 0.1 s + r x 0.3 s of work per second fills the
    # five workers, so r = 5 / 0.4 = 12.5 queries/s each.
    predicted = 5 / (COSTS["quick"] + COSTS["slow"])
    start = max(min(r.start for r in paced.runs if r.model == m) for m in COSTS)
    end = min(t_slow, t_quick)
    assert start == pytest.approx(0.1, abs=1e-9) and end == pytest.approx(24.4, abs=1e-9)
    rate = {
        m: sum(len(r.indices) for r in paced.runs if r.model == m and start < r.end <= end)
        / (end - start)
        for m in COSTS
    }
    # Within 3% of each other and of the prediction: the policy equalises queries
    # dispatched, so over this window they differ by at most about a batch per slot.
    assert abs(rate["quick"] - rate["slow"]) <= 0.03 * predicted
    for m in COSTS:
        assert rate[m] == pytest.approx(predicted, rel=0.03)
        # C1 on the leader says the same over its 10 s window, half way through.
        assert rates_mid[m]["query_rate"] == pytest.approx(predicted, rel=0.05)
    # Equal rates mean unequal worker time: the slow job got three times the quick one's.
    busy = {
        m: sum(r.end - r.start for r in paced.runs if r.model == m and r.end <= end) for m in COSTS
    }
    assert busy["slow"] / busy["quick"] == pytest.approx(COSTS["slow"] / COSTS["quick"], rel=0.05)
    # Then the quick job runs alone, on every worker: what is left at 50 queries/s.
    left = 600 - sum(len(r.indices) for r in paced.runs if r.model == "quick" and r.end <= end)
    assert t_quick == pytest.approx(end + left / (5 / COST), abs=BATCH_TIME)
    assert_each_query_once(cluster, "H1", quick.job_id, "quick", 600)
    assert_each_query_once(cluster, "H1", slow.job_id, "slow", 300)


async def test_when_the_standby_dies_first_the_next_member_becomes_standby_and_takes_over(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 600
    cluster = await start_cluster(nursery, 5, paced, tmp_path, monkeypatch)
    services = cluster.services
    client = cluster.client("H5")
    job = await client.submit("quick", count=n)
    await trio.sleep(2.25)
    t_crash2 = trio.current_time()
    cluster.rpc.crash("H2")  # the standby (and a worker)
    await trio.sleep(2.0)
    t_failed2 = detection(cluster, "H2", t_crash2)
    # Three standbys (two make a majority of five with H1, and a spare): H3 and H4 are
    # current all along; H5 has nothing yet, as H2 is a standby to H1 until it is
    # found failed.
    assert copy_on(cluster, "H3") == ("H1", services["H1"].leader.seq)
    assert copy_on(cluster, "H4") == ("H1", services["H1"].leader.seq)
    assert copy_on(cluster, "H5") == (None, 0)
    await trio.sleep(6.0)
    # H1 dropped H2 as a worker when it learnt of the failure, and H3 became its standby.
    (down,) = [a for a in cluster.applied if isinstance(a.event, WorkerDown)]
    assert (down.node, down.event) == ("H1", WorkerDown("H2", t_failed2))
    t_crash1 = trio.current_time()
    assert t_crash1 == 10.25  # mid-batch again: H1 runs [10.1, 10.6]
    assert copy_on(cluster, "H3") == ("H1", services["H1"].leader.seq)
    assert copy_on(cluster, "H5") == ("H1", services["H1"].leader.seq)  # H2's successor
    cluster.rpc.crash("H1")
    t_done = await wait_done(client, job.job_id)

    t_failed1 = detection(cluster, "H1", t_crash1)
    (takeover,) = [a for a in cluster.applied if isinstance(a.event, Takeover)]
    assert (takeover.node, takeover.time) == ("H3", failed_at(cluster, "H3", "H1"))
    assert takeover.time == pytest.approx(t_failed1, abs=1e-9)
    assert takeover.event == Takeover(("H3", "H4", "H5"), takeover.time, TERM_BATCHES)
    # Only H1's batches were left to requeue: H2's went back when it was detected.
    lost = [x for x in takeover.actions if isinstance(x, BatchLost)]
    assert [(b.worker, b.requeued) for b in lost] == [("H1", BATCH), ("H1", BATCH)]
    stuck = [r.end for r in paced.runs if r.node != "H1" and t_crash1 < r.end <= t_failed1]
    assert sorted(set(stuck)) == [10.6, 11.1]
    t_resume = first_report(stuck, t_failed1)
    assert cluster.assigns(since=t_failed1)[0][0] == pytest.approx(t_resume, abs=1e-9)

    # Every query once, in the time the rates predict.  Done by t_resume: the probes,
    # H2's four batches (to 2.1), H1's twenty (to 10.1), the twenty-two of each of H3, H4
    # and H5 (to 11.1); the rest on three workers.
    assert_each_query_once(cluster, "H3", job.job_id, "quick", n)
    done = 5 + 4 * BATCH + 20 * BATCH + 3 * 22 * BATCH
    assert sum(len(r.indices) for r in paced.runs if r.end <= t_resume) == done
    rounds = math.ceil((n - done) / (3 * BATCH))
    assert t_done == pytest.approx(t_resume + rounds * BATCH_TIME, abs=1e-9)
    assert t_done == pytest.approx(19.65, abs=1e-9)


async def test_a_new_leader_writes_the_output_the_old_one_died_writing_and_takes_new_jobs(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n, put_time = 200, 1.0
    cluster = await start_cluster(nursery, 5, paced, tmp_path, monkeypatch)
    store, real_put = cluster.files, cluster.files.put
    puts: list[tuple[float, str]] = []  # (when a write began, what)

    async def slow_put(local: Path, name: str) -> None:  # a store that takes its time
        puts.append((trio.current_time(), name))
        await trio.sleep(put_time)
        await real_put(local, name)

    monkeypatch.setattr(store, "put", slow_put)
    client = cluster.client("H5")
    job = await client.submit("quick", count=n)
    # No crash yet: the probe, then ceil(195 / 25) rounds on five workers.
    assert await wait_done(client, job.job_id) == pytest.approx(COST + 8 * BATCH_TIME)
    await trio.sleep_until(4.5)
    assert [name for _, name in puts] == ["outputs/job-1.jsonl"]
    assert puts[0][0] == pytest.approx(4.1)
    assert "outputs/job-1.jsonl" not in store.data  # H1 is still writing it
    t_crash = trio.current_time()
    cluster.rpc.crash("H1")
    job2 = await client.submit("quick", pattern="second", count=2 * 4 * BATCH)
    t_accepted = trio.current_time()

    # H2 took over and wrote job-1's output at once, from its copy of the results.
    t_failed = detection(cluster, "H1", t_crash)
    assert [name for _, name in puts] == ["outputs/job-1.jsonl"] * 2
    assert puts[1][0] == pytest.approx(t_failed, abs=1e-9)
    # The client's C4 was refused until then, retrying with call_leader's back-off; the
    # first attempt after the takeover was accepted, and job ids carry on.
    attempts = [t_crash]
    while attempts[-1] < t_failed:
        delay = min(LEADER_RETRY_FIRST * 2 ** (len(attempts) - 1), LEADER_RETRY_MAX)
        attempts.append(attempts[-1] + delay)
    assert t_accepted == pytest.approx(attempts[-1], abs=1e-9)
    assert t_accepted == pytest.approx(9.0, abs=1e-9)
    assert job2.job_id == "job-2"
    # The copy's cost estimates came along: no probing, two full rounds on four workers.
    assert await wait_done(client, job2.job_id) == pytest.approx(t_accepted + 2 * BATCH_TIME)
    out = await client.get_output(job.job_id, tmp_path / "out.jsonl")
    assert (out.results, out.state) == (n, "done")
    assert_each_query_once(cluster, "H2", job.job_id, "quick", n)
    await client.get_output(job2.job_id, tmp_path / "out2.jsonl")  # waits for its write
    assert_each_query_once(cluster, "H2", job2.job_id, "second", 2 * 4 * BATCH)


async def test_a_timings_log_that_cannot_be_written_loses_no_result(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    n = 100
    # H1 will lead; where its query_timings.csv goes is a directory, so every append
    # fails (as on a full disk, or where the file cannot be created) until it goes.
    blocked = tmp_path / "H1" / "query_timings.csv"
    blocked.mkdir(parents=True)
    cluster = await start_cluster(nursery, 5, paced, tmp_path, monkeypatch)
    client = cluster.client("H5")
    job = await client.submit("quick", count=n)
    t_fixed = 1.05  # between batches
    await trio.sleep_until(t_fixed)
    blocked.rmdir()
    with trio.fail_after(60):
        await wait_done(client, job.job_id)

    # Every result reached the scheduler and the output, the failing appends included.
    assert_each_query_once(cluster, "H1", job.job_id, "quick", n)
    done = [a for a in cluster.applied if isinstance(a.event, BatchDone)]
    before = [a for a in done if a.time < t_fixed]
    assert before and len(before) < len(done)
    # Said once when it broke and once when it worked again, not per batch.
    lines = [r.getMessage() for r in caplog.records if r.name == "inference.H1"]
    broke = [x for x in lines if x.startswith("cannot append")]
    assert broke == [
        f"cannot append to {blocked}: Is a directory; query timings are not logged until "
        "it works again (results are not affected)"
    ]
    resumed = [x for x in lines if "logged to" in x]
    missed = len(before)
    assert resumed == [f"query timings are logged to {blocked} again ({missed} batches missed)"]
    # The rows of every batch answered after the fix are there, each once.
    logged = sorted(int(r["query"]) for r in timing_rows(tmp_path / "H1"))
    after = sorted(
        i for a in done if a.time > t_fixed and isinstance(a.event, BatchDone)
        for i, _ in a.event.results
    )  # fmt: skip
    assert logged == after
