"""The scheduler's shell on the leader: applies events, carries out actions, answers.

The leader (the first live member in ring order, as for SDFS, holding the majority
lease: see :mod:`inference.service`) owns the
:class:`~inference.scheduler.Scheduler`, under the lease term it took over with
(:attr:`Leader.term`).  Every state change is an event
(:mod:`inference.events`): :meth:`Leader.apply` applies it, hands it to the hot
standbys' replicators (``on_applied``), logs the query timings of answered batches
(:mod:`inference.timings`) and carries out the actions: batches go to workers
(:class:`~net.messages.AssignBatch`), finished jobs are written to
``outputs/JOB_ID.jsonl`` in the file store, one line per query as the job's kind
shapes it (:mod:`inference.kinds`), and then forgotten (a replicated ``Forget``; a
write that fails is retried until it lands, while this node leads).  A member whose
first capacity request fails is asked again, with back-off, as long as it is a member.
A timer feeds the scheduler a ``Tick`` when its next batch deadline passes.

:meth:`Leader.handle` answers the typed leader requests of :mod:`inference.client`
(C1-C5, and a page of a job's results so far in completion order for a client that
iterates them while the job runs) and the workers' :class:`~net.messages.BatchResult`.
A node that is not (yet) the scheduler answers ``Failure(NOT_READY)``, so callers retry
(:func:`membership.peers.call_leader`); other failures go back as their
:mod:`net.errors` kind.  A node first in ring order without the lease (a minority
side) answers clients ``NO_QUORUM`` ("no majority: ...", at once) and workers
``NOT_READY`` (they offer their results again, to whoever leads by then).

Everything it does is checked against the lease (:meth:`Leader.holds_lease`: the lease
is still of this leadership's term): a batch is sent, a request answered and a
result or submission acknowledged only while it holds; an acknowledgement also waits
until a majority holds the event (``wait_replicated``).  A leader that stops
(:meth:`Leader.step_down`) hands its state back to be kept as this node's copy.

Times given to the scheduler come from ``clock``: wall-clock seconds by default, so
that they mean the same on a new leader.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from config.topology import InferenceConfig
from inference import kinds
from inference.busy import BusyRecord
from inference.events import (
    Action,
    Answered,
    Assign,
    BatchDone,
    BatchFailed,
    BatchLost,
    Event,
    Forget,
    JobAccepted,
    JobFinished,
    JobStarted,
    QueryGaveUp,
    SetBatchSize,
    Submit,
    Takeover,
    Tick,
    WorkerDown,
    WorkerStalled,
    WorkerUp,
)
from inference.files import FileStore
from inference.scheduler import Scheduler, SchedulerConfig
from inference.timings import TimingLog, read_page
from membership.peers import ClusterView
from net.errors import ClusterError, Invalid, NoQuorum, NotFound, NotReady, to_failure
from net.limits import MAX_BATCH, MAX_COUNT, check_finite, check_pattern, check_range
from net.messages import (
    AssignBatch,
    Assignments,
    AssignmentsRequest,
    BatchResult,
    BatchSizeSet,
    Capacity,
    CapacityRequest,
    ErrorReply,
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
    StoreAck,
    SubmitJob,
    TimingsRequest,
)
from net.rpc import RpcError

# What the leader answers (the node routes these here).
LEADER_REQUESTS = (
    BatchResult,
    Capacity,  # a worker's own announcement: what it can serve changed
    RatesRequest,
    LatencyRequest,
    SetBatchSizeRequest,
    SubmitJob,
    JobStatusRequest,
    AssignmentsRequest,
    JobResultsRequest,
    TimingsRequest,
)
# The longest processing time a worker may report for one query (a day): anything
# more, or NaN, or a negative time, is a broken or hostile worker.
MAX_QUERY_SECONDS = 86_400.0
# What a worker that does not say what it can run is taken to run.
DEFAULT_CAPACITY: dict[str, Any] = {"threads": 1, "slots": 1}
# How long a new worker has to say what it can run.
CAPACITY_TIMEOUT = 2.0
# Pauses between capacity requests to a member that did not answer (doubling to the
# cap): it stays a candidate worker for as long as it is a member.
CAPACITY_RETRY_FIRST = 0.5
CAPACITY_RETRY_MAX = 5.0
# A page of a running job's results (JobResultsRequest): at most this many rows, and
# no more once the rows' JSON passes RESULTS_PAGE_BYTES (frames are at most 16 MiB;
# an image row is ~250 bytes, a grading row a few KB).
MAX_RESULTS_PAGE = 1000
RESULTS_PAGE_BYTES = 4 << 20
# Writing a finished job's output is retried a second later, then two, ... up to this.
OUTPUT_RETRY_MAX = 10.0

Clock = Callable[[], float]
# A copy of a scheduler to take over: (scheduler, its event number, its old leader).
Copy = tuple[Scheduler, int, str]
# The lease term this node holds now (a majority lease), None when it holds none.
Lease = Callable[[], int | None]
# Batch ids of a leadership under lease term T start at T x TERM_BATCHES, so that a
# late answer to a batch of an earlier leadership never matches one of a later one.
TERM_BATCHES = 1 << 32
# Requests a worker sends on its own: refused as NOT_READY (the worker keeps offering
# them, to whoever leads with a majority by then) where a client's get NO_QUORUM.
WORKER_REQUESTS = (BatchResult, Capacity)


class Leader:
    """The scheduler and everything it does while this node leads."""

    def __init__(
        self,
        me: str,
        view: ClusterView,
        files: FileStore,
        config: InferenceConfig,
        data_dir: Path,
        clock: Clock,
        log: logging.Logger,
        on_applied: Callable[[int, Event], None],
        lease: Lease | None = None,
    ) -> None:
        self.me = me
        self.view = view
        self.files = files
        self.config = config
        self.data_dir = data_dir
        self.clock = clock
        self.log = log
        self._on_applied = on_applied
        # Without one (a leader on its own, in tests) it always holds its own term.
        self.lease: Lease = lease or (lambda: self.term)
        # Whether a majority of the configured nodes is in this node's view (the
        # service sets it): without the lease, that means the lease is being taken.
        self.majority_in_view: Callable[[], bool] = lambda: False
        self.sched: Scheduler | None = None
        self.term = 0  # the lease term this node leads under (while sched is set)
        self.seq = 0  # events applied by this scheduler, across leaders
        # Jobs whose output is being written now (a finished job is forgotten once its
        # output is in the store, so this holds only finished jobs not yet forgotten).
        self._writing: set[str] = set()
        self.timings = TimingLog(data_dir / "query_timings.csv", log)
        # Recent batches per worker, for the dashboard's busy timeline (not replicated).
        self.busy = BusyRecord()
        self._timer_wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        # Waits until the hot standby holds an event (by number); the service wires
        # the replicator's.  A worker's result and a client's submission are answered
        # only after that, so that what was acknowledged survives this node's crash.
        self.wait_replicated: Callable[[int], Awaitable[bool]] | None = None

    @property
    def active(self) -> bool:
        return self.sched is not None

    def state(self) -> tuple[Scheduler, int, int] | None:
        """The scheduler, its event number and the term it leads under (for the
        standbys), None when not leading."""
        return None if self.sched is None else (self.sched, self.seq, self.term)

    def holds_lease(self) -> bool:
        """Leading, under a lease still held: only then are batches sent, results taken
        and answers given."""
        return self.sched is not None and self.lease() == self.term

    def no_majority(self) -> str:
        return (
            f"no majority: {self.me} holds no lease of a majority of the configured nodes "
            "(a network partition?); ask a node on the majority side"
        )

    # --- life cycle ------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timer_loop)
                task_status.started()
        finally:
            self.timings.close()

    def become(self, copy: Copy | None, live: list[str], term: int = 1) -> None:
        """Start scheduling under lease ``term``: from ``copy`` (a takeover: the freshest
        state a majority holds) or from nothing."""
        assert self._nursery is not None
        now = self.clock()
        self.term = term
        first_batch = term * TERM_BATCHES
        if copy is not None:
            self.sched, self.seq, old = copy
            jobs = self.sched.job_ids()
            self.log.warning(
                "%s takes over scheduling from %s at event %d under term %d (%d jobs, "
                "%d queries done)",
                self.me,
                old,
                self.seq,
                term,
                len(jobs),
                sum(self.sched.status(j)["done"] for j in jobs),
            )
            self.apply(Takeover(tuple(live), now, first_batch))
        else:
            self.sched = Scheduler(
                SchedulerConfig(
                    policy=self.config.policy,
                    batch_size=self.config.batch_size,
                    max_batch_seconds=self.config.max_batch_seconds,
                )
            )
            self.sched.takeover((), now, first_batch)  # before any standby has it
            self.seq = 0
            self.log.warning(
                "%s is the scheduler under term %d (no copy to take over)", self.me, term
            )
        sched = self.sched
        for name in live:
            self._nursery.start_soon(self.add_worker, name)
        # Jobs that finished under the old leader may not have their output yet.
        for job_id in sched.job_ids():
            if sched.status(job_id)["state"] in ("done", "failed"):
                self._nursery.start_soon(self._write_output, job_id, True)

    def step_down(self, why: str) -> tuple[Scheduler, int, int] | None:
        """Stop scheduling; the state (scheduler, event number, term) is returned to be
        kept as this node's copy: it may be the freshest one for the next leader."""
        state = self.state()
        if state is not None:
            self.log.warning(
                "%s is no longer the scheduler (%s); keeps its state at term %d event %d",
                self.me,
                why,
                self.term,
                self.seq,
            )
        self.sched = None
        return state

    # --- workers -------------------------------------------------------------------

    def worker_down(self, name: str) -> None:
        self.apply(WorkerDown(name, self.clock()))

    def worker_joined(self, name: str) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self.add_worker, name)

    async def add_worker(self, name: str) -> None:
        """Ask ``name`` what it can run and make it a worker; asked again (with back-off)
        while it does not answer, as long as it is a member and we lead."""
        sched, delay = self.sched, CAPACITY_RETRY_FIRST
        while True:
            if self.sched is None or self.sched is not sched or name not in self.view.ring():
                return  # membership says it is gone (or we stopped leading)
            try:
                reply = await self.view.call(name, CapacityRequest(), timeout=CAPACITY_TIMEOUT)
                capacity = reply.capacity if isinstance(reply, Capacity) else {}
                break
            except RpcError as e:
                self.log.info("%s: no capacity answer (%s); asking again in %.1f s", name, e, delay)
                await trio.sleep(delay)
                delay = min(2 * delay, CAPACITY_RETRY_MAX)
        if self.sched is not None and self.sched is sched and name in self.view.ring():
            try:
                self.apply(WorkerUp(name, capacity or DEFAULT_CAPACITY, self.clock()))
            except ValueError as e:
                # A peer's answer: an unusable one must not end this node (this task
                # runs in the leader's nursery).  The worker still gets the least work.
                self.log.warning(
                    "%s: unusable capacity (%s); taken as %s", name, e, DEFAULT_CAPACITY
                )
                self.apply(WorkerUp(name, DEFAULT_CAPACITY, self.clock()))

    # --- applying events ------------------------------------------------------------

    def apply(self, event: Event) -> list[Action]:
        """Apply one scheduler event, replicate it, log timings, carry out actions."""
        if self.sched is None:
            return []
        actions = self.sched.handle(event)
        if isinstance(event, BatchDone):
            # Only the answers the scheduler counted (a duplicate is not a query run).
            for a in actions:
                if isinstance(a, Answered):
                    self.timings.record(
                        event, a.job_id, a.model, frozenset(a.indices), a.started_at
                    )
                    self.busy.done(
                        event.worker, a.job_id, a.model, a.started_at, event.now, event.timings
                    )
        self.seq += 1
        self._on_applied(self.seq, event)
        self._timer_wake.set()
        self._execute(actions)
        return actions

    def _execute(self, actions: list[Action]) -> None:
        assert self._nursery is not None
        for a in actions:
            if isinstance(a, Assign):
                self._nursery.start_soon(self._send_batch, a)
            elif isinstance(a, JobFinished):
                self.log.warning("%s %s", a.job_id, a.state)
                self._nursery.start_soon(self._write_output, a.job_id, False)
            elif isinstance(a, JobStarted):
                self.log.info(
                    "%s (%s) started %.2f s after submission", a.job_id, a.model, a.waited
                )
            elif isinstance(a, JobAccepted):
                self.log.info("%s accepted: %s over %d inputs", a.job_id, a.model, a.total)
            elif isinstance(a, BatchLost):
                self.log.warning(
                    "batch %d of %s on %s lost (%s); %d queries requeued",
                    a.batch_id,
                    a.job_id,
                    a.worker,
                    a.reason,
                    a.requeued,
                )
            elif isinstance(a, WorkerStalled):
                self._nursery.start_soon(self.add_worker, a.worker)  # alive? then work
            elif isinstance(a, QueryGaveUp):
                self.log.warning(
                    "%s query %d (%s) gave up: %s", a.job_id, a.index, a.input, a.error
                )

    async def _send_batch(self, a: Assign) -> None:
        if not self.holds_lease():
            # Lost the lease since: whoever leads next re-times the batch (it is in
            # the state) and, unanswered, gives it up and sends its queries again.
            return
        request = AssignBatch(a.batch_id, a.job_id, a.model, tuple(a.queries))
        try:
            reply = await self.view.call(a.worker, request)
        except RpcError as e:
            self.apply(
                BatchFailed(a.worker, a.batch_id, f"cannot reach {a.worker}: {e}", self.clock())
            )
            return
        if not (isinstance(reply, StoreAck) and reply.ok):
            why = reply.error if isinstance(reply, (StoreAck, ErrorReply)) else str(reply)
            self.apply(BatchFailed(a.worker, a.batch_id, why, self.clock()))

    async def _write_output(self, job_id: str, only_if_missing: bool) -> None:
        """Write outputs/JOB_ID.jsonl to the store (one line per query, in query order),
        then forget the job: from then on its results are in the store only."""
        sched = self.sched
        if sched is None or job_id in self._writing or sched.forgotten(job_id):
            return
        self._writing.add(job_id)
        try:
            await self._write_then_forget(sched, job_id, only_if_missing)
        finally:
            self._writing.discard(job_id)

    def _forget(self, sched: Scheduler, job_id: str) -> None:
        # Still the scheduler that finished the job: replicated, so the standby forgets too.
        if self.sched is sched and not sched.forgotten(job_id):
            self.apply(Forget(job_id))

    async def _write_then_forget(
        self, sched: Scheduler, job_id: str, only_if_missing: bool
    ) -> None:
        name = f"outputs/{job_id}.jsonl"
        if only_if_missing:
            with contextlib.suppress(ClusterError):
                await self.files.newest_version(name)
                self._forget(sched, job_id)
                return
        rows = sched.results(job_id)
        kind = kinds.kind_of(sched.status(job_id)["model"])
        tmp = self.data_dir / "outputs" / f"{job_id}-{uuid.uuid4().hex[:6]}.jsonl"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w") as f:
            for row in rows:
                f.write(json.dumps(kind.output_line(row)) + "\n")
        del rows
        attempt = 0
        try:
            # Until it is written (the job's results are held until then), while this
            # scheduler leads; a new leader writes what its copy finished.
            while self.sched is sched:
                try:
                    await self.files.put(tmp, name)
                    total = sched.status(job_id)["total"]
                    self.log.warning("%s: %d results written to %s", job_id, total, name)
                    self._forget(sched, job_id)
                    return
                except ClusterError as e:
                    attempt += 1
                    self.log.warning(
                        "%s: writing %s failed (attempt %d): %s", job_id, name, attempt, e
                    )
                    await trio.sleep(min(float(attempt), OUTPUT_RETRY_MAX))
        finally:
            tmp.unlink(missing_ok=True)

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.sched.next_deadline() if self.sched is not None else float("inf")
            wait = min(max(deadline - self.clock(), 0.0), 1.0)
            with trio.move_on_after(wait):
                await self._timer_wake.wait()
            self._timer_wake = trio.Event()
            now = self.clock()
            if self.sched is not None and now >= self.sched.next_deadline():
                self.apply(Tick(now))

    # --- requests ----------------------------------------------------------------------

    async def handle(self, request: Any) -> Any:
        """The answer to one of :data:`LEADER_REQUESTS`; failures as ``Failure``."""
        try:
            return await self._answer(request)
        except ClusterError as e:
            return to_failure(e)

    async def _answer(self, request: Any) -> Any:
        sched = self.sched
        if sched is None or not self.holds_lease():
            if self.view.leader() == self.me and self.lease() is None:
                # First in ring order on this side of a partition, without a majority:
                # it must not schedule.  Clients hear why at once; workers keep trying.
                if isinstance(request, WORKER_REQUESTS):
                    raise NotReady(self.no_majority())
                if self.majority_in_view():  # taking the lease: a retry will do
                    raise NotReady(f"not ready: {self.me} is taking the majority lease")
                raise NoQuorum(self.no_majority())
            raise NotReady(f"not ready: {self.me} is not the scheduler")
        if isinstance(request, BatchResult):
            for t in request.timings:  # NaN or inf would poison C2's statistics
                check_finite(t, 0.0, MAX_QUERY_SECONDS, "a query's processing time")
            now = self.clock()
            if request.error:
                self.apply(BatchFailed(request.worker, request.batch_id, request.error, now))
            else:
                self.apply(
                    BatchDone(
                        request.worker,
                        request.batch_id,
                        tuple(request.results),
                        tuple(request.timings),
                        now,
                    )
                )
            # Acknowledged only once the standby has it: a result acknowledged and then
            # lost with this node would leave its batch to time out on the next leader.
            await self._replicated(self.seq, worker=True)
            return StoreAck(True)
        if isinstance(request, Capacity):
            if request.node not in self.view.ring():
                raise Invalid(f"{request.node} is not a member")
            try:
                self.apply(WorkerUp(request.node, dict(request.capacity), self.clock()))
            except ValueError as e:
                raise Invalid(f"unusable capacity from {request.node}: {e}") from None
            await self._replicated(self.seq, worker=True)
            return StoreAck(True)
        if isinstance(request, RatesRequest):
            return Rates(sched.c1(self.clock())["models"])
        if isinstance(request, LatencyRequest):
            return Latency(sched.c2()["models"])
        if isinstance(request, SetBatchSizeRequest):
            _, model = kinds.resolve(request.model)
            check_range(request.batch_size, 1, MAX_BATCH, "BATCH")
            self.apply(SetBatchSize(model, request.batch_size))
            return BatchSizeSet(model, sched.batch_size(model))
        if isinstance(request, SubmitJob):
            return await self._submit(sched, request)
        if isinstance(request, JobStatusRequest):
            try:
                return JobStatus(**sched.status(request.job_id))
            except KeyError:
                raise NotFound(
                    f"no such job: {request.job_id} (or it finished before the last "
                    f"{sched.config.keep_finished} finished jobs; its output, if any, "
                    f"is outputs/{request.job_id}.jsonl)"
                ) from None
        if isinstance(request, AssignmentsRequest):
            return Assignments(sched.assignments())
        if isinstance(request, JobResultsRequest):
            return self._results(sched, request)
        if isinstance(request, TimingsRequest):
            if not isinstance(request.job_id, str) or not request.job_id:
                raise Invalid(f"a job id is a name like job-1, not {request.job_id!r}")
            check_range(request.offset, 0, 2**62, "offset")
            page = await trio.to_thread.run_sync(
                read_page, self.timings.path, request.job_id, request.offset
            )
            if request.offset == 0 and not page.rows and not _known(sched, request.job_id):
                raise NotFound(f"no such job: {request.job_id}")
            return page
        raise Invalid(f"{type(request).__name__} is not a leader request")

    def _results(self, sched: Scheduler, request: JobResultsRequest) -> JobResults:
        """A page of a job's rows in completion order, shaped as its output lines."""
        check_range(request.offset, 0, MAX_COUNT, "offset")
        check_range(request.limit, 1, MAX_RESULTS_PAGE, "limit")
        try:
            status = sched.status(request.job_id)
        except KeyError:
            raise NotFound(f"no such job: {request.job_id}") from None
        state, done, total = status["state"], status["done"], status["total"]
        if sched.forgotten(request.job_id):
            return JobResults(request.job_id, state, done, total, (), request.offset, False, True)
        kind = kinds.kind_of(status["model"])
        rows: list[tuple[int, dict[str, Any]]] = []
        size = 0
        for index, row in sched.results_since(request.job_id, request.offset, request.limit):
            line = kind.output_line(row)
            rows.append((index, line))
            size += len(json.dumps(line, default=str))
            if size >= RESULTS_PAGE_BYTES:
                break
        end = request.offset + len(rows)
        return JobResults(request.job_id, state, done, total, tuple(rows), end, end < done)

    async def _submit(self, sched: Scheduler, request: SubmitJob) -> JobSubmitted:
        kind, model = kinds.resolve(request.model)
        if request.count is not None:
            check_range(request.count, 1, MAX_COUNT, "COUNT")
        if request.pattern is not None:
            check_pattern(request.pattern, "GLOB")
        inputs = await kind.queries(self.files, model, request.pattern, request.count)
        if self.sched is not sched:
            raise NotReady("not ready: leadership moved while submitting")
        actions = self.apply(Submit(None, model, tuple(inputs), self.clock()))
        accepted = next(a for a in actions if isinstance(a, JobAccepted))
        # A job id given out survives this node: it is on a majority.
        await self._replicated(
            self.seq,
            what=f"; {accepted.job_id} may run anyway, see its status before submitting again",
        )
        return JobSubmitted(accepted.job_id, accepted.model, accepted.total)

    async def _replicated(self, seq: int, worker: bool = False, what: str = "") -> None:
        """Return once event ``seq`` is on a majority (this node and enough standbys)
        while this node still holds its lease; else refuse the acknowledgement: a
        worker offers its result again (a duplicate counts once), a client is told,
        and does not submit again blindly."""
        copied = True if self.wait_replicated is None else await self.wait_replicated(seq)
        if not self.holds_lease():
            # Lost the lease (or leadership) meanwhile: its state may not be the next
            # leader's, so nothing it did since is acknowledged.
            why = self.no_majority()
        elif not copied:
            why = (
                f"no majority: {self.me} could not copy it to a majority of the configured "
                "nodes in time (a partition, or standbys down?)"
            )
        else:
            return
        if worker:
            raise NotReady(why)
        raise NoQuorum(f"{why}{what}")


def _known(sched: Scheduler, job_id: str) -> bool:
    """The scheduler has heard of ``job_id`` (running, finished, or forgotten lately)."""
    try:
        sched.status(job_id)
    except KeyError:
        return False
    return True
