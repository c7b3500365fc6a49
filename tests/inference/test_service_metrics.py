"""What ``/metrics`` exports of inference (web.metrics), from the whole service on
virtual time: the workers' busy time, and the leader's counters going on after the
standby takes over (the scheduler's statistics and histogram are replicated)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.inference.test_service_virtual import COSTS, Paced, start_cluster, wait_done
from tests.web.test_metrics import Samples, _Families, parse, value
from web import metrics


def samples_of(make: Callable[[], Iterable[Metric]]) -> Samples:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(make))
    text = generate_latest(registry).decode()
    assert list(text_string_to_metric_families(text))  # prometheus_client reads it back
    return parse(text)


async def test_counters_go_on_after_a_takeover_and_busy_time_is_the_workers_batches(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 120
    cluster = await start_cluster(nursery, 5, paced, tmp_path, monkeypatch)
    services = cluster.services
    client = cluster.client("H5")
    job = await client.submit("quick", count=n)
    await trio.sleep(1.05)
    old = services["H1"].leader.sched
    assert old is not None
    before = samples_of(lambda: metrics.scheduler_families(old, trio.current_time()))
    done_before = value(before, "idunno_queries_total", model="quick")
    assert 0 < done_before < n
    cluster.rpc.crash("H1")
    await wait_done(client, job.job_id)

    new = services["H2"].leader.sched
    assert new is not None and services["H2"].leader.holds_lease()
    now = trio.current_time()
    after = samples_of(lambda: metrics.scheduler_families(new, now))
    # Every query once, counted across both leaderships; its processing time in the
    # histogram once (the paced kind reports exactly its cost per query).
    assert value(after, "idunno_queries_total", model="quick") == n
    assert value(after, "idunno_query_duration_seconds_count", model="quick") == n
    assert value(after, "idunno_query_duration_seconds_sum", model="quick") == pytest.approx(
        n * COSTS["quick"]
    )
    assert value(after, "idunno_query_duration_seconds_bucket", model="quick", le="0.1") == n
    assert value(after, "idunno_query_duration_seconds_bucket", model="quick", le="0.05") == 0
    rates = await client.rates()
    assert value(after, "idunno_query_rate", model="quick") == rates["quick"]["query_rate"]
    assert value(after, "idunno_queue_queries", model="quick") == 0

    # Each surviving worker: its busy seconds are its batches' run time (the paced
    # kind runs one at a time, and a batch's fetch takes no time), its queries theirs.
    for name in ("H2", "H3", "H4", "H5"):
        runs = [r for r in paced.runs if r.node == name]
        w = samples_of(functools.partial(metrics.worker_families, services[name].worker, now))
        assert value(w, "idunno_worker_queries_total") == sum(len(r.indices) for r in runs)
        assert value(w, "idunno_worker_batches_total", outcome="done") == len(runs)
        busy = value(w, "idunno_worker_busy_seconds_total")
        assert busy == pytest.approx(sum(r.end - r.start for r in runs), abs=1e-6), name
        assert value(w, "idunno_worker_running_batches") == 0
