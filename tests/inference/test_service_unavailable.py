"""A worker that cannot serve a model (its grading server is down), on virtual time.

The toy kind of :mod:`tests.inference.test_service_virtual`, except that on the nodes
in ``down`` its batches raise :class:`~inference.kinds.base.ModelUnavailable`, as the
OpenAI-compatible backend does when its server is unreachable, and its probe answers
whether the node is still in ``down``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from inference import kinds
from inference.events import BatchFailed, BatchLost, Query, WorkerUp
from inference.kinds.base import BatchOutput, ModelUnavailable, WorkerContext
from inference.worker import PROBE_FIRST
from tests.inference.test_service_virtual import (
    Paced,
    assert_each_query_once,
    start_cluster,
    wait_done,
)


class Flaky(Paced):
    name = "toy-flaky"

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()
        self.probes = 0

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        node = ctx.cache.parent.name
        if node in self.down:
            await trio.sleep(0.05)  # a refused connection takes a moment

            async def probe() -> bool:
                self.probes += 1
                return node not in self.down

            raise ModelUnavailable(model, f"http://{node}:11434/v1: ConnectError", probe)
        return await super().run_batch(ctx, model, queries)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[Flaky]:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    kind = Flaky()
    kinds.register(kind)
    yield kind
    kinds.unregister(kind.name)


async def test_a_worker_whose_server_is_down_gets_none_of_its_model_until_it_is_back(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    flaky: Flaky,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flaky.down.add("H3")
    cluster = await start_cluster(nursery, 3, flaky, tmp_path, monkeypatch)
    client = cluster.client("H2")
    job = await client.submit("quick", count=120)
    await trio.sleep(3.0)
    # H3 said it cannot serve "quick" before it reported its batch failed, so the
    # batch came back without costing its queries an attempt.
    events = [(a.time, a.event, a.actions) for a in cluster.applied]
    announced = [
        (k, t, actions)
        for k, (t, e, actions) in enumerate(events)
        if isinstance(e, WorkerUp) and e.name == "H3" and e.capacity.get("unavailable")
    ]
    assert len(announced) == 1
    k_down, t_down, actions = announced[0]
    lost = [a for a in actions if isinstance(a, BatchLost)]
    assert lost and all(b.reason == "H3 cannot serve quick now" for b in lost)
    failed = [k for k, (_, e, _) in enumerate(events) if isinstance(e, BatchFailed)]
    assert failed and min(failed) > k_down
    # From then on H3 is given no "quick" at all.
    assert not [a for t, node, a in cluster.assigns(since=t_down) if a.worker == "H3"]

    # Its server comes back: the next probe succeeds and H3 takes work again.
    flaky.down.clear()
    t_back = trio.current_time()
    await wait_done(client, job.job_id)
    again = [t for t, _, a in cluster.assigns(since=t_back) if a.worker == "H3"]
    assert again and again[0] - t_back <= 30.0 + 1.0  # at most one probe period (capped)
    assert flaky.probes >= 2  # it failed at least once while down
    status = await client.status(job.job_id)
    assert (status.state, status.errors) == ("done", 0)
    assert_each_query_once(cluster, "H1", job.job_id, "quick", 120)


def test_the_first_probe_is_soon() -> None:
    assert PROBE_FIRST <= 1.0
