"""The scheduler's vocabulary: the events it is fed and the actions it returns.

Events are what happened (a job submitted, a worker up, a batch answered); each is one
public method call of :class:`~inference.scheduler.Scheduler`, and
:meth:`~inference.scheduler.Scheduler.handle` applies one.  The leader streams every
event it applies to its hot standby, so events are registered wire messages (tags
100-139 of the protocol, see ``net/messages.py``): ``net.wire.encode`` carries them and
``net.wire.decode`` checks every field's type on the way in, with no hand-written
converter to keep in step with the dataclasses.

They live here, beside the pure core and not in ``net/messages.py``, because they are
the scheduler's API (its tests, the simulator and the services build them); the wire
layer only carries them.  Registering them needs nothing but ``net.wire.message``, which
does no I/O, so the core stays pure.  THE TAGS ARE PART OF THE PROTOCOL: append, never
renumber or reuse.

Actions are what the shell carries out; they never travel, so they are plain dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from net.wire import message

Row = dict[str, Any]  # one query's output row, as the job's kind makes it; always has "input"
Query = tuple[int, str]  # (query index within the job, the query's input, e.g. an SDFS name)


# --- actions (what the shell carries out) ------------------------------------------------


@dataclass(frozen=True)
class Assign:
    """Send ``queries`` of ``job_id`` to ``worker`` to run as one batch."""

    worker: str
    batch_id: int
    job_id: str
    model: str
    queries: tuple[Query, ...]


@dataclass(frozen=True)
class JobAccepted:
    """A job was submitted (the console's C4 submit-job answer)."""

    job_id: str
    model: str
    total: int


@dataclass(frozen=True)
class JobStarted:
    """A job's first batch went out, ``waited`` seconds after it was submitted."""

    job_id: str
    model: str
    waited: float


@dataclass(frozen=True)
class JobFinished:
    """Every query has a result: write ``outputs/JOB_ID.jsonl`` from :meth:`Scheduler.results`."""

    job_id: str
    state: str  # done or failed


@dataclass(frozen=True)
class BatchLost:
    """We gave up on a batch; ``requeued`` of its queries went back to pending.

    ``reason`` is the log line's cause.  After a timeout the shell may tell the worker
    to drop the batch; its answer, should it come, is still accepted.
    """

    worker: str
    batch_id: int
    job_id: str
    requeued: int
    reason: str


@dataclass(frozen=True)
class QueryGaveUp:
    """Query ``index`` of ``job_id`` failed ``max_attempts`` times; it gets an error row."""

    job_id: str
    index: int
    input: str
    error: str


@dataclass(frozen=True)
class Answered:
    """The queries of a batch's answer that counted: each one's first result.

    The shell logs their timings (``query_timings.csv``); answers the scheduler
    ignored (a duplicate, a query the batch did not hold) are not in ``indices``.
    """

    job_id: str
    model: str
    batch_id: int
    indices: tuple[int, ...]
    # When the batch started running, as the scheduler sees it (its dispatch or its
    # worker's previous answer, whichever was later); the answer is its end.
    started_at: float | None = None


@dataclass(frozen=True)
class WorkerStalled:
    """``worker`` let a batch time out: it gets no work until it answers something or
    is announced again (:class:`WorkerUp`).  The shell asks it what it can run, which
    announces it again if it is alive: a worker whose batches were lost in transit
    (sent by a leader that died) has nothing left to answer, and would idle forever.
    """

    worker: str


Action = (
    Assign
    | JobAccepted
    | JobStarted
    | JobFinished
    | BatchLost
    | QueryGaveUp
    | Answered
    | WorkerStalled
)


# --- events (what happened; each is one public method call) --------------------------------


@message(tag=100)
@dataclass(frozen=True)
class Submit:
    job_id: str | None
    model: str
    inputs: tuple[str, ...]
    now: float


@message(tag=101)
@dataclass(frozen=True)
class SetBatchSize:
    model: str
    n: int


@message(tag=102)
@dataclass(frozen=True)
class WorkerUp:
    name: str
    capacity: dict[str, Any]
    now: float


@message(tag=103)
@dataclass(frozen=True)
class WorkerDown:
    name: str
    now: float


@message(tag=104)
@dataclass(frozen=True)
class BatchDone:
    worker: str
    batch_id: int
    results: tuple[tuple[int, Row], ...]
    timings: tuple[float, ...]
    now: float


@message(tag=105)
@dataclass(frozen=True)
class BatchFailed:
    worker: str
    batch_id: int
    error: str
    now: float


@message(tag=106)
@dataclass(frozen=True)
class Tick:
    now: float


@message(tag=107, version=2)
@dataclass(frozen=True)
class Takeover:
    """A new leadership starts from this state; its batch ids start at ``first_batch``
    at least (version 1 had no ``first_batch``)."""

    live_workers: tuple[str, ...]
    now: float
    first_batch: int = 0


@message(tag=108)
@dataclass(frozen=True)
class Forget:
    job_id: str


Event = (
    Submit
    | SetBatchSize
    | WorkerUp
    | WorkerDown
    | BatchDone
    | BatchFailed
    | Tick
    | Takeover
    | Forget
)
# For isinstance checks on decoded messages (a union is not a tuple of classes).
EVENT_TYPES: tuple[type[Any], ...] = (
    Submit,
    SetBatchSize,
    WorkerUp,
    WorkerDown,
    BatchDone,
    BatchFailed,
    Tick,
    Takeover,
    Forget,
)
