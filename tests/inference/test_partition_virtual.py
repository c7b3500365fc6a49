"""Inference across network partitions, on virtual time: only a majority schedules.

Five real :class:`~inference.service.InferenceService` nodes on an
:class:`~tests.helpers.memrpc_cluster.RpcCluster` (real SWIM membership, in-memory
RPC), with the toy :class:`~tests.inference.test_service_virtual.Paced` kind.  Each
node's lease comes from :class:`MajorityLease`, which grants leases as the SDFS
leader's majority lease does (the service's own fallback gives every leadership
term 1, see :func:`inference.service.majority_in_view`).  The file store is one
dict for every node: it is not partitioned here; the SDFS side of a partition is the
file store's own tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from inference.events import Takeover
from inference.leader import TERM_BATCHES, Lease
from inference.service import REPLICATION_WAIT, majority, majority_in_view
from net.errors import NoQuorum
from tests.helpers.memrpc_cluster import RpcCluster
from tests.inference.test_service_virtual import (
    Cluster,
    Paced,
    start_cluster,
    wait_done,
)


@dataclass
class MajorityLease:
    """Leases as ``SdfsLeader.lease_term()`` gives them, decided from the nodes' views.

    A node may hold the lease while it is alive, first in ring order in its own view,
    and sees a majority of the configured nodes live.  One node holds it at a time:
    a new holder gets the next term, and only once the previous holder no longer
    qualifies (its lease has expired), so terms only grow and two nodes never hold
    the same term."""

    rpc: RpcCluster
    term: int = 0
    holder: str | None = None
    granted: list[tuple[float, str, int]] = field(default_factory=list)

    def _qualifies(self, name: str) -> bool:
        node = self.rpc.nodes.get(name)
        if node is None:
            return False
        configured = {n.name for n in self.rpc.config.nodes}
        live = configured.intersection(node.peers.ring())
        return node.peers.leader() == name and len(live) >= majority(len(configured))

    def for_node(self, name: str) -> Lease:
        def lease() -> int | None:
            if self.holder == name:
                if self._qualifies(name):
                    return self.term
                self.holder = None  # expired
                return None
            if not self._qualifies(name):
                return None
            if self.holder is not None and self._qualifies(self.holder):
                return None  # someone else's lease has not expired
            self.term += 1
            self.holder = name
            self.granted.append((trio.current_time(), name, self.term))
            return self.term

        return lease


def assert_output_once(cluster: Cluster, job_id: str, prefix: str, n: int) -> None:
    """The job's output has every query once, in query order, and each one ran."""
    lines = cluster.files.data[f"outputs/{job_id}.jsonl"].decode().splitlines()
    inputs = [f"{prefix}/{i}" for i in range(n)]
    assert [json.loads(x)["input"] for x in lines] == inputs
    ran = {x for r in cluster.kind.runs for x in r.inputs}
    assert set(inputs) <= ran


def applied_by(cluster: Cluster, node: str, after: float) -> list[float]:
    return [a.time for a in cluster.applied if a.node == node and a.time > after]


def lost_majority_at(cluster: Cluster, node: str, others: list[str]) -> float:
    """When ``node``'s membership had removed enough of ``others`` to see a minority."""
    sim = cluster.rpc.sim.members[node]
    times = sorted(t for o in others for t, _ in sim.events_of("failed", o)[:1])
    configured = len(cluster.rpc.config.nodes)
    # Live = configured - removed; a minority once live < majority.
    k = configured - majority(configured) + 1
    return times[k - 1]


async def start(
    nursery: trio.Nursery, paced: Paced, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Cluster, MajorityLease]:
    leases: list[MajorityLease] = []

    def lease_for(name: str) -> Lease:
        return leases[0].for_node(name)

    def make_oracle(rpc: RpcCluster) -> None:
        leases.append(MajorityLease(rpc))

    cluster = await start_cluster(
        nursery, 5, paced, tmp_path, monkeypatch, before_services=make_oracle, lease_for=lease_for
    )
    return cluster, leases[0]


async def test_a_split_minority_leader_stops_and_after_the_heal_the_majoritys_state_wins(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, leases = await start(nursery, paced, tmp_path, monkeypatch)
    services = cluster.services
    n1, n2 = 600, 200
    job1 = await cluster.client("H5").submit("quick", count=n1)
    await trio.sleep(2.25)  # mid-job
    t_split = trio.current_time()
    minority, majority_side = ["H1", "H2"], ["H3", "H4", "H5"]
    cluster.rpc.partition(minority, majority_side)
    # At once H1 still holds its lease (its membership has not noticed), but only H2 of
    # its three standbys answers: a submission is applied there and not acknowledged.
    with pytest.raises(NoQuorum, match="could not copy it to a majority") as refused:
        await cluster.client("H2").submit("quick", pattern="unacked", count=50)
    assert "job-2 may run anyway" in str(refused.value)
    assert trio.current_time() == pytest.approx(t_split + REPLICATION_WAIT)

    # H3, first of the majority in ring order and H1's second standby, takes over from
    # its own copy under term 2 once H1's lease has expired.
    await cluster.rpc.wait_until(lambda: services["H3"].leader.active, timeout=30)
    t_lost = lost_majority_at(cluster, "H1", majority_side)
    assert leases.granted[1][1:] == ("H3", 2)
    assert leases.granted[1][0] >= t_lost
    (takeover,) = [a for a in cluster.applied if isinstance(a.event, Takeover)]
    assert takeover.node == "H3" and takeover.time >= t_lost
    assert services["H3"].leader.term == 2
    # H1 stopped: it applied nothing once its lease was gone (no batch assigned, no
    # result taken), and keeps its state as its copy, tagged with its term.
    assert not services["H1"].leader.active
    assert applied_by(cluster, "H1", after=t_lost) == []
    assert services["H1"].copy.scheduler is not None and services["H1"].copy.term == 1
    # A client on the minority side is told why, in one line; nothing is applied.
    for via in minority:
        with pytest.raises(NoQuorum, match="majority") as e:
            await cluster.client(via).submit("quick", pattern="lost", count=10)
        assert "\n" not in str(e.value)
    # The majority schedules: a new job is accepted there, and the old one goes on.
    job2 = await cluster.client("H4").submit("quick", pattern="second", count=n2)
    assert job2.job_id == "job-2"
    await trio.sleep(3.0)
    assert not services["H1"].leader.active  # still not, whatever H1's workers do
    assigned = [(t, node, a.worker) for t, node, a in cluster.assigns(since=t_split) if t > t_lost]
    assert assigned and {node for _, node, _ in assigned} == {"H3"}
    assert {w for _, _, w in assigned} == set(majority_side)

    # The heal: one membership again, H1 first in ring order; it takes over under term
    # 3 from the majority's state (term 2), not its own stale one (term 1).
    t_heal = trio.current_time()
    assert t_heal < 20.0
    cluster.rpc.heal()
    await cluster.rpc.wait_until(
        lambda: services["H1"].leader.active and services["H1"].leader.term == 3, timeout=60
    )
    assert [(node, term) for _, node, term in leases.granted] == [("H1", 1), ("H3", 2), ("H1", 3)]
    assert not services["H3"].leader.active
    sched = services["H1"].leader.sched
    assert sched is not None and sched.status("job-2")["total"] == n2  # not "unacked"
    takeovers = [a for a in cluster.applied if isinstance(a.event, Takeover)]
    assert [a.node for a in takeovers] == ["H3", "H1"]
    # Every query of every job appears exactly once in its output.
    client = cluster.client("H2")
    await wait_done(client, job1.job_id)
    await wait_done(client, job2.job_id)
    await client.get_output(job1.job_id, tmp_path / "out1.jsonl")
    await client.get_output(job2.job_id, tmp_path / "out2.jsonl")
    assert_output_once(cluster, job1.job_id, "quick", n1)
    assert_output_once(cluster, job2.job_id, "second", n2)
    assert not any(x.startswith("lost/") for r in paced.runs for x in r.inputs)
    # Neither output has a query of the job H1 never acknowledged (it may have run).
    outputs = b"".join(v for k, v in cluster.files.data.items() if k.startswith("outputs/"))
    assert b"unacked/" not in outputs and len(outputs.splitlines()) == n1 + n2
    # Each leadership gave out batch ids of its own term's range only.
    t1, t3 = leases.granted[1][0], leases.granted[2][0]
    for t, node, a in cluster.assigns():
        term = 1 if t < t1 else 2 if t < t3 else 3
        assert a.batch_id // TERM_BATCHES == term, (t, node, a.batch_id)


async def test_one_host_cut_off_then_healed_takes_the_majoritys_state_not_its_own(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster, leases = await start(nursery, paced, tmp_path, monkeypatch)
    services = cluster.services
    n1, n2, n3 = 300, 400, 50
    job1 = await cluster.client("H5").submit("quick", count=n1)
    await trio.sleep(2.25)
    rest = ["H2", "H3", "H4", "H5"]
    cluster.rpc.partition(["H1"], rest)
    await cluster.rpc.wait_until(lambda: services["H2"].leader.active, timeout=30)
    t_lost = lost_majority_at(cluster, "H1", rest)
    assert leases.granted[1][1:] == ("H2", 2) and leases.granted[1][0] >= t_lost
    assert applied_by(cluster, "H1", after=t_lost) == []
    with pytest.raises(NoQuorum, match="majority"):
        await cluster.client("H1").submit("quick", pattern="lost", count=5)
    # The majority finishes the first job and takes a second.
    await wait_done(cluster.client("H3"), job1.job_id)
    job2 = await cluster.client("H3").submit("quick", pattern="second", count=n2)
    await trio.sleep(1.0)
    stale = services["H1"].copy
    assert stale.scheduler is not None and stale.term == 1
    assert not stale.scheduler.forgotten(job1.job_id)  # H1's state: job-1 unfinished
    majority_seq = services["H2"].leader.seq

    # The heal: H1, first in ring order again, takes over under term 3 from the state
    # it fetches from the majority side, not from its own.
    cluster.rpc.heal()
    await cluster.rpc.wait_until(
        lambda: services["H1"].leader.active and services["H1"].leader.term == 3, timeout=60
    )
    sched = services["H1"].leader.sched
    assert sched is not None
    # The majority's state: job-1 finished and forgotten, job-2 known.
    assert sched.forgotten(job1.job_id)
    assert sched.status(job2.job_id)["total"] == n2
    assert services["H1"].leader.seq > majority_seq
    # Work goes on under H1, with H1 a worker again.
    job3 = await cluster.client("H1").submit("quick", pattern="third", count=n3)
    assert job3.job_id == "job-3"
    client = cluster.client("H4")
    for job in (job2, job3):
        await wait_done(client, job.job_id)
        await client.get_output(job.job_id, tmp_path / f"{job.job_id}.jsonl")
    assert_output_once(cluster, job1.job_id, "quick", n1)
    assert_output_once(cluster, job2.job_id, "second", n2)
    assert_output_once(cluster, job3.job_id, "third", n3)
    t_h1 = max(t for t, _, term in leases.granted if term == 3)
    assert any(a.worker == "H1" for t, _, a in cluster.assigns(since=t_h1))
    assert not any(x.startswith("lost/") for r in paced.runs for x in r.inputs)


def test_the_fallback_lease_is_term_1_while_a_majority_of_the_configured_nodes_is_live() -> None:
    class Ring:
        def __init__(self, names: list[str]) -> None:
            self.names = names

        def ring(self) -> list[str]:
            return self.names

    view = Ring(["H1", "H2", "H3"])
    lease = majority_in_view(view, ["H1", "H2", "H3", "H4", "H5"])  # type: ignore[arg-type]
    assert lease() == 1
    view.names = ["H1", "H2", "H9"]  # H9 is no configured node: it does not count
    assert lease() is None
    view.names = ["H1", "H2"]
    assert lease() is None
    assert [majority(n) for n in (1, 2, 3, 4, 5, 10)] == [1, 2, 2, 3, 3, 6]
