"""``noop``: a job kind that does no inference at all, for the dispatch benchmark.

It measures what the scheduler, the RPCs and the workers cost per query
(``bench/inference.py``), never gives real results, and is not listed to users.  A
query's input is a file name, chosen as for image jobs (a glob, or a COUNT of the
files in ``images/*``); a batch answers at once on the worker's node, without the
worker process, with the row ``{"input", "top5": []}`` and a processing time of 0 s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inference.events import Query, Row
from inference.files import FileStore
from inference.kinds.base import BatchOutput, WorkerContext, matching_files

NOOP_MODEL = "noop"


class Noop:
    name = "noop"
    models: tuple[str, ...] = ()  # bench-only: not offered in error messages

    def canonical(self, model: str) -> str | None:
        return NOOP_MODEL if model.lower() == NOOP_MODEL else None

    async def queries(
        self, files: FileStore, model: str, pattern: str | None, count: int | None
    ) -> list[str]:
        return await matching_files(files, pattern, count, "images/*", "images")

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        rows = tuple((i, {"input": name, "top5": []}) for i, name in queries)
        return BatchOutput(rows, tuple(0.0 for _ in rows))

    def error_row(self, input: str, error: str) -> Row:
        return {"input": input, "top5": [], "error": error}

    def output_line(self, row: Row) -> dict[str, Any]:
        out = {"input": row.get("input"), "top5": row.get("top5", [])}
        if row.get("error"):
            out["error"] = row["error"]
        return out
