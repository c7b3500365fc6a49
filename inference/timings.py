"""The leader's per-query timing log: ``query_timings.csv`` in the node's data directory.

One row per answered query (finished_at, job_id, model, query, input, worker,
batch_id, seconds), appended as each batch's answer is applied.  The file is opened
once, on the first answer, and flushed per batch: people and tests read it while jobs
run, and opening it per batch would cost the leader's event loop more than the write.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, TextIO

from inference.events import BatchDone

HEADER = ("finished_at", "job_id", "model", "query", "input", "worker", "batch_id", "seconds")


class TimingLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None
        self._writer: Any = None  # csv writer (its type is private to the csv module)

    def record(self, event: BatchDone, job_id: str, model: str) -> None:
        if self._file is None:
            new = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", newline="")
            self._writer = csv.writer(self._file)
            if new:
                self._writer.writerow(HEADER)
        for (index, row), seconds in zip(event.results, event.timings, strict=False):
            self._writer.writerow(
                [
                    f"{event.now:.3f}",
                    job_id,
                    model,
                    index,
                    row.get("input", ""),
                    event.worker,
                    event.batch_id,
                    repr(float(seconds)),  # full precision: C2 is computed from these
                ]
            )
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
