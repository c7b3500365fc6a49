"""Job kinds: a kind defined here, in the test, runs through the scheduler, the leader,
the standby stream and the workers, with no change to any of them.

Two nodes run whole :class:`~inference.service.InferenceService` objects on virtual
time, over an in-memory view whose every request and reply goes through
``net.wire`` (so only registered, typed messages cross it), with a file store held
in a dict.
"""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from config.topology import default_config
from inference import kinds, worker_main
from inference.client import InferenceClient
from inference.events import Query, Row
from inference.files import FileStore
from inference.kinds.base import BatchOutput, WorkerContext
from inference.service import InferenceService
from membership.core import MembershipCore
from membership.peers import LEADER_RETRY_WINDOW, call_leader
from net.errors import Invalid, NotFound
from net.rpc import RPC_TIMEOUT, RpcError, frame_codec
from net.transport import Address
from net.wire import decode, encode
from tests.helpers.dictfiles import DictFiles


class Shout:
    """A toy kind: a job is one query per line of a file; a query's row is the line
    shouted; a line that says "boom" fails its batch every time."""

    name = "toy-shout"
    models: tuple[str, ...] = ("shout",)

    def canonical(self, model: str) -> str | None:
        return "shout" if model.lower() == "shout" else None

    async def queries(
        self, files: FileStore, model: str, pattern: str | None, count: int | None
    ) -> list[str]:
        if pattern is None:
            raise Invalid("shout needs a file of lines")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "lines"
            await files.get(pattern, local)
            return [line for line in local.read_text().splitlines() if line]

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        if any(line == "boom" for _, line in queries):
            raise RuntimeError("the toy kind refuses 'boom'")
        rows = tuple((i, {"input": line, "loud": line.upper()}) for i, line in queries)
        return BatchOutput(rows, tuple(0.01 for _ in rows))

    def error_row(self, input: str, error: str) -> Row:
        return {"input": input, "failure": error}

    def output_line(self, row: Row) -> dict[str, Any]:
        if "failure" in row:
            return {"line": row["input"], "failure": row["failure"]}
        return {"line": row["input"], "shout": row["loud"]}


class MemView:
    """One node's :class:`~membership.peers.ClusterView` of an in-memory cluster."""

    def __init__(self, nodes: dict[str, InferenceService], me: str) -> None:
        self.nodes = nodes
        self.me = me

    def ring(self) -> list[str]:
        return sorted(self.nodes)

    def leader(self) -> str | None:
        ring = self.ring()
        return ring[0] if ring else None

    def address(self, name: str) -> Address:
        return ("127.0.0.1", 0)

    async def call(self, name: str, request: Any, timeout: float = RPC_TIMEOUT) -> Any:
        node = self.nodes.get(name)
        if node is None:
            raise RpcError(f"{name} is down")
        reply = await node.handle(decode(encode(request)), self.address(self.me))
        return decode(encode(reply))

    async def call_leader(
        self, request: Any, timeout: float = RPC_TIMEOUT, window: float = LEADER_RETRY_WINDOW
    ) -> Any:
        return await call_leader(self, request, timeout, window)


@pytest.fixture
def shout() -> Iterator[None]:
    kinds.register(Shout())
    yield
    kinds.unregister(Shout.name)


@pytest.fixture
async def cluster(
    shout: None, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> AsyncIterator[tuple[dict[str, InferenceService], DictFiles]]:
    # A cluster of two configured nodes: both are a majority (they schedule).
    config = dataclasses.replace(default_config(), nodes=default_config().nodes[:2])
    files = DictFiles()
    nodes: dict[str, InferenceService] = {}
    async with trio.open_nursery() as nursery:
        for me in config.nodes:
            core = MembershipCore(me, config.membership, config.ring_index(), random.Random(1))
            nodes[me.name] = InferenceService(
                config,
                me,
                core,
                frame_codec(config.secret_bytes),
                files,
                tmp_path / me.name,
                clock=trio.current_time,
                view=MemView(nodes, me.name),
            )
        for node in list(nodes.values()):
            await nursery.start(node.run)
        yield nodes, files
        nursery.cancel_scope.cancel()


async def _wait_done(client: InferenceClient, job_id: str) -> str:
    while True:  # polled, as a console user would
        status = await client.status(job_id)
        if status.state in ("done", "failed"):
            return status.state
        await trio.sleep(0.1)


async def test_a_kind_registered_in_a_test_runs_end_to_end(
    cluster: tuple[dict[str, InferenceService], DictFiles], tmp_path: Path
) -> None:
    nodes, files = cluster
    files.data["words.txt"] = b"alpha\nbeta\ngamma\ndelta\nepsilon\n"
    client = InferenceClient(MemView(nodes, "H2"), files)

    job = await client.submit("SHOUT", pattern="words.txt")
    assert (job.model, job.queries) == ("shout", 5)
    assert await _wait_done(client, job.job_id) == "done"

    out = await client.get_output(job.job_id, tmp_path / "out.jsonl")
    assert (out.results, out.state) == (5, "done")
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines == [
        {"line": w, "shout": w.upper()} for w in ("alpha", "beta", "gamma", "delta", "epsilon")
    ]
    assert (await client.rates())["shout"]["query_count"] == 5
    assert "shout" in (await client.latency())
    # The standby (H2) replayed every event the leader (H1) applied, typed, in order.
    leader = nodes["H1"].leader.state()
    assert leader is not None and nodes["H2"].copy.scheduler is not None
    assert nodes["H2"].copy.seq == leader[1]
    assert nodes["H2"].copy.scheduler.snapshot() == leader[0].snapshot()


async def test_a_query_that_fails_for_good_gets_its_kinds_error_row(
    cluster: tuple[dict[str, InferenceService], DictFiles], tmp_path: Path
) -> None:
    nodes, files = cluster
    files.data["words.txt"] = b"boom\n"
    client = InferenceClient(MemView(nodes, "H1"), files)
    job = await client.submit("shout", pattern="words.txt")
    assert await _wait_done(client, job.job_id) == "failed"
    await client.get_output(job.job_id, tmp_path / "out.jsonl")
    (line,) = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert line["line"] == "boom" and "refuses 'boom'" in line["failure"]


async def test_unknown_models_and_jobs_are_typed_errors(
    cluster: tuple[dict[str, InferenceService], DictFiles],
) -> None:
    nodes, files = cluster
    client = InferenceClient(MemView(nodes, "H2"), files)
    with pytest.raises(Invalid, match="did you mean shout"):
        await client.submit("shot")
    with pytest.raises(
        Invalid, match="valid models are resnet50, inception_v3, 78 more image-classification"
    ):
        await client.submit("gpt-5")
    with pytest.raises(Invalid, match="needs a file of lines"):
        await client.submit("shout")
    with pytest.raises(NotFound, match="no such job: job-9"):
        await client.status("job-9")
    with pytest.raises(Invalid, match="BATCH must be"):
        await client.set_batch_size("shout", 0)
    assert (await client.set_batch_size("Shout", 3)).batch_size == 3


def toy_worker_side(state: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """A kind's worker-process part: it keeps state (a warm model) between calls."""
    state["calls"] = state.get("calls", 0) + 1
    return {"loud": [w.upper() for w in args["words"]], "calls": state["calls"]}


def test_the_worker_process_runs_a_kinds_own_function() -> None:
    entry = f"{__name__}:toy_worker_side"
    request = {"op": "kind", "id": 7, "entry": entry, "args": {"words": ["a", "b"]}}
    runner: Any = None  # the kind op needs no ModelRunner
    assert worker_main.handle(runner, request) == {
        "ok": True,
        "id": 7,
        "loud": ["A", "B"],
        "calls": 1,
    }
    assert worker_main.handle(runner, request)["calls"] == 2  # the state stayed warm
    bad = worker_main.handle(runner, {"op": "kind", "entry": "no-colon"})
    assert bad == {"ok": False, "error": "ValueError: 'entry' must be 'module:function'"}


async def test_the_benchmarks_noop_kind_answers_without_the_worker_process(
    cluster: tuple[dict[str, InferenceService], DictFiles], tmp_path: Path
) -> None:
    nodes, files = cluster
    for i in range(20):
        files.data[f"noop/{i:02d}"] = b"x"
    client = InferenceClient(MemView(nodes, "H2"), files)
    assert (await client.set_batch_size("NOOP", 8)).model == "noop"
    job = await client.submit("noop", pattern="noop/*")
    assert await _wait_done(client, job.job_id) == "done"
    await client.get_output(job.job_id, tmp_path / "out.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines == [{"input": f"noop/{i:02d}", "top5": []} for i in range(20)]
    assert all(node.worker.process.starts == 0 for node in nodes.values())
    with pytest.raises(Invalid, match=r"COUNT must be 1\.\.0 \(the files in images/\*\), got 3"):
        await client.submit("noop", count=3)


async def test_a_paced_noop_model_holds_its_worker_for_its_pace_per_query(
    cluster: tuple[dict[str, InferenceService], DictFiles],
) -> None:
    nodes, files = cluster
    for i in range(8):
        files.data[f"noop/{i:02d}"] = b"x"
    client = InferenceClient(MemView(nodes, "H2"), files)
    assert (await client.set_batch_size("NOOP-50ms", 4)).model == "noop-50ms"
    start = trio.current_time()
    job = await client.submit("noop-50ms", pattern="noop/*")
    assert await _wait_done(client, job.job_id) == "done"
    # Two workers, batches of 4 at 0.05 s a query: 0.2 s (virtual) each.
    assert 0.2 <= trio.current_time() - start <= 1.0
    latency = (await client.latency())["noop-50ms"]
    # Measured: the pace, and the timer's lateness on top.
    assert 0.05 <= latency["mean"] < 0.1 and latency["count"] == 8
    # The leader's timing log, as `plot` reads it: each batch from its start to its end.
    rows = await client.timings(job.job_id)
    assert sorted(int(r["query"]) for r in rows) == list(range(8))
    for r in rows:
        n = sum(1 for x in rows if x["batch_id"] == r["batch_id"])  # a first batch probes: 1
        ran = float(r["finished_at"]) - float(r["started_at"])
        assert 0.05 * n - 1e-3 <= ran <= 0.05 * n + 0.3, (n, ran)
    with pytest.raises(NotFound, match="no such job: job-99"):
        await client.timings("job-99")
    for bad in ("noop-0ms", "noop-60001ms", "noop-5", "noop-ms"):
        with pytest.raises(Invalid, match="unknown model"):
            kinds.resolve(bad)
