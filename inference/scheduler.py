"""The IDunno job scheduler as a pure state machine (it runs on the leader).

Theory of operation
-------------------
A *job* is one model over a list of inputs (SDFS names for image models: what an
input is belongs to the model's job kind, :mod:`inference.kinds`, which the core never
names), one *query* per input, numbered by its position; result rows are opaque dicts.
Queries wait in the job's *pending* queue until the scheduler puts up to a batch of
them on a worker (:class:`Assign`); the worker answers the whole batch with
:meth:`Scheduler.batch_done` (one result row and one processing time per query) or
:meth:`Scheduler.batch_failed`.  A job is ``queued`` until its first batch goes out,
``running`` until every query has a result, then ``done`` (``failed`` if every query
ended in an error row), and the scheduler says :class:`JobFinished` so the shell writes
``outputs/JOB_ID.jsonl``.  Once that is in the file store the shell applies
:class:`Forget`: the job's inputs and results go (the store has them), and only its
C4 status stays, in a table of the ``keep_finished`` most recently forgotten jobs.
So the scheduler holds what running jobs need plus a bounded tail, whatever the
number of jobs it has run; everything else it keeps is bounded by the cluster (costs
per model and worker, batch sizes per model, the statistics' capped samples).

Workers advertise a capacity (``threads``, ``gpu``, ``slots``, and optionally
``unavailable``: models they cannot serve now, and ``parallel``: per model, the requests
they run at once) and hold one batch per
slot, running them one at a time (a second slot lets a node fetch the next batch's
inputs while one runs).  Whenever an event leaves a slot free and some job has pending
queries, the scheduler fills it: the worker is the one with the most free capacity
(free slots, then a GPU, then threads, then name), and the job is chosen by the policy
among those whose model the worker can serve.  A worker that announces a model
unavailable (its grading server went down) gets no more of it, and its batches of that
model go back to their queues at once, without costing their queries an attempt: the
worker is fine, the model's server is not.  A batch of a model the worker runs
``parallel`` at a time holds at least that many queries (up to the batch size), so
that its requests can all be in flight.

Fair time (policy ``"fair"``, the default).  The goal is equal *query rates* for the
jobs that run together, which means unequal *worker time*: a model that costs three
times as much per query needs three times the worker time.  Each job carries a
``served`` count: queries dispatched to it, minus those that came back undone (worker
lost, batch failed or timed out).  A free slot goes to the competing job (one with
pending queries) with the smallest ``served``.  This is start-time fair queuing with
each job's share of worker time weighted by its measured cost per query, written in
units where the weights cancel: charging a job ``cost x queries / share`` with
``share = cost / sum(costs)`` is charging it ``queries x sum(costs)``, the same constant
for everyone, so ordering by queries served *is* ordering by cost-weighted worker time.
Counting a batch when it is dispatched (its queries "in flight" count in full) keeps
several slots that free at one instant from all going to the same job.

So that nobody banks credit while it has nothing to run, the scheduler keeps a virtual
time ``vtime`` (the largest ``served`` a pick has started from) and a job that starts
competing (a new job, or one whose empty queue refills) enters at
``max(served, vtime)``: a job submitted next to one that has run alone for an hour
shares from its first batch on instead of taking every worker until it has caught up.
A job whose queued queries come back undone keeps its place and is behind by exactly
those queries, so it makes them up first (a catch-up bounded by what was lost).  As
jobs arrive and finish and workers come and go, every free slot re-decides, so the
balance follows at the next batch boundary; nothing is preempted.  The simulated test
(two jobs at 0.05 and 0.15 s/query on four workers) measures their rates within 1% of
each other over 60 s; the inception-like job gets three quarters of the worker time.

Costs.  For every (model, worker) the scheduler keeps an EWMA of seconds per query,
measured as the time the batch occupied the worker, divided by its queries.  A worker
runs its batches one at a time, so a batch occupies it from its dispatch or from the
worker's previous answer, whichever is later, until its answer: a batch queued in a
second slot behind another is not charged for the wait (that would double the
estimates on two-slot workers and halve their batches), while fetching the inputs of
a batch that found the worker idle is charged.  The first answer of a pair uses the
worker's own per-query timings instead, since it also paid for loading the model.  A
pair not yet measured borrows the model's largest estimate on other workers.  The
estimates size batches (below) and set batch timeouts.  The same view feeds C1
(:mod:`inference.metrics`): each answered query is recorded over its batch's
occupancy interval, and the statistics are lent the batch each worker runs now
(since when, and its estimated length) to credit its elapsed share.

Start-up bound.  A job submitted while other jobs hold every slot starts at the next
slot that frees, which is at most the longest batch now running.  To make that a
bound, a batch is also limited to ``max_batch_seconds`` of estimated work (0.25 s by
default, ``[inference] max_batch_seconds``; at least one query): with C3's batch
size as the upper limit, a batch holds ``min(batch_size, floor(max_batch_seconds /
cost))`` queries, and a model never
measured anywhere is probed with single-query batches until it has been.  A new job
therefore waits at most ``max_batch_seconds`` plus the estimate's error (well under
1 s), and it gets that first slot because it enters at ``vtime`` with nothing in
flight, which wins the tie.  On a worker with two slots that batch then runs after
the one queued ahead of it, so the job's first answer comes within about two batches
plus its own (the inference benchmark reports both times).  The cap also sets how
finely fair time divides the workers: a job's share moves one batch at a time, and
with two workers at 6 queries/s per job a batch of 0.5 s was 5% of a 10-second
window's count; at 0.25 s every window of the real models stayed within 5%.
``max_batch_seconds=None`` turns the limit off (batches are then exactly the batch
size, and the bound is batch_size x cost).

Failures.  :meth:`Scheduler.worker_down` returns every query outstanding on the
worker to the front of its job's queue, in query order; that does not count against
the queries.  A failed batch, a batch that timed out (no answer within
``max(batch_timeout, batch_timeout_factor x expected)``), or queries a worker left out
of its answer each cost the query one attempt; after ``max_attempts`` it gets an error
row (its job kind's, e.g. ``{"input", "top5": [], "error"}``; see
:func:`inference.kinds.error_row`) and the job completes without it.  A worker
that timed out gets no more work until it answers something or is re-announced (a
hung worker costs one batch's attempts per timeout, not one per batch); the scheduler
says :class:`WorkerStalled` and the shell asks the worker what it can run, which
re-announces a live one (after a takeover, a batch the old leader recorded but never
delivered times out on a worker that has nothing left to answer).  Batches we gave up on
are remembered until their job finishes, so a late answer still counts for queries
that are not done yet (and a query answered twice counts once: the second is a
*duplicate*, ignored and counted).

Hot standby.  Every public method that changes state is an event; each has an event
dataclass (:data:`Event`, in :mod:`inference.events`: registered wire messages, so
``net.wire`` carries them), and :meth:`Scheduler.handle` applies one.  A
standby built with :meth:`Scheduler.restore` from :meth:`Scheduler.snapshot` and fed
the leader's events (each with the leader's ``now``) makes the same decisions:
nothing depends on dict or set order, and the one random policy seeds its generator
from the event (the configured seed and the batch number).  A standby that takes over
calls :meth:`Scheduler.takeover` with the live workers.  The shell should pass
wall-clock time as ``now`` so the times in the state mean the same thing on the new
leader; batches that survive a takeover are re-timed from the takeover, and their
answers are not used as cost samples.

Invariants
----------
1. Every query index of a job is in exactly one of: the pending queue, one live batch,
   the results.  (A query may additionally sit in a batch we gave up on; at most one
   answer for it is kept.)
2. ``len(results) == total`` exactly when the job is ``done`` or ``failed``; each
   query index has one result row until the job is forgotten, and it is never replaced.
3. A worker's live batches never exceed its slots, except right after a capacity
   change shrinks them.
4. ``served`` and ``in_flight`` change only by whole queries; a job's ``in_flight`` is
   the number of its queries in live batches.
5. Job numbers and batch ids only grow, across snapshots and takeovers.
6. The core never awaits, never reads a clock and never does I/O; a call that raises
   ``ValueError`` (bad arguments) has changed nothing.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from inference import kinds
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
    Query,
    QueryGaveUp,
    Row,
    SetBatchSize,
    Submit,
    Takeover,
    Tick,
    WorkerDown,
    WorkerStalled,
    WorkerUp,
)
from inference.metrics import RATE_WINDOW, QueryStats, Running
from net.meters import Histograms

# (model, input, error) -> the row of a query that failed max_attempts times.
ErrorRow = Callable[[str, str, str], Row]

POLICIES = ("fair", "round-robin", "random", "least-loaded")
ACTIVE = ("queued", "running")
TERMINAL = ("done", "failed")

_JOB_ID = re.compile(r"job-(\d+)")


@dataclass(frozen=True)
class SchedulerConfig:
    # How a free slot picks among jobs with pending queries; one of POLICIES.
    policy: str = "fair"
    # Queries per batch for a model C3 has not set; C3 changes it per model.
    batch_size: int = 8
    # Upper bound on a batch's estimated work, so a new job gets a slot within about
    # this long and fair jobs' rates stay even window by window; None disables it
    # (batches are then exactly batch_size).
    max_batch_seconds: float | None = 0.25
    # Failed attempts (failed or timed-out batches) before a query gets an error row.
    max_attempts: int = 3
    # Weight of the newest sample in the per-(model, worker) cost EWMA: ~3 batches of memory.
    cost_alpha: float = 0.3
    # A batch not answered in max(batch_timeout, batch_timeout_factor x expected) is
    # given up; the floor covers a first batch that loads the model from SDFS.
    batch_timeout: float = 60.0
    batch_timeout_factor: float = 10.0
    # Seed of the "random" policy's generator (combined with the batch number).
    seed: int = 0
    # Finished jobs whose C4 status is still answered after they are forgotten (their
    # output is in the file store): a bounded table of the most recent ones.
    keep_finished: int = 1000

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.max_batch_seconds is not None and self.max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, not {self.max_batch_seconds}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if not 0 < self.cost_alpha <= 1:
            raise ValueError(f"cost_alpha must be in (0, 1], not {self.cost_alpha}")
        if self.batch_timeout <= 0 or self.batch_timeout_factor <= 0:
            raise ValueError("batch_timeout and batch_timeout_factor must be positive")
        if self.keep_finished < 0:
            raise ValueError(f"keep_finished must not be negative, not {self.keep_finished}")

    def to_plain(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_plain(cls, d: Mapping[str, Any]) -> SchedulerConfig:
        mbs = d["max_batch_seconds"]
        return cls(
            policy=str(d["policy"]),
            batch_size=int(d["batch_size"]),
            max_batch_seconds=None if mbs is None else float(mbs),
            max_attempts=int(d["max_attempts"]),
            cost_alpha=float(d["cost_alpha"]),
            batch_timeout=float(d["batch_timeout"]),
            batch_timeout_factor=float(d["batch_timeout_factor"]),
            seed=int(d["seed"]),
            keep_finished=int(d.get("keep_finished", cls.keep_finished)),
        )


# --- state -----------------------------------------------------------------------------------


@dataclass
class Job:
    job_id: str
    seq: int  # submission order: every tie between jobs goes to the older one
    model: str
    inputs: tuple[str, ...]
    submitted_at: float
    state: str = "queued"
    started_at: float | None = None
    finished_at: float | None = None
    pending: deque[int] = field(default_factory=deque)
    results: dict[int, Row] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)  # failed attempts per query
    errors: int = 0  # queries that ended in an error row
    in_flight: int = 0  # queries in live batches
    served: int = 0  # fair-share account: queries dispatched, less those returned undone
    duplicates: int = 0

    @property
    def total(self) -> int:
        return len(self.inputs)

    @property
    def done(self) -> int:
        return len(self.results)


@dataclass
class Worker:
    name: str
    threads: int
    gpu: str | None
    slots: int
    since: float
    batches: list[int] = field(default_factory=list)  # live batch ids, in dispatch order
    stalled: bool = False  # a batch timed out: no new work until it answers
    last_answer: float = 0.0  # its last results (it was busy with that batch until then)
    unavailable: frozenset[str] = frozenset()  # models it cannot serve now
    parallel: dict[str, int] = field(default_factory=dict)  # model -> requests at once

    @property
    def free(self) -> int:
        return 0 if self.stalled else max(0, self.slots - len(self.batches))


@dataclass
class Batch:
    batch_id: int
    worker: str
    job_id: str
    model: str
    queries: tuple[Query, ...]
    sent_at: float
    deadline: float
    adopted: bool = False  # survived a takeover: sent_at is the takeover, not the dispatch


@dataclass(frozen=True)
class _Capacity:
    threads: int
    gpu: str | None
    slots: int
    unavailable: frozenset[str]
    parallel: dict[str, int]


def _capacity(capacity: Mapping[str, Any]) -> _Capacity:
    threads = capacity.get("threads", 1)
    gpu = capacity.get("gpu")
    slots = capacity.get("slots", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"capacity threads must be a positive integer, not {threads!r}")
    if gpu is not None and not isinstance(gpu, str):
        raise ValueError(f"capacity gpu must be a name or None, not {gpu!r}")
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise ValueError(f"capacity slots must be a positive integer, not {slots!r}")
    unavailable = capacity.get("unavailable") or []
    if not isinstance(unavailable, list | tuple) or not all(
        isinstance(m, str) for m in unavailable
    ):
        raise ValueError(f"capacity unavailable must be a list of models, not {unavailable!r}")
    parallel = capacity.get("parallel") or {}
    if not isinstance(parallel, dict) or not all(
        isinstance(m, str) and isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 1024
        for m, n in parallel.items()
    ):
        raise ValueError(f"capacity parallel must map models to 1..1024, not {parallel!r}")
    return _Capacity(threads, gpu or None, slots, frozenset(unavailable), dict(parallel))


class Scheduler:
    """Jobs, workers and batches on the leader; see the module docstring."""

    def __init__(
        self, config: SchedulerConfig | None = None, error_row: ErrorRow | None = None
    ) -> None:
        self.config = config or SchedulerConfig()
        # A query's row after it failed for good is its kind's to shape; by default the
        # kinds registry decides by model (the core itself never names a kind).
        self._error_row = error_row or kinds.error_row
        self.stats = QueryStats()
        self.stats.running = self._running
        # Processing time per query, by model, in buckets: /metrics' histogram (web.metrics).
        self.durations = Histograms()
        self._jobs: dict[str, Job] = {}
        # C4 status of forgotten jobs, oldest first, at most config.keep_finished.
        self._finished: dict[str, dict[str, Any]] = {}
        self._workers: dict[str, Worker] = {}
        self._batches: dict[int, Batch] = {}
        # Batches we gave up on, kept until their job finishes so late answers count.
        self._retired: dict[int, Batch] = {}
        self._batch_sizes: dict[str, int] = {}
        self._costs: dict[tuple[str, str], float] = {}  # (model, worker) -> s/query
        self._next_job = 1
        self._next_seq = 1
        self._next_batch = 1
        self._vtime = 0
        self._rr_last = 0  # seq of the job round-robin served last
        self.duplicates = 0  # answers for queries already done
        self.strays = 0  # answers naming a query the batch did not hold

    # --- queries -------------------------------------------------------------------------

    def next_job_id(self) -> str:
        """The id :meth:`submit` assigns next (it does not reserve it)."""
        return f"job-{self._next_job}"

    def batch_size(self, model: str) -> int:
        return self._batch_sizes.get(model, self.config.batch_size)

    def job_ids(self) -> list[str]:
        return [j.job_id for j in self._ordered_jobs()]

    def status(self, job_id: str) -> dict[str, Any]:
        """C4 status: job_id, model, state, done, total (and times, errors, in_flight).

        A forgotten job answers from its summary while it is among the
        ``keep_finished`` most recent; KeyError for one never seen or long gone."""
        j = self._jobs.get(job_id)
        if j is None:
            return dict(self._finished[job_id])
        return {
            "job_id": j.job_id,
            "model": j.model,
            "state": j.state,
            "done": j.done,
            "total": j.total,
            "errors": j.errors,
            "in_flight": j.in_flight,
            "submitted_at": j.submitted_at,
            "started_at": j.started_at,
            "finished_at": j.finished_at,
        }

    def forgotten(self, job_id: str) -> bool:
        """``job_id`` finished and was forgotten (its results are only in its output)."""
        return job_id in self._finished

    def results(self, job_id: str) -> list[Row]:
        """The job's result rows so far, in query order (all of them once it finished).

        KeyError once the job is forgotten."""
        j = self._jobs[job_id]
        return [j.results[i] for i in sorted(j.results)]

    def results_since(self, job_id: str, offset: int, limit: int) -> list[tuple[int, Row]]:
        """Up to ``limit`` of the job's ``(index, row)``, in the order the queries
        completed, from the ``offset``-th on (a reader's cursor while the job runs).

        Rows are only ever added, so a cursor sees each once; a scheduler restored from a
        snapshot holds its inherited rows in query order.  KeyError once forgotten."""
        j = self._jobs[job_id]
        if offset >= len(j.results):  # nothing new: no walk over what a reader has had
            return []
        return list(itertools.islice(j.results.items(), offset, offset + limit))

    def assignments(self) -> dict[str, dict[str, Any]]:
        """C5: ``{JOB_ID: {"model", "workers": [names running its batches now]}}``.

        Lists the jobs that are queued or running (a queued job has no workers yet).
        """
        workers: dict[str, set[str]] = {}
        for b in self._batches.values():
            workers.setdefault(b.job_id, set()).add(b.worker)
        return {
            j.job_id: {"model": j.model, "workers": sorted(workers.get(j.job_id, ()))}
            for j in self._ordered_jobs()
            if j.state in ACTIVE
        }

    def workers(self) -> dict[str, dict[str, Any]]:
        return {
            w.name: {
                "threads": w.threads,
                "gpu": w.gpu,
                "slots": w.slots,
                "batches": list(w.batches),
                "stalled": w.stalled,
                "unavailable": sorted(w.unavailable),
            }
            for w in sorted(self._workers.values(), key=lambda w: w.name)
        }

    def batch_job(self, batch_id: int) -> tuple[str, str] | None:
        """``(job_id, model)`` of a live batch or one given up on; None once its job is done.

        The shell labels a batch's answers with it (a new leader knows the batches the
        old one dispatched only through this state)."""
        b = self._batches.get(batch_id) or self._retired.get(batch_id)
        return None if b is None else (b.job_id, b.model)

    def cost_estimate(self, model: str, worker: str) -> float | None:
        """Seconds per query of ``model`` on ``worker``: measured, else borrowed, else None."""
        own = self._costs.get((model, worker))
        if own is not None:
            return own
        others = [c for (m, _), c in self._costs.items() if m == model]
        return max(others) if others else None

    def costs(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for (model, worker), cost in sorted(self._costs.items()):
            out.setdefault(model, {})[worker] = cost
        return out

    def batch_limit(self, model: str, worker: str) -> int:
        """How many queries the next batch of ``model`` on ``worker`` may hold."""
        size = self.batch_size(model)
        if self.config.max_batch_seconds is None:
            return size
        w = self._workers.get(worker)
        # A worker that runs this model's requests several at a time gets enough for all.
        floor = min(size, w.parallel.get(model, 1)) if w is not None else 1
        cost = self.cost_estimate(model, worker)
        if cost is None or cost <= 0:
            return floor if cost is None else size  # probe an unmeasured model
        # The epsilon keeps 0.3 / 0.1 = 2.9999999999999996 from losing a query.
        return max(floor, min(size, int(self.config.max_batch_seconds / cost + 1e-9)))

    def next_deadline(self) -> float:
        """When :meth:`tick` next has work to do (a batch timeout); inf if never."""
        return min((b.deadline for b in self._batches.values()), default=math.inf)

    def c1(self, now: float) -> dict[str, Any]:
        return self.stats.c1(now)

    def c2(self) -> dict[str, Any]:
        return self.stats.c2()

    # --- events ----------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Apply one event (the standby's entry point; the same as calling the method)."""
        if isinstance(event, Submit):
            return self.submit(event.job_id, event.model, event.inputs, event.now)
        if isinstance(event, SetBatchSize):
            return self.set_batch_size(event.model, event.n)
        if isinstance(event, WorkerUp):
            return self.worker_up(event.name, event.capacity, event.now)
        if isinstance(event, WorkerDown):
            return self.worker_down(event.name, event.now)
        if isinstance(event, BatchDone):
            return self.batch_done(
                event.worker, event.batch_id, event.results, event.timings, event.now
            )
        if isinstance(event, BatchFailed):
            return self.batch_failed(event.worker, event.batch_id, event.error, event.now)
        if isinstance(event, Tick):
            return self.tick(event.now)
        if isinstance(event, Takeover):
            return self.takeover(event.live_workers, event.now, event.first_batch)
        return self.forget(event.job_id)

    def submit(
        self, job_id: str | None, model: str, inputs: Sequence[str], now: float
    ) -> list[Action]:
        """A new job: one query per input.  ``job_id`` None takes :meth:`next_job_id`."""
        if job_id is None:
            job_id = self.next_job_id()
        if not job_id or job_id in self._jobs or job_id in self._finished:
            raise ValueError(f"job id {job_id!r} is empty or already used")
        if not model:
            raise ValueError("a job needs a model")
        m = _JOB_ID.fullmatch(job_id)
        if m is not None:
            self._next_job = max(self._next_job, int(m.group(1)) + 1)
        job = Job(job_id, self._next_seq, model, tuple(inputs), now)
        self._next_seq += 1
        self._jobs[job_id] = job
        actions: list[Action] = [JobAccepted(job_id, model, job.total)]
        if not job.inputs:
            job.state, job.started_at, job.finished_at = "done", now, now
            return [*actions, JobFinished(job_id, "done")]
        job.pending.extend(range(job.total))
        self._enter(job)
        return actions + self._dispatch(now)

    def set_batch_size(self, model: str, n: int) -> list[Action]:
        """C3: batches of ``model`` dispatched from now on hold up to ``n`` queries."""
        if n < 1:
            raise ValueError(f"batch size must be at least 1, not {n}")
        self._batch_sizes[model] = n
        return []

    def worker_up(self, name: str, capacity: Mapping[str, Any], now: float) -> list[Action]:
        """``name`` can take work (again); a known worker just updates its capacity.

        Its live batches of a model it now says it cannot serve go back to their
        queues, without costing an attempt."""
        c = _capacity(capacity)
        w = self._workers.get(name)
        if w is None:
            w = self._workers[name] = Worker(name, c.threads, c.gpu, c.slots, now)
        else:
            w.threads, w.gpu, w.slots = c.threads, c.gpu, c.slots
            w.stalled = False  # re-announced: it is alive and listening
        w.unavailable, w.parallel = c.unavailable, c.parallel
        actions: list[Action] = []
        for bid in list(w.batches):
            b = self._batches[bid]
            if b.model in w.unavailable:
                actions += self._give_up(b, f"{name} cannot serve {b.model} now", None, now)
        return actions + self._dispatch(now)

    def worker_down(self, name: str, now: float) -> list[Action]:
        """``name`` is gone: its queries go back to the front of their jobs' queues."""
        return self._drop_worker(name, now) + self._dispatch(now)

    def batch_done(
        self,
        worker: str,
        batch_id: int,
        results: Iterable[tuple[int, Row]],
        timings: Sequence[float],
        now: float,
    ) -> list[Action]:
        """``worker`` answered ``batch_id``: ``results[i]`` took ``timings[i]`` seconds."""
        answers = list(results)
        w = self._workers.get(worker)
        if w is not None:
            w.stalled = False
        batch = self._batches.get(batch_id)
        live = batch is not None
        if batch is None:
            batch = self._retired.get(batch_id)
            if batch is None:  # its job finished or was forgotten: all answered already
                self.duplicates += len(answers)
                return self._dispatch(now)
        if batch.worker != worker:
            # Not this batch: one another leadership gave out under the same id.
            self.strays += len(answers)
            return self._dispatch(now)
        runner = self._workers.get(batch.worker)
        # It ran from its dispatch or the worker's previous answer, whichever was later.
        began = min(
            now, batch.sent_at if runner is None else max(batch.sent_at, runner.last_answer)
        )
        if live:
            self._release(batch)
            if not batch.adopted:
                self._learn_cost(batch, timings, now)
        if runner is not None:  # it ran this batch (perhaps one we gave up on) until now
            runner.last_answer = max(runner.last_answer, now)
        job = self._jobs.get(batch.job_id)
        if job is None:
            self.duplicates += len(answers)
            return self._dispatch(now)
        held = dict(batch.queries)
        answered: set[int] = set()
        counted: list[int] = []
        for k, (index, row) in enumerate(answers):
            if index not in held:
                self.strays += 1
                continue
            answered.add(index)
            if index in job.results:
                job.duplicates += 1
                self.duplicates += 1
                continue
            # A late answer for a query we had put back (only a batch given up on can
            # hold one: a live batch's queries are in no queue, invariant 1).
            if not live and index in job.pending:
                job.pending.remove(index)
                job.served += 1
            job.results[index] = {**row, "input": job.inputs[index]}
            if row.get("error"):  # a query its kind could not answer (a bad input)
                job.errors += 1
            counted.append(index)
            seconds = timings[k] if k < len(timings) else None
            self.stats.record(job.model, now, seconds, began=began, job=job.job_id)
            if seconds is not None:
                self.durations.observe(job.model, seconds)
        actions: list[Action] = []
        if counted:
            actions.append(Answered(job.job_id, job.model, batch_id, tuple(counted), began))
        if live:
            missing = [i for i, _ in batch.queries if i not in answered]
            if missing:
                actions += self._requeue(job, missing, f"left out by worker {worker}", now)
        return actions + self._finish_if_complete(job, now) + self._dispatch(now)

    def batch_failed(self, worker: str, batch_id: int, error: str, now: float) -> list[Action]:
        """``worker`` could not run ``batch_id``: each query loses an attempt."""
        w = self._workers.get(worker)
        if w is not None:
            w.stalled = False
        batch = self._batches.get(batch_id)
        if batch is None or batch.worker != worker:
            # We had given up on it already (its queries were put back then), or it is
            # not this batch: one another leadership gave out under the same id.
            return self._dispatch(now)
        self._release(batch)
        job = self._jobs.get(batch.job_id)
        actions: list[Action] = []
        if job is not None:
            actions += self._requeue(job, [i for i, _ in batch.queries], error, now)
            actions += self._finish_if_complete(job, now)
        return actions + self._dispatch(now)

    def tick(self, now: float) -> list[Action]:
        """Give up on batches past their deadline (see :meth:`next_deadline`)."""
        actions: list[Action] = []
        for bid in sorted(self._batches):
            b = self._batches[bid]
            if b.deadline > now:
                continue
            waited = now - b.sent_at
            error = f"no answer from {b.worker} in {waited:.1f} s"
            actions += self._give_up(b, error, error, now)
            w = self._workers.get(b.worker)
            if w is not None:
                if not w.stalled:
                    actions.append(WorkerStalled(w.name))
                w.stalled = True
        return actions + self._dispatch(now)

    def takeover(
        self, live_workers: Iterable[str], now: float, first_batch: int = 0
    ) -> list[Action]:
        """This scheduler becomes the leader's: forget dead workers, keep live batches.

        Batches on workers in ``live_workers`` stay assigned (they answer the new
        leader) and are re-timed from ``now``; those on any other worker go back to
        pending.  Live workers we have never heard of wait for :meth:`worker_up`.
        Batch ids given from now on are ``first_batch`` or more (a leadership's own
        range: a late answer to a batch another leadership gave out never matches one).
        """
        if first_batch < 0:
            raise ValueError(f"first batch id {first_batch} < 0")
        self._next_batch = max(self._next_batch, first_batch)
        live = set(live_workers)
        for w in self._workers.values():  # the old leader's clock may run ahead of ours
            w.last_answer = min(w.last_answer, now)
        for b in self._batches.values():
            # The old leader's dispatch times are not ours to measure costs against.
            b.adopted = True
            b.sent_at = now
            b.deadline = now + self._timeout(b.model, b.worker, len(b.queries))
        actions: list[Action] = []
        for name in sorted(self._workers):
            if name not in live:
                actions += self._drop_worker(name, now)
        return actions + self._dispatch(now)

    def forget(self, job_id: str) -> list[Action]:
        """Drop a finished job (after its output is safely written).

        Its inputs, results and attempts go; its C4 status stays in a table of the
        ``keep_finished`` most recently forgotten jobs (the oldest leaves first)."""
        job = self._jobs.get(job_id)
        if job is None:
            return []
        if job.state not in TERMINAL:
            raise ValueError(f"{job_id} is {job.state}; only finished jobs can be forgotten")
        summary = self.status(job_id)
        del self._jobs[job_id]
        self._finished[job_id] = summary
        while len(self._finished) > self.config.keep_finished:
            del self._finished[next(iter(self._finished))]
        return []

    # --- internals -------------------------------------------------------------------------

    def _ordered_jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: j.seq)

    def _enter(self, job: Job) -> None:
        # Start-time fair queuing: a job that starts competing joins at the virtual time,
        # so it neither starves (behind) nor banks credit for time it had nothing to run.
        job.served = max(job.served, self._vtime)

    def _timeout(self, model: str, worker: str, n: int) -> float:
        cost = self.cost_estimate(model, worker)
        expected = cost * n if cost is not None else 0.0
        return max(self.config.batch_timeout, self.config.batch_timeout_factor * expected)

    def _drop_worker(self, name: str, now: float) -> list[Action]:
        w = self._workers.pop(name, None)
        if w is None:
            return []
        actions: list[Action] = []
        for bid in sorted(w.batches):
            actions += self._give_up(self._batches[bid], f"worker {name} is down", None, now)
        return actions

    def _release(self, batch: Batch) -> None:
        """Take a live batch off its worker (its slot frees) and out of in-flight."""
        del self._batches[batch.batch_id]
        w = self._workers.get(batch.worker)
        if w is not None and batch.batch_id in w.batches:
            w.batches.remove(batch.batch_id)
        job = self._jobs.get(batch.job_id)
        if job is not None:
            job.in_flight -= len(batch.queries)

    def _give_up(self, batch: Batch, reason: str, error: str | None, now: float) -> list[Action]:
        """Stop waiting for a live batch; ``error`` (if any) costs its queries an attempt."""
        self._release(batch)
        job = self._jobs.get(batch.job_id)
        if job is None or job.state in TERMINAL:
            return []
        self._retired[batch.batch_id] = batch
        undone = [i for i, _ in batch.queries if i not in job.results]
        before = len(job.pending)
        actions = self._requeue(job, undone, error, now)
        requeued = len(job.pending) - before
        lost = BatchLost(batch.worker, batch.batch_id, job.job_id, requeued, reason)
        return [lost, *actions, *self._finish_if_complete(job, now)]

    def _requeue(
        self, job: Job, indices: Iterable[int], error: str | None, now: float
    ) -> list[Action]:
        """Put undone queries back at the front of the queue, in query order.

        With an ``error`` each loses an attempt, and one out of attempts gets its error
        row instead.
        """
        actions: list[Action] = []
        back: list[int] = []
        for i in sorted(set(indices)):
            if i in job.results:
                continue
            if error is not None:
                job.attempts[i] = job.attempts.get(i, 0) + 1
                if job.attempts[i] >= self.config.max_attempts:
                    job.results[i] = self._error_row(job.model, job.inputs[i], error)
                    job.errors += 1
                    actions.append(QueryGaveUp(job.job_id, i, job.inputs[i], error))
                    continue
            back.append(i)
        if back:
            was_idle = not job.pending
            job.pending.extendleft(reversed(back))
            # Service that was counted at dispatch but not delivered is owed back.
            job.served -= len(back)
            if was_idle:
                self._enter(job)
        return actions

    def _finish_if_complete(self, job: Job, now: float) -> list[Action]:
        if job.state in TERMINAL or job.done < job.total:
            return []
        job.state = "failed" if job.errors == job.total else "done"
        job.finished_at = now
        if job.started_at is None:
            job.started_at = now
        for bid in [bid for bid, b in self._retired.items() if b.job_id == job.job_id]:
            del self._retired[bid]
        return [JobFinished(job.job_id, job.state)]

    def _learn_cost(self, batch: Batch, timings: Sequence[float], now: float) -> None:
        n = len(batch.queries)
        w = self._workers.get(batch.worker)
        began = batch.sent_at if w is None else max(batch.sent_at, w.last_answer)
        occupancy = (now - began) / n
        reported = math.fsum(timings) / len(timings) if timings else 0.0
        key = (batch.model, batch.worker)
        old = self._costs.get(key)
        if old is None:
            # The first batch also loaded the model; the worker's own timings exclude that.
            sample = reported if reported > 0 else occupancy
        else:
            # The worker's own timing is a floor: a previous answer handled late here
            # (a busy leader, a retried report) must not make this batch look free.
            sample = max(occupancy, reported)
        if sample <= 0:
            return
        a = self.config.cost_alpha
        self._costs[key] = sample if old is None else a * sample + (1 - a) * old

    def _running(self) -> list[Running]:
        """The batch each worker is running now (the first of its live batches: it runs
        them in order), for the rates' running credit (:mod:`inference.metrics`)."""
        out: list[Running] = []
        for name in sorted(self._workers):
            w = self._workers[name]
            if not w.batches:
                continue
            b = self._batches[w.batches[0]]
            cost = self.cost_estimate(b.model, name)
            if cost is None:
                continue  # never measured: no estimate to credit it by
            n = len(b.queries)
            out.append(Running(b.model, b.job_id, n, max(b.sent_at, w.last_answer), cost * n))
        return out

    def _worker_order(self, w: Worker) -> tuple[int, int, int, str]:
        # Most free slots first, then a GPU, then more threads; the name breaks ties.
        return (-w.free, 0 if w.gpu else 1, -w.threads, w.name)

    def _pick(self, competing: list[Job]) -> Job:
        """The policy's choice among jobs with pending queries (sorted by seq)."""
        policy = self.config.policy
        if policy == "round-robin":
            after = [j for j in competing if j.seq > self._rr_last]
            job = after[0] if after else competing[0]
        elif policy == "random":
            rng = random.Random(f"{self.config.seed}:{self._next_batch}")
            job = competing[rng.randrange(len(competing))]
        elif policy == "least-loaded":
            job = min(competing, key=lambda j: (j.in_flight, j.seq))
        else:
            job = min(competing, key=lambda j: (j.served, j.in_flight, j.seq))
        self._rr_last = job.seq
        self._vtime = max(self._vtime, job.served)
        return job

    def _probing(self, model: str, worker: Worker) -> bool:
        """``worker`` runs its first batch of ``model`` (not yet measured there).

        Part of the start-up bound, so only with ``max_batch_seconds`` set.
        """
        if self.config.max_batch_seconds is None or (model, worker.name) in self._costs:
            return False
        return any(self._batches[b].model == model for b in worker.batches)

    def _dispatch(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while True:
            free = sorted((w for w in self._workers.values() if w.free > 0), key=self._worker_order)
            competing = [j for j in self._ordered_jobs() if j.state in ACTIVE and j.pending]
            if not free or not competing:
                return actions
            for worker in free:
                # While a worker runs its first batch of a model (which may include
                # starting its worker process and loading the model: seconds), it
                # takes no second batch of that model: its other slots stay free, so
                # a job submitted meanwhile still starts at once.
                eligible = [
                    j
                    for j in competing
                    if j.model not in worker.unavailable and not self._probing(j.model, worker)
                ]
                if eligible:
                    actions += self._assign(self._pick(eligible), worker, now)
                    break
            else:
                return actions

    def _assign(self, job: Job, worker: Worker, now: float) -> list[Action]:
        n = min(self.batch_limit(job.model, worker.name), len(job.pending))
        queries = tuple((i, job.inputs[i]) for i in (job.pending.popleft() for _ in range(n)))
        bid = self._next_batch
        self._next_batch += 1
        deadline = now + self._timeout(job.model, worker.name, n)
        self._batches[bid] = Batch(bid, worker.name, job.job_id, job.model, queries, now, deadline)
        worker.batches.append(bid)
        job.in_flight += n
        job.served += n
        actions: list[Action] = []
        if job.state == "queued":
            job.state, job.started_at = "running", now
            self.stats.start(job.model, now)
            actions.append(JobStarted(job.job_id, job.model, now - job.submitted_at))
        actions.append(Assign(worker.name, bid, job.job_id, job.model, queries))
        return actions

    # --- snapshots -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything, as plain data (str-keyed dicts, lists, numbers, None), for the standby."""
        return {
            "version": 1,
            "config": self.config.to_plain(),
            "next_job": self._next_job,
            "next_seq": self._next_seq,
            "next_batch": self._next_batch,
            "vtime": self._vtime,
            "rr_last": self._rr_last,
            "duplicates": self.duplicates,
            "strays": self.strays,
            "batch_sizes": [[m, n] for m, n in sorted(self._batch_sizes.items())],
            "costs": [[m, w, c] for (m, w), c in sorted(self._costs.items())],
            "jobs": [
                {
                    "job_id": j.job_id,
                    "seq": j.seq,
                    "model": j.model,
                    "inputs": list(j.inputs),
                    "submitted_at": j.submitted_at,
                    "state": j.state,
                    "started_at": j.started_at,
                    "finished_at": j.finished_at,
                    "pending": list(j.pending),
                    "results": [[i, dict(j.results[i])] for i in sorted(j.results)],
                    "attempts": [[i, n] for i, n in sorted(j.attempts.items())],
                    "errors": j.errors,
                    "in_flight": j.in_flight,
                    "served": j.served,
                    "duplicates": j.duplicates,
                }
                for j in self._ordered_jobs()
            ],
            "workers": [
                {
                    "name": w.name,
                    "threads": w.threads,
                    "gpu": w.gpu,
                    "slots": w.slots,
                    "since": w.since,
                    "batches": list(w.batches),
                    "stalled": w.stalled,
                    "last_answer": w.last_answer,
                    "unavailable": sorted(w.unavailable),
                    "parallel": [[m, n] for m, n in sorted(w.parallel.items())],
                }
                for w in sorted(self._workers.values(), key=lambda w: w.name)
            ],
            "batches": [_batch_plain(self._batches[b]) for b in sorted(self._batches)],
            "retired": [_batch_plain(self._retired[b]) for b in sorted(self._retired)],
            "finished": [dict(f) for f in self._finished.values()],  # oldest first
            "stats": self.stats.snapshot(),
            "durations": self.durations.snapshot(),
        }

    @classmethod
    def restore(cls, snapshot: Mapping[str, Any], error_row: ErrorRow | None = None) -> Scheduler:
        """A scheduler in exactly the state that produced ``snapshot``."""
        if snapshot.get("version") != 1:
            raise ValueError(f"unknown scheduler snapshot version {snapshot.get('version')!r}")
        s = cls(SchedulerConfig.from_plain(snapshot["config"]), error_row)
        s._next_job = int(snapshot["next_job"])
        s._next_seq = int(snapshot["next_seq"])
        s._next_batch = int(snapshot["next_batch"])
        s._vtime = int(snapshot["vtime"])
        s._rr_last = int(snapshot["rr_last"])
        s.duplicates = int(snapshot["duplicates"])
        s.strays = int(snapshot["strays"])
        s._batch_sizes = {str(m): int(n) for m, n in snapshot["batch_sizes"]}
        s._costs = {(str(m), str(w)): float(c) for m, w, c in snapshot["costs"]}
        for d in snapshot["jobs"]:
            s._jobs[str(d["job_id"])] = Job(
                job_id=str(d["job_id"]),
                seq=int(d["seq"]),
                model=str(d["model"]),
                inputs=tuple(str(i) for i in d["inputs"]),
                submitted_at=float(d["submitted_at"]),
                state=str(d["state"]),
                started_at=_opt_float(d["started_at"]),
                finished_at=_opt_float(d["finished_at"]),
                pending=deque(int(i) for i in d["pending"]),
                results={int(i): dict(row) for i, row in d["results"]},
                attempts={int(i): int(n) for i, n in d["attempts"]},
                errors=int(d["errors"]),
                in_flight=int(d["in_flight"]),
                served=int(d["served"]),
                duplicates=int(d["duplicates"]),
            )
        for d in snapshot["workers"]:
            gpu = d["gpu"]
            s._workers[str(d["name"])] = Worker(
                name=str(d["name"]),
                threads=int(d["threads"]),
                gpu=None if gpu is None else str(gpu),
                slots=int(d["slots"]),
                since=float(d["since"]),
                batches=[int(b) for b in d["batches"]],
                stalled=bool(d["stalled"]),
                last_answer=float(d.get("last_answer", 0.0)),  # absent from older snapshots
                unavailable=frozenset(str(m) for m in d.get("unavailable", ())),
                parallel={str(m): int(n) for m, n in d.get("parallel", ())},
            )
        for d in snapshot["batches"]:
            b = _batch_from_plain(d)
            s._batches[b.batch_id] = b
        for d in snapshot["retired"]:
            b = _batch_from_plain(d)
            s._retired[b.batch_id] = b
        for d in snapshot.get("finished", ()):  # absent from older snapshots
            f = _summary_from_plain(d)
            s._finished[f["job_id"]] = f
        s.stats = QueryStats.restore(snapshot["stats"])
        s.stats.running = s._running
        if "durations" in snapshot:  # absent from older snapshots
            s.durations = Histograms.restore(snapshot["durations"])
        return s


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _summary_from_plain(d: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "job_id": str(d["job_id"]),
        "model": str(d["model"]),
        "state": str(d["state"]),
        "done": int(d["done"]),
        "total": int(d["total"]),
        "errors": int(d["errors"]),
        "in_flight": int(d["in_flight"]),
        "submitted_at": float(d["submitted_at"]),
        "started_at": _opt_float(d["started_at"]),
        "finished_at": _opt_float(d["finished_at"]),
    }


def _batch_plain(b: Batch) -> dict[str, Any]:
    return {
        "batch_id": b.batch_id,
        "worker": b.worker,
        "job_id": b.job_id,
        "model": b.model,
        "queries": [[i, name] for i, name in b.queries],
        "sent_at": b.sent_at,
        "deadline": b.deadline,
        "adopted": b.adopted,
    }


def _batch_from_plain(d: Mapping[str, Any]) -> Batch:
    return Batch(
        batch_id=int(d["batch_id"]),
        worker=str(d["worker"]),
        job_id=str(d["job_id"]),
        model=str(d["model"]),
        queries=tuple((int(i), str(name)) for i, name in d["queries"]),
        sent_at=float(d["sent_at"]),
        deadline=float(d["deadline"]),
        adopted=bool(d["adopted"]),
    )


__all__ = [
    "POLICIES",
    "RATE_WINDOW",
    "Action",
    "Answered",
    "Assign",
    "BatchDone",
    "BatchFailed",
    "BatchLost",
    "Event",
    "Forget",
    "JobAccepted",
    "JobFinished",
    "JobStarted",
    "QueryGaveUp",
    "Row",
    "Scheduler",
    "SchedulerConfig",
    "SetBatchSize",
    "Submit",
    "Takeover",
    "Tick",
    "WorkerDown",
    "WorkerStalled",
    "WorkerUp",
]
