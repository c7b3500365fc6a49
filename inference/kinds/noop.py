"""``noop``: a job kind that does no inference at all, for the dispatch benchmark.

It measures what the scheduler, the RPCs and the workers cost per query
(``bench/inference.py``), never gives real results, and is not listed to users.  A
query's input is a file name, chosen as for image jobs (a glob, or a COUNT of the
files in ``images/*``); a batch answers at once on the worker's node, without the
worker process, with the row ``{"input", "top5": []}`` and a processing time of 0 s.
(``noop-MSms``, :mod:`inference.kinds.paced`, is the same with a cost per query.)
"""

from __future__ import annotations

from collections.abc import Sequence

from inference.events import Query
from inference.kinds.base import BatchOutput, WorkerContext
from inference.kinds.image import ImageClassification

NOOP_MODEL = "noop"


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
        return BatchOutput(rows, tuple(0.0 for _ in rows))
