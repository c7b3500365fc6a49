"""What a kind of job is: the one interface the scheduler and the services run jobs through.

A *kind* (image classification, the benchmark's no-op, LLM grading later) answers
four questions, and nothing outside its module needs to know the answers
(the anchors are TorchServe's handlers and Ray Data's processors):

* which models it serves: :meth:`JobKind.canonical` recognises a model name (with its
  aliases) and :attr:`JobKind.models` lists the names to show a person;
* what a query's input is: :meth:`JobKind.queries` turns a submission (a glob or a
  count, as C4 submit-job gives them) into one input string per query;
* how a batch runs: :meth:`JobKind.run_batch`, on the worker's node, fetches what the
  batch needs through the :class:`~inference.files.FileStore` and runs it, normally in
  the worker process (:class:`WorkerContext` holds both).  A kind's worker-process
  part is a function in its own module that :func:`run_in_worker_process` calls there
  (op ``kind`` of :mod:`inference.worker_main`); it may import torch or llama.cpp
  inside itself, the module's top level must not (the node never loads torch).  Image
  classification predates that and uses the worker's own ``run`` op;
* what an output row is: :meth:`JobKind.run_batch` returns validated rows,
  :meth:`JobKind.error_row` is the row of a query that could not be answered, and
  :meth:`JobKind.output_line` is the row as written to ``outputs/JOB_ID.jsonl``.

Rows are plain dicts (msgpack and JSON carry them unchanged) that always hold
``"input"``.  A kind raises :class:`~net.errors.Invalid` for a submission it refuses,
and anything for a batch it could not run (the worker reports that batch as failed).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import trio

from inference.events import Query, Row
from inference.files import FileStore
from net.errors import Invalid

if TYPE_CHECKING:  # the registry (which the scheduler reads) need not load the process handle
    from inference.worker_client import WorkerProcess


@dataclass(frozen=True)
class WorkerContext:
    """What a kind may use to run a batch on a worker node."""

    files: FileStore  # the cluster's files (inputs, weights)
    cache: Path  # this node's scratch space for fetched copies
    process: WorkerProcess  # the worker process (torch lives there)
    # Held while the batch occupies the worker process: the node holds two batches,
    # and the second fetches its inputs while the first runs.
    slot: trio.Lock
    allow_download: bool  # may the worker process download public weights?
    # A second worker process that never imports torch (llama.cpp runs there).
    torchless: WorkerProcess | None = None
    host: str = "127.0.0.1"  # this node's host (a server "on the worker's machine")
    threads: int = 1  # the cores this node's worker may use
    # Per-kind state kept on this node between batches (clients, cached files); a
    # value with an ``aclose`` coroutine is closed when the worker stops.
    state: dict[str, Any] = field(default_factory=dict)


class ModelUnavailable(Exception):
    """This worker cannot serve ``model`` now (its server is down or refuses it).

    A kind raises it from :meth:`JobKind.run_batch`; the worker then tells the leader
    (its capacity lists the model as ``unavailable``, so the batch's queries go
    elsewhere at no cost) and calls ``probe`` with back-off until it returns True,
    when it announces the model again.
    """

    def __init__(self, model: str, reason: str, probe: Callable[[], Awaitable[bool]]) -> None:
        super().__init__(f"{model} is unavailable here: {reason}")
        self.model = model
        self.reason = reason
        self.probe = probe


@dataclass(frozen=True)
class BatchOutput:
    """One row and one processing time (seconds) per query, in the batch's order."""

    rows: tuple[tuple[int, Row], ...]
    timings: tuple[float, ...]


class JobKind(Protocol):
    """One kind of job; see the module docstring."""

    # The kind's name (logs, the registry).
    name: str
    # Model names a person may use, for "valid models are ..." (may be empty: hidden).
    models: tuple[str, ...]

    def canonical(self, model: str) -> str | None:
        """The canonical name of ``model`` if this kind serves it, else None."""
        ...

    async def queries(
        self, files: FileStore, model: str, pattern: str | None, count: int | None
    ) -> list[str]:
        """The inputs of a new job, one per query; Invalid if the submission is refused."""
        ...

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        """Run one batch on this node; validated rows for every query."""
        ...

    def error_row(self, input: str, error: str) -> Row:
        """The row of a query that failed for good."""
        ...

    def output_line(self, row: Row) -> dict[str, Any]:
        """``row`` as one line of the job's output file."""
        ...


# --- running in the worker process -----------------------------------------------------


async def run_in_worker_process(
    ctx: WorkerContext, entry: str, args: dict[str, Any], what: str, *, torch: bool = True
) -> dict[str, Any]:
    """Call the kind's worker-side function ``entry`` ("module:function") in the worker
    process, holding the slot; its reply (``RequestError`` if it raised there).

    The function runs as ``FUNCTION(state, args) -> dict`` (see
    :mod:`inference.worker_main`, op ``kind``), so it may import torch or llama.cpp;
    keep those imports inside it, so the kind's module stays light for the node.
    ``torch=False`` runs it in the worker's torch-free process instead (which never
    imports torch: a kind that needs none need not pay for it).
    """
    process = ctx.process if torch or ctx.torchless is None else ctx.torchless
    async with ctx.slot:
        return await process.request({"op": "kind", "entry": entry, "args": args}, what)


# --- helpers for kinds whose queries are files in the store -------------------------------

# Inputs a worker fetches at once from other nodes.
FETCH_PARALLELISM = 8


async def matching_files(
    files: FileStore, pattern: str | None, count: int | None, default: str, what: str
) -> list[str]:
    """One query per file: those matching ``pattern`` (default ``default``), or a sorted
    random sample of ``count`` of the files matching ``default``.

    ``what`` names the files for a person ("images").
    """
    if count is not None:
        pool = await files.list(default)
        if count < 1 or count > len(pool):
            raise Invalid(f"COUNT must be 1..{len(pool)} (the files in {default}), got {count}")
        return sorted(random.sample(pool, count))
    pattern = pattern or default
    inputs = await files.list(pattern)
    if not inputs:
        raise Invalid(f"no SDFS files match {pattern}; put some {what} first")
    return inputs


async def local_copies(ctx: WorkerContext, names: Sequence[str]) -> list[Path]:
    """Local paths for ``names``: this node's own replicas where it holds one (read in
    place), else copies fetched into the cache, several at once."""
    paths: list[Path | None] = [None] * len(names)
    limiter = trio.CapacityLimiter(FETCH_PARALLELISM)
    fetch_dir = ctx.cache / "inputs"
    fetch_dir.mkdir(parents=True, exist_ok=True)

    async def one(i: int, name: str) -> None:
        held = await trio.to_thread.run_sync(ctx.files.local_replica, name)
        if held is not None:
            paths[i] = held
            return
        async with limiter:
            target = fetch_dir / quote(name, safe="")
            await ctx.files.get(name, target)
            paths[i] = target

    async with trio.open_nursery() as n:
        for i, name in enumerate(names):
            n.start_soon(one, i, name)
    return [p for p in paths if p is not None]
