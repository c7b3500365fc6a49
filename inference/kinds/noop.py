"""``noop``: a job kind that does no inference at all, for the dispatch benchmark.

It measures what the scheduler, the RPCs and the workers cost per query
(``bench/inference.py``), never gives real results, and is not listed to users.  A
query's input is a file name, chosen as for image jobs (a glob, or a COUNT of the
files in ``images/*``); a batch answers at once on the worker's node, without the
worker process, with the row ``{"input", "top5": []}`` and a processing time of 0 s.

``IDUNNO_NOOP_SECONDS`` (in the node's environment) paces it instead: each query then
holds the worker for that many seconds (one batch at a time, as a model would) and
reports that time.  The dashboard's browser test uses it for a job it can watch,
without loading torch; unset, 0 or not a number up to an hour: no pacing.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import trio

from inference.events import Query
from inference.kinds.base import BatchOutput, WorkerContext
from inference.kinds.image import ImageClassification

NOOP_MODEL = "noop"
PACE_ENV = "IDUNNO_NOOP_SECONDS"


def pace() -> float:
    """Seconds per query from $IDUNNO_NOOP_SECONDS (0.0 unless a number in (0, 3600])."""
    try:
        seconds = float(os.environ.get(PACE_ENV, "0"))
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and 0.0 < seconds <= 3600.0 else 0.0


class Noop(ImageClassification):
    """Image classification's inputs, rows and output lines, without the model: what
    the benchmark measures is everything around it."""

    name = "noop"
    models: tuple[str, ...] = ()  # bench-only: not offered in error messages

    def canonical(self, model: str) -> str | None:
        return NOOP_MODEL if model.lower() == NOOP_MODEL else None

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        rows = tuple((i, {"input": name, "top5": []}) for i, name in queries)
        seconds = pace()
        if seconds:
            async with ctx.slot:
                await trio.sleep(seconds * len(rows))
        return BatchOutput(rows, tuple(seconds for _ in rows))
