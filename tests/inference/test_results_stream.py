"""A job's results while it runs: the leader's pages (JobResultsRequest) and the reader.

The leader answers a page of rows in the order the queries completed, shaped as the
job's output lines; :meth:`InferenceClient.next_results` (what ``idunno``'s
``job.results()`` iterates) polls it and yields each row once, then reads what is
left from ``outputs/JOB_ID.jsonl`` once the leader has forgotten the job.  The
whole service runs on virtual time (:mod:`tests.inference.test_service_virtual`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from inference.client import InferenceClient, ResultCursor
from inference.events import Assign
from inference.leader import MAX_RESULTS_PAGE, Leader
from inference.scheduler import Scheduler
from net.errors import ErrorKind, NotFound
from net.messages import Failure, JobResults, JobResultsRequest
from net.wire import decode, encode, registered
from tests.helpers.dictfiles import DictFiles
from tests.inference.test_service_virtual import Paced, start_cluster, wait_done

# The leader fixture (conftest) runs jobs of the paced kind here.
pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("paced")]


def test_the_new_messages_keep_their_tags_and_round_trip() -> None:
    assert registered()[170] is JobResultsRequest and registered()[171] is JobResults
    page = JobResults("job-1", "running", 2, 5, ((1, {"input": "a", "top5": []}),), 1, True)
    assert decode(encode(page)) == page
    assert decode(encode(JobResultsRequest("job-1", 7, 20))) == JobResultsRequest("job-1", 7, 20)


# --- the leader's pages --------------------------------------------------------------------


def start_job(sched: Scheduler, n: int) -> dict[int, Assign]:
    """A job of ``n`` queries of batch size 1, each on a worker of its own: its batches."""
    sched.set_batch_size("quick", 1)
    sched.submit(None, "quick", [f"quick/{i}" for i in range(n)], 0.0)
    assigns = [
        a
        for w in range(n)
        for a in sched.worker_up(f"W{w}", {"threads": 1, "slots": 1}, 0.0)
        if isinstance(a, Assign)
    ]
    return {a.queries[0][0]: a for a in assigns}


def finish(sched: Scheduler, batches: dict[int, Assign], *queries: int) -> None:
    for i in queries:
        a = batches[i]
        row = {"input": f"quick/{i}", "n": i}
        sched.batch_done(a.worker, a.batch_id, [(i, row)], [0.1], 1.0 + i)


def run_batches(sched: Scheduler, n: int, order: list[int]) -> str:
    """A job of ``n`` queries of which those in ``order`` end, in that order."""
    batches = start_job(sched, n)
    finish(sched, batches, *order)
    return batches[0].job_id


async def test_a_page_lists_rows_in_completion_order_from_an_offset(leader: Leader) -> None:
    assert leader.sched is not None
    job = run_batches(leader.sched, 6, [4, 0, 2])
    page = await leader.handle(JobResultsRequest(job, 0, 2))
    assert isinstance(page, JobResults)
    assert (page.state, page.done, page.total, page.next_offset, page.more) == (
        "running",
        3,
        6,
        2,
        True,
    )
    assert [i for i, _ in page.rows] == [4, 0]
    assert page.rows[0][1] == {"input": "quick/4", "n": 4}  # the kind's output line
    rest = await leader.handle(JobResultsRequest(job, 2))
    assert [i for i, _ in rest.rows] == [2] and (rest.next_offset, rest.more) == (3, False)
    empty = await leader.handle(JobResultsRequest(job, 3))
    assert (empty.rows, empty.next_offset, empty.more) == ((), 3, False)
    beyond = await leader.handle(JobResultsRequest(job, 10**7))  # a bad cursor: nothing
    assert (beyond.rows, beyond.next_offset, beyond.more) == ((), 10**7, False)


async def test_a_forgotten_job_says_so_and_an_unknown_one_is_not_found(leader: Leader) -> None:
    assert leader.sched is not None
    job = run_batches(leader.sched, 2, [1, 0])
    leader.sched.forget(job)
    page = await leader.handle(JobResultsRequest(job, 0))
    assert isinstance(page, JobResults)
    assert (page.forgotten, page.state, page.done, page.rows) == (True, "done", 2, ())
    missing = await leader.handle(JobResultsRequest("job-99", 0))
    assert isinstance(missing, Failure) and missing.kind == ErrorKind.NOT_FOUND
    assert missing.error == "no such job: job-99"


@pytest.mark.parametrize(
    ("offset", "limit", "word"),
    [
        (-1, 10, "offset"),
        (2**64 - 1, 10, "offset"),
        (0, 0, "limit"),
        (0, MAX_RESULTS_PAGE + 1, "limit"),
    ],
)
async def test_offsets_and_limits_out_of_range_are_invalid(
    leader: Leader, offset: int, limit: int, word: str
) -> None:
    reply = await leader.handle(JobResultsRequest("job-1", offset, limit))
    assert isinstance(reply, Failure) and reply.kind == ErrorKind.INVALID
    assert reply.error.startswith(f"{word} must be a whole number")


class ToTheLeader:
    """What the reader's InferenceClient sends to the leader goes to ``leader.handle``
    (the network hop, which the whole-service tests below cross for real)."""

    def __init__(self, leader: Leader) -> None:
        self.leader = leader

    async def call_leader(self, request: Any, timeout: float = 0.0, window: float = 0.0) -> Any:
        return await self.leader.handle(request)


async def test_a_new_leader_that_orders_rows_otherwise_costs_no_row(leader: Leader) -> None:
    """The copy a new leader restores lists its rows in query order, and queries the
    old leader had answered may run again: a reader past them misses rows at first,
    and reads the finished job again from 0 to have every row once."""
    sched = leader.sched
    assert sched is not None
    batches = start_job(sched, 6)
    finish(sched, batches, 4, 0)
    copy = sched.snapshot()  # what the standby holds
    finish(sched, batches, 2)
    client = InferenceClient(ToTheLeader(leader), DictFiles())  # type: ignore[arg-type]
    job, cursor = batches[0].job_id, ResultCursor()
    assert [r["n"] for r in await client.next_results(job, cursor)] == [4, 0, 2]

    leader.sched = sched = Scheduler.restore(copy)  # rows 0, 4; query 2 runs again
    finish(sched, batches, 5, 2, 1, 3)  # the new order: 0, 4, 5, 2, 1, 3
    assert [r["n"] for r in await client.next_results(job, cursor)] == [1, 3]
    assert not cursor.finished  # the job is done, but row 5 came before the offset
    assert [r["n"] for r in await client.next_results(job, cursor)] == [5]
    assert (cursor.finished, await client.next_results(job, cursor)) == (True, [])


# --- the reader, against the whole service ------------------------------------------------


async def test_rows_arrive_while_the_job_runs_each_once_as_the_output_file_has_them(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = await start_cluster(nursery, 3, paced, tmp_path, monkeypatch)
    client = cluster.client("H3")
    job = await client.submit("quick", count=40)
    cursor = ResultCursor()
    arrivals: list[tuple[float, list[dict[str, Any]]]] = []
    while not cursor.finished:
        rows = await client.next_results(job.job_id, cursor, poll=0.25)
        arrivals.append((trio.current_time(), rows))
    finished = await wait_done(client, job.job_id)

    # In several deliveries, the first within a poll of the first batch's end.
    first_end = min(r.end for r in paced.runs)
    assert arrivals[0][0] <= first_end + 0.25 + 1e-9
    before_done = [t for t, rows in arrivals if rows and t < finished]
    assert len(before_done) >= 3
    assert arrivals[-1][1] == [] or arrivals[-1][0] >= finished
    # Every query once, each row as outputs/JOB_ID.jsonl holds it.
    rows = [row for _, batch in arrivals for row in batch]
    assert sorted(r["input"] for r in rows) == sorted(f"quick/{i}" for i in range(40))
    # The leader forgets the job once its output file is written.
    sched = cluster.services["H1"].leader.sched
    assert sched is not None
    await cluster.rpc.wait_until(lambda: sched.forgotten(job.job_id), timeout=30)
    output = (await cluster.files.get_bytes(f"outputs/{job.job_id}.jsonl")).decode()
    lines = [json.loads(line) for line in output.splitlines()]
    assert sorted(rows, key=lambda r: r["input"]) == sorted(lines, key=lambda r: r["input"])

    # A new reader now gets every row from the file, in query order.
    late = ResultCursor()
    assert await client.next_results(job.job_id, late) == lines and late.finished
    assert await client.next_results(job.job_id, late) == []

    with pytest.raises(NotFound, match=r"^no such job: job-77, and no outputs/job-77\.jsonl$"):
        await client.next_results("job-77", ResultCursor())


async def test_a_reader_rides_out_the_leader_s_death_and_has_every_row_once(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    paced: Paced,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = await start_cluster(nursery, 4, paced, tmp_path, monkeypatch)
    client = cluster.client("H4")
    job = await client.submit("quick", count=80)
    cursor = ResultCursor()
    rows: list[dict[str, Any]] = []
    while len(rows) < 20:
        rows += await client.next_results(job.job_id, cursor, poll=0.25)
    cluster.rpc.crash("H1")  # the leader, mid-job; H2 takes over from its copy
    while not cursor.finished:
        rows += await client.next_results(job.job_id, cursor, poll=0.25)
    assert sorted(r["input"] for r in rows) == sorted(f"quick/{i}" for i in range(80))
    assert (await client.status(job.job_id)).state == "done"
