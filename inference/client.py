"""The typed client of IDunno: what the console commands C1-C5 call, on any node.

Each method is one typed request to the scheduler on the leader, sent with
:func:`membership.peers.call_leader` (retried while leadership moves or the new leader
is not ready yet); failures come back as :mod:`net.errors` types (Invalid for an
unknown model, NotFound for an unknown job, NotReady when no scheduler answered).
:meth:`InferenceClient.get_output` also reads the job's output file from the file
store, into a local path of the caller's.  Nothing here knows about the console.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from inference.files import FileStore
from membership.peers import LEADER_RETRY_WINDOW, ClusterView
from net.errors import Conflict, Invalid, NotFound, expect
from net.messages import (
    Assignments,
    AssignmentsRequest,
    BatchSizeSet,
    JobResults,
    JobResultsRequest,
    JobStatus,
    JobStatusRequest,
    JobSubmitted,
    Latency,
    LatencyRequest,
    Rates,
    RatesRequest,
    SetBatchSizeRequest,
    SubmitJob,
    TimingRows,
    TimingsRequest,
)
from net.progress import Progress

# How long one leader request may take: a submission lists the store's files first.
LEADER_TIMEOUT = 30.0
# How long get-output waits for a finished job's output file to appear in the store
# (the leader writes it when the job finishes; a new leader rewrites a missing one).
OUTPUT_WAIT = 30.0
OUTPUT_POLL = 0.5
# How often a reader of a running job's results asks the leader for new rows.
RESULTS_POLL = 0.5
TERMINAL = ("done", "failed")


@dataclass(frozen=True)
class Output:
    """What get-output fetched: the job, its result lines, its final state."""

    job_id: str
    results: int
    state: str


@dataclass
class ResultCursor:
    """Where a reader of a job's results is: the leader's offset (rows in completion
    order), the query indices it has had, and whether it has had them all."""

    offset: int = 0
    seen: set[int] = field(default_factory=set)
    finished: bool = False


class InferenceClient:
    def __init__(
        self, view: ClusterView, files: FileStore, window: float = LEADER_RETRY_WINDOW
    ) -> None:
        self.view = view
        self.files = files
        self.window = window

    async def _ask(self, request: Any, cls: type[Any], what: str) -> Any:
        reply = await self.view.call_leader(request, LEADER_TIMEOUT, self.window)
        return expect(reply, cls, what)

    async def rates(self) -> dict[str, Any]:
        """C1: ``{MODEL: {"query_rate", "query_count"}}``."""
        reply: Rates = await self._ask(RatesRequest(), Rates, "C1")
        return reply.models

    async def latency(self) -> dict[str, Any]:
        """C2: ``{MODEL: {"mean", "std", "median", "p90", "p95", "p99"}}``."""
        reply: Latency = await self._ask(LatencyRequest(), Latency, "C2")
        return reply.models

    async def set_batch_size(self, model: str, n: int) -> BatchSizeSet:
        """C3."""
        reply: BatchSizeSet = await self._ask(
            SetBatchSizeRequest(model, n), BatchSizeSet, f"C3 {model}"
        )
        return reply

    async def submit(
        self, model: str, pattern: str | None = None, count: int | None = None
    ) -> JobSubmitted:
        """C4 submit-job: over the inputs ``pattern`` names, or ``count`` random ones."""
        reply: JobSubmitted = await self._ask(
            SubmitJob(model, pattern, count), JobSubmitted, f"submit {model}"
        )
        return reply

    async def status(self, job_id: str) -> JobStatus:
        """C4 status."""
        reply: JobStatus = await self._ask(JobStatusRequest(job_id), JobStatus, job_id)
        return reply

    async def results_page(self, job_id: str, offset: int = 0, limit: int = 1000) -> JobResults:
        """Up to ``limit`` of the job's rows in completion order, from ``offset`` on."""
        reply: JobResults = await self._ask(
            JobResultsRequest(job_id, offset, limit), JobResults, job_id
        )
        return reply

    async def next_results(
        self, job_id: str, cursor: ResultCursor, poll: float = RESULTS_POLL
    ) -> list[dict[str, Any]]:
        """The rows (as ``outputs/JOB_ID.jsonl`` lines) completed since ``cursor`` last
        looked, once there is at least one; ``[]`` and ``cursor.finished`` once the
        reader has had every row.  Asks the leader every ``poll`` seconds meanwhile.

        The leader answers from its scheduler while it holds the job; once the job is
        written out and forgotten, the rest comes from its output file (whose line i is
        query i).  A new leader may list the rows it inherited in another order: when
        a finished job's rows end and some were never seen, the reader starts again
        from 0, skipping what it had (each row is yielded once, by query index)."""
        while not cursor.finished:
            try:
                page = await self.results_page(job_id, cursor.offset)
            except NotFound:  # long gone from the leader's table: its output file, if any
                return await self._rest_from_output(job_id, cursor)
            if page.forgotten:
                return await self._rest_from_output(job_id, cursor)
            fresh = [row for i, row in page.rows if i not in cursor.seen]
            cursor.seen.update(i for i, _ in page.rows)
            cursor.offset = page.next_offset
            if page.state in TERMINAL and not page.more:
                if len(cursor.seen) >= page.total:
                    cursor.finished = True
                else:
                    cursor.offset = 0
            if fresh:
                return fresh
            if not page.more and not cursor.finished:
                await trio.sleep(poll)
        return []

    async def _rest_from_output(self, job_id: str, cursor: ResultCursor) -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory(prefix="idunno-results-") as tmp:
            local = Path(tmp) / "output.jsonl"
            try:
                await self.files.get(f"outputs/{job_id}.jsonl", local)
            except NotFound:
                raise NotFound(f"no such job: {job_id}, and no outputs/{job_id}.jsonl") from None
            with local.open() as f:
                lines = [line for line in f if line.strip()]
        rows = [json.loads(line) for i, line in enumerate(lines) if i not in cursor.seen]
        cursor.seen.update(range(len(lines)))
        cursor.finished = True
        return rows

    async def assignments(self) -> dict[str, Any]:
        """C5: ``{JOB_ID: {"model", "workers": [NODE...]}}``."""
        reply: Assignments = await self._ask(AssignmentsRequest(), Assignments, "C5")
        return reply.jobs

    async def timings(self, job_id: str) -> list[dict[str, str]]:
        """``job_id``'s rows of the leader's timing log (``query_timings.csv``), each a
        dict by column, in the order they were logged; NotFound for an unknown job."""
        rows: list[dict[str, str]] = []
        offset: int | None = 0
        while offset is not None:
            page: TimingRows = await self._ask(
                TimingsRequest(job_id, offset), TimingRows, f"timings of {job_id}"
            )
            rows += [dict(zip(page.columns, r, strict=False)) for r in page.rows]
            if page.next_offset is not None and page.next_offset <= offset:
                raise Invalid(f"the leader's timing log pages do not advance ({offset})")
            offset = page.next_offset
        return rows

    async def get_output(
        self, job_id: str, local: Path, progress: Progress | None = None
    ) -> Output:
        """C4 get-output: copy a finished job's output file to ``local``.

        Conflict while the job is still queued or running.  A job finished so long ago
        that the leader no longer tracks it (it keeps the most recent finished jobs) is
        read from its output file if that is there; NotFound otherwise."""
        try:
            status = await self.status(job_id)
        except NotFound:
            return await self._old_output(job_id, local, progress)
        if status.state not in ("done", "failed"):
            raise Conflict(
                f"{job_id} is {status.state} ({status.done} of {status.total} queries "
                "done); get its output when it is done"
            )
        name = f"outputs/{job_id}.jsonl"
        deadline = trio.current_time() + OUTPUT_WAIT
        while True:
            try:
                await self.files.get(name, local, progress)
                break
            except NotFound:
                if trio.current_time() > deadline:
                    raise
                await trio.sleep(OUTPUT_POLL)
        with local.open() as f:
            results = sum(1 for line in f if line.strip())
        return Output(job_id, results, status.state)

    async def _old_output(self, job_id: str, local: Path, progress: Progress | None) -> Output:
        try:
            await self.files.get(f"outputs/{job_id}.jsonl", local, progress)
        except NotFound:
            raise NotFound(f"no such job: {job_id}, and no outputs/{job_id}.jsonl") from None
        with local.open() as f:
            lines = [json.loads(line) for line in f if line.strip()]
        # The scheduler's own rule: a job fails when every query ended in an error row.
        failed = bool(lines) and all(isinstance(x, dict) and x.get("error") for x in lines)
        return Output(job_id, len(lines), "failed" if failed else "done")
