"""``/metrics``: the node's state in Prometheus' text format (prometheus_client).

Each scrape builds the figures from the node's state (a custom collector on a
registry of this node's own, not the library's global one: tests run several nodes
in one process), so nothing is updated on the node's hot paths for metrics' sake
beyond the few counters and histograms the parts keep (``net.meters``).

Who exports what (Prometheus scrapes every node):

* every node: its membership view and failure-detector counts, its SDFS store and
  transfers, its own inference worker;
* the leader only: the SDFS file table (``idunno_sdfs_cluster_files``), put and
  repair figures, while it is the READY SDFS leader; the inference figures (queries,
  rates, processing times, queues, jobs, workers) while it is the scheduler holding
  the lease, i.e. exactly when it answers C1 and C2.  A non-leader exposes none of
  these (no forwarding: a scrape must not wait on the network, and the leader is
  scraped too).  ``idunno_leader`` and ``idunno_scheduler`` (1 on the node that
  exports them) say where they come from.

The inference figures read the scheduler's own :class:`~inference.metrics.QueryStats`
(C1's rate and count, C2's percentiles), so they agree with C1 and C2 by
construction.  The scheduler and its statistics, the duration histogram included,
are replicated to the hot standbys, so after a failover the new leader's counters go
on from the old one's.  The SDFS leader's put and repair figures are this process's
own: a new leader's start from what it measured itself (zero on a fresh node), which
Prometheus' ``rate()`` takes as a counter reset.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from net.meters import Histogram
from sdfs.leader import LeaderState

if TYPE_CHECKING:
    from inference.scheduler import Scheduler
    from inference.worker import Worker
    from membership.core import MembershipCore
    from net.transport import MeteredTransport
    from node.app import NodeApp
    from sdfs.leader import SdfsLeader
    from sdfs.transfer.server import TransferServer

# C2's percentiles as Prometheus quantiles: (label value, key in QueryStats.latency).
QUANTILES = (("0.5", "median"), ("0.9", "p90"), ("0.95", "p95"), ("0.99", "p99"))
MEMBER_STATES = ("alive", "suspect")
JOB_STATES = ("queued", "running", "done", "failed")


def _le(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus writes it (``0.25``, ``1.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def histogram_family(
    name: str, doc: str, labels: Iterable[str], by: Mapping[tuple[str, ...], Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for values, h in by.items():
        buckets = [(_le(bound), float(n)) for bound, n in h.buckets()]
        family.add_metric(list(values), buckets, h.sum)
    return family


def membership_families(
    node_name: str, core: MembershipCore, transport: MeteredTransport | None
) -> Iterator[Metric]:
    members = GaugeMetricFamily(
        "idunno_members", "Members in this node's view, by state", labels=["state"]
    )
    live = core.live_members() if core.active else []
    states = Counter(m.status.label for m in live)
    for state in MEMBER_STATES:
        members.add_metric([state], states.get(state, 0))
    yield members
    leader = core.leader() if core.active else None
    yield GaugeMetricFamily(
        "idunno_leader",
        "1 if this node is the leader (first live member in ring order) in its own view",
        value=1 if leader == node_name else 0,
    )
    s = core.stats
    for name, doc, value in (
        ("pings_sent", "Probes (direct pings) this node sent", s.pings_sent),
        (
            "suspicions",
            "Suspicions this node raised: a member answered no probe, direct or relayed",
            s.suspicions,
        ),
        (
            "false_positives",
            "Suspicions this node raised against members that then proved alive",
            s.false_positives,
        ),
        (
            "failures",
            "Members removed from this node's view as failed (its own verdict or one heard)",
            s.failures,
        ),
        ("suspected_self", "Times this node heard itself suspected while alive", s.suspected_self),
        (
            "declared_failed_self",
            "Times this node heard itself declared failed while alive",
            s.declared_failed_self,
        ),
    ):
        yield CounterMetricFamily(f"idunno_membership_{name}", doc, value=value)
    if transport is not None:
        yield CounterMetricFamily(
            "idunno_membership_sent_bytes",
            "Bytes of membership datagrams this node sent (UDP payload)",
            value=transport.sent.total,
        )
        yield CounterMetricFamily(
            "idunno_membership_received_bytes",
            "Bytes of membership datagrams this node received (UDP payload)",
            value=transport.received.total,
        )
        dropped = CounterMetricFamily(
            "idunno_membership_dropped_datagrams",
            "Datagrams dropped on purpose in test mode (-t), by direction",
            labels=["direction"],
        )
        dropped.add_metric(["out"], transport.dropped_out)
        dropped.add_metric(["in"], transport.dropped_in)
        yield dropped


def rejected_family(rejected: Mapping[str, Mapping[str, int]]) -> Metric:
    family = CounterMetricFamily(
        "idunno_rejected_messages",
        "Frames (TCP) and datagrams (UDP) dropped unread: oversize, forged (bad_mac), "
        "malformed, out of range",
        labels=["channel", "reason"],
    )
    for channel, reasons in sorted(rejected.items()):
        for reason, n in sorted(reasons.items()):
            family.add_metric([channel, reason], n)
    return family


def store_families(
    usage: tuple[int, int, int], transfers: TransferServer | None
) -> Iterator[Metric]:
    """``usage``: the store's ``(files, versions, bytes)`` (:meth:`ReplicaStore.usage`)."""
    files, versions, size = usage
    yield GaugeMetricFamily(
        "idunno_sdfs_files",
        "SDFS files this node holds a readable version of (as the 'store' command lists)",
        value=files,
    )
    yield GaugeMetricFamily(
        "idunno_sdfs_versions", "SDFS file versions held on this node's disk", value=versions
    )
    yield GaugeMetricFamily(
        "idunno_sdfs_stored_bytes",
        "Bytes of the SDFS file versions held on this node's disk",
        value=size,
    )
    if transfers is None:
        return
    for name, doc, value in (
        ("downloads", "Gets served from this node's replicas (tcp streams)", transfers.downloads),
        ("download_bytes", "Bytes sent from this node's replicas", transfers.bytes_out),
        ("uploads", "Uploads received into this node's store (tcp streams)", transfers.uploads),
        ("upload_bytes", "Bytes received into this node's store", transfers.bytes_in),
        ("refused_transfers", "Transfers this node refused", transfers.refused),
    ):
        yield CounterMetricFamily(f"idunno_sdfs_{name}", doc, value=value)
    yield histogram_family(
        "idunno_sdfs_get_seconds",
        "Seconds a replica on this node took to stream a get (request to last byte)",
        (),
        {(): transfers.download_seconds},
    )


def sdfs_leader_families(leader: SdfsLeader) -> Iterator[Metric]:
    """The SDFS leader's figures; nothing unless this node is the READY leader."""
    metadata = leader.metadata
    if (
        leader.state is not LeaderState.READY
        or metadata is None
        or leader.view.leader() != leader.name
    ):
        return
    yield GaugeMetricFamily(
        "idunno_sdfs_cluster_files",
        "SDFS files in the cluster (the leader's file table, as 'ls-all' lists)",
        value=metadata.count(),
    )
    yield histogram_family(
        "idunno_sdfs_put_seconds",
        "Seconds from a put's grant to its commit on the leader (transfer and write quorum)",
        (),
        {(): leader.put_seconds},
    )
    repairs = CounterMetricFamily(
        "idunno_sdfs_repairs",
        "Re-replications this node ordered as leader, by outcome",
        labels=["outcome"],
    )
    for outcome in ("done", "failed"):
        repairs.add_metric([outcome], leader.repairs.get(outcome, 0))
    yield repairs
    yield CounterMetricFamily(
        "idunno_sdfs_repaired_bytes",
        "Bytes copied by the re-replications this node ordered as leader",
        value=leader.repaired_bytes,
    )


def worker_families(worker: Worker, now: float) -> Iterator[Metric]:
    yield CounterMetricFamily(
        "idunno_worker_busy_seconds",
        "Seconds this node's worker had a batch under way (overlapping batches count once)",
        value=worker.busy.seconds(now),
    )
    yield GaugeMetricFamily(
        "idunno_worker_running_batches",
        "Batches under way on this node's worker now",
        value=worker.busy.running,
    )
    batches = CounterMetricFamily(
        "idunno_worker_batches", "Batches this node's worker ran, by outcome", labels=["outcome"]
    )
    for outcome in ("done", "failed"):
        batches.add_metric([outcome], worker.batches.get(outcome, 0))
    yield batches
    yield CounterMetricFamily(
        "idunno_worker_queries", "Queries this node's worker answered", value=worker.queries
    )


def scheduler_families(
    sched: Scheduler, now: float, processed: dict[str, float] | None = None
) -> Iterator[Metric]:
    """The scheduler's figures at ``now`` (the leader's clock, as C1 reads it).

    ``processed``: the values of ``idunno_queries_processed_total`` this node exported
    last, by model, kept from scrape to scrape by the caller (updated here): the work
    done counts running batches by their elapsed share, as C1 does, and a batch that is
    lost takes its share back; the counter holds its value until the work redone
    overtakes it, so it never goes down."""
    processed = {} if processed is None else processed
    stats = sched.stats
    models = stats.models()
    queries = CounterMetricFamily(
        "idunno_queries",
        "Queries completed, by model, since the model's first job (C1's query_count)",
        labels=["model"],
    )
    processed_family = CounterMetricFamily(
        "idunno_queries_processed",
        "Queries processed, by model, each counted over the time its batch ran (not at "
        "its end): rate() of it is throughput counted as C1 counts",
        labels=["model"],
    )
    rate = GaugeMetricFamily(
        "idunno_query_rate",
        "Queries per second over the last 10 s, by model (C1's query_rate)",
        labels=["model"],
    )
    quantiles = GaugeMetricFamily(
        "idunno_query_seconds",
        "Processing time per query, percentiles by model (C2's median, p90, p95, p99)",
        labels=["model", "quantile"],
    )
    mean = GaugeMetricFamily(
        "idunno_query_seconds_mean", "Mean processing time per query (C2's mean)", labels=["model"]
    )
    std = GaugeMetricFamily(
        "idunno_query_seconds_stddev",
        "Standard deviation of the processing time per query (C2's std)",
        labels=["model"],
    )
    for model in models:
        queries.add_metric([model], stats.count(model))
        done = max(stats.done(model, now), processed.get(model, 0.0))
        processed[model] = done
        processed_family.add_metric([model], done)
        rate.add_metric([model], stats.rate(model, now))
        latency = stats.latency(model)
        for q, key in QUANTILES:
            quantiles.add_metric([model, q], latency[key])
        mean.add_metric([model], latency["mean"])
        std.add_metric([model], latency["std"])
    yield from (queries, processed_family, rate, quantiles, mean, std)
    durations = sched.durations
    yield histogram_family(
        "idunno_query_duration_seconds",
        "Processing time per query as the worker measured it, by model",
        ("model",),
        {(m,): h for m in durations.labels() if (h := durations.get(m)) is not None},
    )
    # Queues and jobs, from C4's status of every job the scheduler holds.
    waiting: Counter[str] = Counter()
    running: Counter[str] = Counter()
    jobs: Counter[str] = Counter()
    for job_id in sched.job_ids():
        s = sched.status(job_id)
        jobs[s["state"]] += 1
        waiting[s["model"]] += max(0, s["total"] - s["done"] - s["in_flight"])
        running[s["model"]] += s["in_flight"]
    queue = GaugeMetricFamily(
        "idunno_queue_queries",
        "Queries waiting for a worker, by model (queue depth)",
        labels=["model"],
    )
    flight = GaugeMetricFamily(
        "idunno_in_flight_queries", "Queries in batches on workers now, by model", labels=["model"]
    )
    for model in sorted(set(waiting) | set(running) | set(models)):
        queue.add_metric([model], waiting.get(model, 0))
        flight.add_metric([model], running.get(model, 0))
    yield queue
    yield flight
    by_state = GaugeMetricFamily(
        "idunno_jobs",
        "Jobs the scheduler holds, by state (finished jobs leave once their output is written)",
        labels=["state"],
    )
    for state in JOB_STATES:
        by_state.add_metric([state], jobs.get(state, 0))
    yield by_state
    workers = sched.workers()
    batches = GaugeMetricFamily(
        "idunno_scheduler_worker_batches",
        "Batches the scheduler has out on each worker now",
        labels=["worker"],
    )
    for name, w in workers.items():
        batches.add_metric([name], len(w["batches"]))
    yield batches


class NodeCollector(Collector):
    def __init__(self, node: NodeApp) -> None:
        self.node = node
        # The store's usage, read in a worker thread before each scrape (prepare): one
        # pass over every version held (0.1 s at 100,000) must not stall the loop.
        self.usage: tuple[int, int, int] | None = None
        # idunno_queries_processed_total as last exported, by model (never goes down).
        self.processed: dict[str, float] = {}

    async def prepare(self) -> None:
        self.usage = await trio.to_thread.run_sync(self.node.sdfs.store.usage)

    def collect(self) -> Iterator[Metric]:
        node = self.node
        usage = self.usage if self.usage is not None else node.sdfs.store.usage()
        yield from membership_families(node.me.name, node.core, node.transport)
        yield rejected_family(node.list_self()["rejected"])
        yield from store_families(usage, node.transfers)
        yield from sdfs_leader_families(node.sdfs.leader)
        yield from worker_families(node.inference.worker, trio.current_time())
        leader = node.inference.leader
        sched = leader.sched
        scheduling = sched is not None and leader.holds_lease()
        yield GaugeMetricFamily(
            "idunno_scheduler",
            "1 if this node is the inference scheduler (it exports idunno_queries and the rest)",
            value=1 if scheduling else 0,
        )
        if scheduling and sched is not None:
            yield from scheduler_families(sched, leader.clock(), self.processed)


class NodeMetrics:
    """A registry of ``node``'s own (tests run several nodes in one process) whose
    scrapes read its state."""

    def __init__(self, node: NodeApp) -> None:
        self.collector = NodeCollector(node)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)

    async def exposition(self) -> tuple[bytes, str]:
        """The body and content type of one scrape (on the node's trio thread: the
        state it reads is the loop's; only the store's usage is read in a worker
        thread)."""
        await self.collector.prepare()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
