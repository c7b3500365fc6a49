"""``noop-MSms``: the ``noop`` job kind with a pace, for benchmarks and tests.

``noop-80ms`` (MS from 1 to 60000) is :mod:`inference.kinds.noop` with a known cost
per query: a batch holds its worker for MS milliseconds per query (sleeping, one batch
at a time, as the worker process runs them) and reports that much per query.
``bench/fair_rates.py`` runs two such models at once to measure the scheduler and C1
with batches of a known length, without burning the cores the cluster runs on; tests
use it for jobs that take a known time without loading torch (the dashboard's browser
test, the partition tests). Like ``noop``, it is not listed to users.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import trio

from inference.events import Query
from inference.kinds.base import BatchOutput, WorkerContext
from inference.kinds.noop import Noop

_PACED = re.compile(r"noop-([1-9][0-9]{0,4})ms")
MAX_PACE_MS = 60_000


def pace(model: str) -> float:
    """Seconds per query of a paced model's canonical name (0.0 for any other name)."""
    m = _PACED.fullmatch(model)
    return int(m.group(1)) / 1000 if m is not None else 0.0


class PacedNoop(Noop):
    name = "noop-paced"
    models: tuple[str, ...] = ()  # bench-only: not offered in error messages

    def canonical(self, model: str) -> str | None:
        name = model.lower()
        m = _PACED.fullmatch(name)
        return name if m is not None and int(m.group(1)) <= MAX_PACE_MS else None

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        seconds = pace(model)
        async with ctx.slot:  # one batch at a time, as in the worker process
            began = trio.current_time()
            await trio.sleep(seconds * len(queries))
            # Measured, as a model's time is: the pace plus the timer's own lateness.
            took = (trio.current_time() - began) / max(1, len(queries))
        rows = tuple((i, {"input": name, "top5": []}) for i, name in queries)
        return BatchOutput(rows, tuple(took for _ in rows))
