"""Simulated workers around a pure :class:`~inference.scheduler.Scheduler`, on virtual time.

:class:`SchedSim` is a tiny discrete-event loop.  It feeds the scheduler events (each
with the simulated ``now``), carries out the actions it returns, and plays the workers:
a batch of ``n`` queries of model ``m`` assigned to worker ``w`` takes ``cost(m, w) x n``
seconds and answers with one result row and one processing time (``cost``) per query.
Like a real node's worker process, a worker runs its batches one at a time in the
order they came: a batch sent to a worker with a free second slot waits for the one
before it.  When the scheduler has a batch deadline due before the next world event,
the loop feeds it a :class:`~inference.scheduler.Tick` at exactly that time, as the
trio shell's timer would.

Worker failures are part of the world: :meth:`SchedSim.crash` tells the scheduler the
worker is down and either discards its running batches (it died) or still delivers
them at their normal time (it was only cut off: a late answer); :meth:`SchedSim.hang`
delays a worker's answers; ``fail`` makes chosen batches answer with an error.

Every event fed is kept in :attr:`SchedSim.events`, so a test can replay the run into
a hot standby; every dispatch and answer is logged, so a test can measure rates and
start-up times.  Nothing is random and nothing reads a clock, so runs are reproducible
to the bit; events at equal times run in the order they were scheduled.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from inference.scheduler import (
    Action,
    Assign,
    BatchDone,
    BatchFailed,
    Event,
    JobFinished,
    JobStarted,
    Scheduler,
    Submit,
    Takeover,
    Tick,
    WorkerDown,
    WorkerUp,
)

Cost = Callable[[str, str], float]  # (model, worker) -> seconds per query
FailHook = Callable[[Assign, int], str | None]  # (batch, attempt at it) -> error or None


@dataclass(frozen=True)
class Dispatch:
    """The scheduler sent a batch."""

    time: float
    worker: str
    batch_id: int
    job_id: str
    model: str
    size: int


@dataclass(frozen=True)
class Answer:
    """A worker answered a batch (``size`` result rows), on time or late."""

    time: float
    worker: str
    batch_id: int
    job_id: str
    model: str
    size: int
    late: bool


def row_for(input_name: str) -> dict[str, Any]:
    """The result row a simulated worker returns: deterministic in the input."""
    k = sum(input_name.encode()) % 1000
    return {"input": input_name, "top5": [[k, f"class-{k}", 0.5]]}


class SchedSim:
    def __init__(
        self,
        scheduler: Scheduler,
        costs: Mapping[str, float] | Cost,
        *,
        fail: FailHook | None = None,
    ) -> None:
        self.scheduler = scheduler
        if callable(costs):
            self.cost: Cost = costs
        else:
            table = dict(costs)

            def per_model(model: str, worker: str) -> float:
                return table[model]

            self.cost = per_model
        self.fail = fail
        self.now = 0.0
        self.events: list[Event] = []
        self.actions: list[tuple[float, Action]] = []
        self.dispatches: list[Dispatch] = []
        self.answers: list[Answer] = []
        self.started: dict[str, float] = {}
        self.finished: dict[str, tuple[float, str]] = {}
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        # Each worker's life number: a batch answers only to the life that received it
        # unless that life ended "cut off" (late answers on).
        self._life: dict[str, int] = {}
        self._late_lives: set[tuple[str, int]] = set()
        self._hung_until: dict[str, float] = {}
        self._busy_until: dict[tuple[str, int], float] = {}  # (worker, life) -> time
        self._tries: dict[tuple[str, int], int] = {}  # (job, first query) -> batches sent

    # --- driving the scheduler -------------------------------------------------------------

    def feed(self, event: Event) -> list[Action]:
        """Apply ``event`` to the scheduler now and carry out what it returns."""
        self.events.append(event)
        actions = self.scheduler.handle(event)
        self._carry_out(actions)
        return actions

    def submit(self, model: str, n: int, prefix: str = "images") -> str:
        """Submit a job of ``n`` queries now; returns its id."""
        job_id = self.scheduler.next_job_id()
        inputs = tuple(f"{prefix}/{job_id}-{i:05d}.jpg" for i in range(n))
        self.feed(Submit(job_id, model, inputs, self.now))
        return job_id

    def worker_up(self, name: str, capacity: Mapping[str, Any] | None = None) -> None:
        self._life[name] = self._life.get(name, 0) + 1
        cap = dict(capacity) if capacity is not None else {"threads": 2, "gpu": None, "slots": 1}
        self.feed(WorkerUp(name, cap, self.now))

    def crash(self, name: str, *, answer_late: bool = False, notify: bool = True) -> None:
        """``name`` fails now; with ``answer_late`` its running batches still answer.

        ``notify=False`` leaves the scheduler unaware (the leader died at the same time
        and the failure is only known to the next one, through :meth:`takeover`).
        """
        life = self._life.get(name, 0)
        if answer_late:
            self._late_lives.add((name, life))
        self._life[name] = life + 1  # nothing sent to the old life counts as on time
        if notify:
            self.feed(WorkerDown(name, self.now))

    def hang(self, name: str, until: float) -> None:
        """``name``'s batches (running or new) answer no earlier than ``until``."""
        self._hung_until[name] = until

    def takeover(self, new: Scheduler, live_workers: list[str]) -> list[Action]:
        """A standby ``new`` becomes the scheduler now (the workers keep running)."""
        self.scheduler = new
        return self.feed(Takeover(tuple(live_workers), self.now))

    def run_until(self, t: float) -> None:
        """Advance virtual time to ``t``, running every world event and due tick."""
        while True:
            next_world = self._heap[0][0] if self._heap else float("inf")
            deadline = self.scheduler.next_deadline()
            if deadline <= min(next_world, t):
                self.now = max(self.now, deadline)
                self.feed(Tick(self.now))
                continue
            if next_world > t:
                break
            when, _, fn = heapq.heappop(self._heap)
            self.now = when
            fn()
        self.now = t

    def at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._order), fn))

    # --- measurements ----------------------------------------------------------------------

    def job_rate(self, job_id: str, t0: float, t1: float) -> float:
        """Queries of ``job_id`` answered per second in ``(t0, t1]`` (on-time answers)."""
        n = sum(a.size for a in self.answers if a.job_id == job_id and t0 < a.time <= t1)
        return n / (t1 - t0)

    def worker_time(self, job_id: str, t0: float, t1: float) -> float:
        """Worker-seconds spent on ``job_id``'s batches dispatched in ``(t0, t1]``."""
        return sum(
            self.cost(d.model, d.worker) * d.size
            for d in self.dispatches
            if d.job_id == job_id and t0 < d.time <= t1
        )

    # --- the simulated workers ---------------------------------------------------------------

    def _carry_out(self, actions: list[Action]) -> None:
        for a in actions:
            self.actions.append((self.now, a))
            if isinstance(a, Assign):
                self._run_batch(a)
            elif isinstance(a, JobStarted):
                self.started[a.job_id] = self.now
            elif isinstance(a, JobFinished):
                self.finished[a.job_id] = (self.now, a.state)

    def _run_batch(self, a: Assign) -> None:
        self.dispatches.append(
            Dispatch(self.now, a.worker, a.batch_id, a.job_id, a.model, len(a.queries))
        )
        life = self._life.get(a.worker, 0)
        cost = self.cost(a.model, a.worker)
        key = (a.job_id, a.queries[0][0])
        self._tries[key] = self._tries.get(key, 0) + 1
        error = self.fail(a, self._tries[key]) if self.fail is not None else None
        began = max(self.now, self._busy_until.get((a.worker, life), 0.0))
        done_at = began + cost * len(a.queries)
        self._busy_until[(a.worker, life)] = done_at

        def answer() -> None:
            until = self._hung_until.get(a.worker, 0.0)
            if self.now < until:
                self.at(until, answer)
                return
            on_time = self._life.get(a.worker, 0) == life
            if not on_time and (a.worker, life) not in self._late_lives:
                return  # the worker died with the batch
            if error is not None:
                self.feed(BatchFailed(a.worker, a.batch_id, error, self.now))
                return
            self.answers.append(
                Answer(
                    self.now, a.worker, a.batch_id, a.job_id, a.model, len(a.queries), not on_time
                )
            )
            results = tuple((i, row_for(name)) for i, name in a.queries)
            timings = tuple(cost for _ in a.queries)
            self.feed(BatchDone(a.worker, a.batch_id, results, timings, self.now))

        self.at(done_at, answer)
