"""``/metrics`` (web.metrics) against real cores on virtual time: names, labels, values,
and text that prometheus_client's own parser reads back."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from config.topology import profile
from inference.scheduler import Action, Assign, Scheduler, SchedulerConfig
from net.messages import Status
from net.meters import SECONDS_BUCKETS
from node.app import NodeApp
from sdfs.store import ReplicaStore
from tests.helpers.corenet import CoreNet
from tests.helpers.sdfs_cluster import SdfsCluster
from tests.sdfs.test_store import put
from web import metrics
from web.app import build_app

CAP = {"threads": 2, "gpu": None, "slots": 1}


class _Families(Collector):
    def __init__(self, make: Callable[[], Iterable[Metric]]) -> None:
        self.make = make

    def collect(self) -> Iterable[Metric]:
        return self.make()


def scrape_text(make: Callable[[], Iterable[Metric]]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(make))
    return generate_latest(registry).decode()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of the exposition, by (sample name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("idunno_") and family.documentation, family.name
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def assigns(actions: list[Action]) -> list[Assign]:
    return [a for a in actions if isinstance(a, Assign)]


def answer(s: Scheduler, a: Assign, now: float, timings: list[float]) -> None:
    rows = [(i, {"input": name, "top5": []}) for i, name in a.queries]
    s.batch_done(a.worker, a.batch_id, rows, timings, now)


# --- inference: the scheduler's figures agree with C1 and C2 ------------------------------


def test_scheduler_figures_are_c1_and_c2_with_a_histogram_queues_and_jobs():
    s = Scheduler(SchedulerConfig(max_batch_seconds=None, batch_size=4))
    s.worker_up("H1", CAP, 0.0)
    s.worker_up("H2", CAP, 0.0)
    first = assigns(s.submit("job-1", "resnet50", [f"i/{k}" for k in range(10)], 0.0))
    assert [(a.worker, len(a.queries)) for a in first] == [("H1", 4), ("H2", 4)]
    answer(s, first[0], 1.0, [0.003, 0.02, 0.2, 2.0])
    s.submit("job-2", "inception_v3", ["i/x"], 1.5)  # queued behind: every worker busy
    now = 2.0
    samples = parse(scrape_text(lambda: metrics.scheduler_families(s, now)))

    c1, c2 = s.c1(now)["models"], s.c2()["models"]
    assert value(samples, "idunno_queries_total", model="resnet50") == 4
    assert c1["resnet50"]["query_count"] == 4
    assert value(samples, "idunno_query_rate", model="resnet50") == c1["resnet50"]["query_rate"]
    # 4 answered in the last 10 s, plus the credit C1 gives the batches under way (each
    # its elapsed share of its expected time): H2's 4 and H1's next 2, at most.
    assert 0.4 < c1["resnet50"]["query_rate"] <= 1.0
    for q, key in (("0.5", "median"), ("0.9", "p90"), ("0.95", "p95"), ("0.99", "p99")):
        got = value(samples, "idunno_query_seconds", model="resnet50", quantile=q)
        assert got == c2["resnet50"][key], q
    assert value(samples, "idunno_query_seconds_mean", model="resnet50") == c2["resnet50"]["mean"]
    assert value(samples, "idunno_query_seconds_stddev", model="resnet50") == c2["resnet50"]["std"]
    # The histogram: each time in its bucket (cumulative counts), their sum and count.
    cumulative = {"0.001": 0, "0.005": 1, "0.01": 1, "0.025": 2, "0.25": 3, "1.0": 3, "2.5": 4}
    for le, n in cumulative.items():
        assert value(samples, "idunno_query_duration_seconds_bucket", model="resnet50", le=le) == n
    assert value(samples, "idunno_query_duration_seconds_bucket", model="resnet50", le="+Inf") == 4
    assert value(samples, "idunno_query_duration_seconds_count", model="resnet50") == 4
    assert math.isclose(
        value(samples, "idunno_query_duration_seconds_sum", model="resnet50"), 2.223
    )
    buckets = [k for k in samples if k[0] == "idunno_query_duration_seconds_bucket"]
    assert len(buckets) == len(SECONDS_BUCKETS) + 1  # one model has times so far
    # Queues: resnet50's 2 left wait for H1's next batch (dispatched at once: in flight);
    # inception_v3's one query waits.  H1 and H2 each have a batch out.
    assert value(samples, "idunno_queue_queries", model="resnet50") == 0
    assert value(samples, "idunno_in_flight_queries", model="resnet50") == 6
    assert value(samples, "idunno_queue_queries", model="inception_v3") == 1
    assert value(samples, "idunno_in_flight_queries", model="inception_v3") == 0
    assert value(samples, "idunno_jobs", state="running") == 1
    assert value(samples, "idunno_jobs", state="queued") == 1
    assert value(samples, "idunno_jobs", state="done") == 0
    assert value(samples, "idunno_scheduler_worker_batches", worker="H1") == 1
    assert value(samples, "idunno_scheduler_worker_batches", worker="H2") == 1
    # inception_v3 has no completion yet: no C1 row, no series (as C1 and C2 show none).
    assert ("idunno_queries_total", (("model", "inception_v3"),)) not in samples


def test_a_standby_copy_exports_what_the_leader_did_and_goes_on_from_it():
    s = Scheduler(SchedulerConfig(max_batch_seconds=None, batch_size=2))
    s.worker_up("H1", CAP, 0.0)
    (a,) = assigns(s.submit("job-1", "resnet50", ["a", "b", "c"], 0.0))
    answer(s, a, 1.0, [0.01, 0.3])
    # The standby's copy: a snapshot through msgpack-like plain data (JSON here).
    copy = Scheduler.restore(json.loads(json.dumps(s.snapshot())))
    text = scrape_text(lambda: metrics.scheduler_families(s, 5.0))
    assert scrape_text(lambda: metrics.scheduler_families(copy, 5.0)) == text
    # Both apply the next result (the leader's events reach the standby): still equal,
    # and the counters went on (3 queries, 3 times in the histogram).
    for sched in (s, copy):
        (b,) = [x for x in sched.workers()["H1"]["batches"]]
        rows = [(2, {"input": "c", "top5": []})]
        sched.batch_done("H1", b, rows, [0.02], 2.0)
    samples = parse(scrape_text(lambda: metrics.scheduler_families(copy, 5.0)))
    assert scrape_text(lambda: metrics.scheduler_families(s, 5.0)) == scrape_text(
        lambda: metrics.scheduler_families(copy, 5.0)
    )
    assert value(samples, "idunno_queries_total", model="resnet50") == 3
    assert value(samples, "idunno_query_duration_seconds_count", model="resnet50") == 3
    assert value(samples, "idunno_jobs", state="done") == 1
    # An older snapshot without the histogram restores with an empty one (no crash).
    old = s.snapshot()
    del old["durations"]
    assert Scheduler.restore(old).durations.labels() == []


# --- membership -------------------------------------------------------------------------


def test_membership_figures_follow_a_crash_suspected_then_removed():
    net = CoreNet(5, seed=1)
    net.start_all()
    net.run_until(20.0)
    net.crash("H5")
    while not net.events_of("suspected", "H5"):
        net.run_for(0.1)
    _, suspecter, _ = net.events_of("suspected", "H5")[0]
    core = net.cores[suspecter]
    samples = parse(scrape_text(lambda: metrics.membership_families(suspecter, core, None)))
    assert value(samples, "idunno_members", state="alive") == 4
    assert value(samples, "idunno_members", state="suspect") == 1
    assert value(samples, "idunno_membership_suspicions_total") == core.stats.suspicions == 1
    assert value(samples, "idunno_membership_pings_sent_total") == core.stats.pings_sent > 0
    assert value(samples, "idunno_membership_false_positives_total") == 0
    assert value(samples, "idunno_leader") == (1 if suspecter == "H1" else 0)
    net.run_for(15.0)
    for name in ("H1", "H2", "H3", "H4"):
        c = net.cores[name]
        s = parse(scrape_text(functools.partial(metrics.membership_families, name, c, None)))
        assert value(s, "idunno_members", state="alive") == 4
        assert value(s, "idunno_members", state="suspect") == 0
        assert value(s, "idunno_membership_failures_total") == 1
        assert value(s, "idunno_leader") == (1 if name == "H1" else 0)
        assert net.status(name, "H5") in (None, Status.FAILED)
    # Only the suspecter raised a suspicion; nobody suspected a live member.
    assert sum(net.cores[n].stats.suspicions for n in ("H1", "H2", "H3", "H4")) == 1


# --- SDFS: the store ------------------------------------------------------------------------


def test_store_figures_are_what_the_store_holds(tmp_path: Path):
    store = ReplicaStore(tmp_path / "sdfs")
    samples = parse(scrape_text(lambda: metrics.store_families(store.usage(), None)))
    assert value(samples, "idunno_sdfs_files") == 0
    assert value(samples, "idunno_sdfs_stored_bytes") == 0
    put(store, "a.txt", 1, b"x" * 10)
    put(store, "a.txt", 2, b"y" * 20)
    put(store, "b.txt", 1, b"z" * 5)
    put(store, "c.txt", 1, b"p" * 7, state=0)  # pending: on disk, not readable yet
    samples = parse(scrape_text(lambda: metrics.store_families(store.usage(), None)))
    assert value(samples, "idunno_sdfs_files") == len(store.names()) == 2
    assert value(samples, "idunno_sdfs_versions") == 4
    assert value(samples, "idunno_sdfs_stored_bytes") == 42
    store.delete("a.txt", 3)  # a tombstone: a.txt's bytes go, and it is no file
    samples = parse(scrape_text(lambda: metrics.store_families(store.usage(), None)))
    assert value(samples, "idunno_sdfs_files") == len(store.names()) == 1
    assert value(samples, "idunno_sdfs_versions") == 2
    assert value(samples, "idunno_sdfs_stored_bytes") == 12


# --- a whole node ---------------------------------------------------------------------------


async def test_a_node_that_leads_nothing_exports_no_leader_figures(tmp_path: Path):
    config = dataclasses.replace(profile("test"), secret="a-test-secret-of-enough-bytes-01234")
    node = NodeApp(config, config.nodes[0], tmp_path)
    put(node.sdfs.store, "held.txt", 1, b"12345")  # read in a worker thread per scrape
    transport = httpx.ASGITransport(app=build_app(node, None))
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as http:
        text = (await http.get("/metrics")).text
    samples = parse(text)
    names = {name for name, _ in samples}
    assert value(samples, "idunno_scheduler") == 0 and value(samples, "idunno_leader") == 0
    assert not any(n.startswith(("idunno_quer", "idunno_jobs", "idunno_sdfs_put")) for n in names)
    assert "idunno_sdfs_cluster_files" not in names
    assert value(samples, "idunno_sdfs_files") == 1
    assert value(samples, "idunno_sdfs_stored_bytes") == 5
    # Every node's own figures are there, at zero before it has done anything.
    for name in (
        "idunno_sdfs_downloads_total",
        "idunno_sdfs_get_seconds_count",
        "idunno_worker_busy_seconds_total",
        "idunno_worker_queries_total",
        "idunno_membership_suspicions_total",
    ):
        assert value(samples, name) == 0, name
    # Units in the names: seconds and bytes; counters end in _total.
    families = list(text_string_to_metric_families(text))
    for f in families:
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
        if f.type == "histogram":
            assert f.name.endswith("_seconds"), f.name


# --- SDFS: the leader ------------------------------------------------------------------------


async def test_the_sdfs_leader_times_puts_and_counts_repairs(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = SdfsCluster(nursery, tmp_path, 5, replication=4, delay=0.25)
    await cluster.start()
    leader = cluster.leader("H1")
    size = 256 * 1024
    t0 = trio.current_time()
    await cluster.put("H3", "a.txt", b"a" * size)
    t_put = trio.current_time() - t0
    samples = parse(scrape_text(lambda: metrics.sdfs_leader_families(leader)))
    assert value(samples, "idunno_sdfs_cluster_files") == 1
    assert value(samples, "idunno_sdfs_put_seconds_count") == 1
    # Grant to commit: the whole put but the way of the grant request there (D) and
    # the way of the PutDone's answer back (D).
    put_seconds = value(samples, "idunno_sdfs_put_seconds_sum")
    assert put_seconds == pytest.approx(t_put - 2 * 0.25, abs=1e-9)
    assert value(samples, "idunno_sdfs_repairs_total", outcome="done") == 0
    # A holder (not the leader) crashes: the leader copies the file to the fifth node.
    (lost,) = [n for n in cluster.holders("a.txt", 1) if n != "H1"][:1]
    cluster.crash(lost)
    await cluster.wait_until(lambda: bool(cluster.log("re-replicated a.txt")), 30)
    samples = parse(scrape_text(lambda: metrics.sdfs_leader_families(leader)))
    assert value(samples, "idunno_sdfs_repairs_total", outcome="done") == 1
    assert value(samples, "idunno_sdfs_repairs_total", outcome="failed") == 0
    assert value(samples, "idunno_sdfs_repaired_bytes_total") == size
    # The others are not the leader: they export none of it.
    assert scrape_text(lambda: metrics.sdfs_leader_families(cluster.leader("H3"))) == ""


def test_queries_processed_counts_as_c1_and_never_goes_down():
    s = Scheduler(SchedulerConfig(max_batch_seconds=None, batch_size=4))
    s.worker_up("H1", CAP, 0.0)
    s.worker_up("H2", CAP, 0.0)
    first = assigns(s.submit("job-1", "resnet50", [f"i/{k}" for k in range(8)], 0.0))
    kept: dict[str, float] = {}

    def processed(now: float) -> float:
        text = scrape_text(lambda: metrics.scheduler_families(s, now, kept))
        return value(parse(text), "idunno_queries_processed_total", model="resnet50")

    answer(s, first[0], 1.0, [0.25] * 4)
    # H1's batch counts whole; H2's, under way, by its elapsed share: more than 4.
    mid = processed(1.0)
    assert 4.0 < mid <= 8.0
    assert mid == s.stats.done("resnet50", 1.0)  # the work C1's rate is the slope of
    # H2's batch is lost: its share goes back to the queue, the counter holds its value.
    lost = s.batch_failed("H2", first[1].batch_id, "gone", 1.5)
    assert processed(1.5) == mid and s.stats.done("resnet50", 1.5) < mid
    # Redone and answered: all 8 queries, more than was held.
    redo = [a for a in assigns(lost) if a.job_id == "job-1"]
    for a in redo:
        answer(s, a, 3.0, [0.25] * len(a.queries))
    assert processed(3.0) == pytest.approx(8.0)
