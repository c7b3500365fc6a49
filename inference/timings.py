"""The leader's per-query timing log: ``query_timings.csv`` in the node's data directory.

One row per answered query, the first answer only (finished_at, job_id, model, query, input, worker,
batch_id, seconds, and for grading models prompt_tokens and completion_tokens, empty
for image models; then started_at, when the batch started running as the scheduler
sees it: with finished_at, the interval the batch ran, which C1 counts the query over
and the ``plot`` command draws), appended as each batch's answer is applied.  The file is opened
once, on the first answer, and flushed per batch: people and tests read it while jobs
run, and opening it per batch would cost the leader's event loop more than the write.

The log is a record, never a gate: a row that cannot be written (disk full, the
file or its directory removed, no permission) is dropped, never the batch's result.
The first failure is logged once; each later batch tries again (the file is
reopened), and the first row that lands again is logged with how many batches were
missed.  A file removed while open is noticed (its link count is 0) and recreated,
so rows never go to a file nobody can see.  A row cut short by a full disk is ended
before the next one, so a reader never sees two rows run together.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
from collections.abc import Container
from pathlib import Path
from typing import Any, TextIO

from inference.events import BatchDone
from net.messages import TimingRows

# Bytes of the log one page of :func:`read_page` scans at most (a frame holds far more:
# a page's rows are a subset of these bytes, plus a little framing per field).
PAGE_BYTES = 1 << 20

HEADER = (
    "finished_at",
    "job_id",
    "model",
    "query",
    "input",
    "worker",
    "batch_id",
    "seconds",
    "prompt_tokens",
    "completion_tokens",
    "started_at",  # appended later: files written before it have ten columns
)


class TimingLog:
    def __init__(self, path: Path, log: logging.Logger | None = None) -> None:
        self.path = path
        self.log = log or logging.getLogger(__name__)
        self._file: TextIO | None = None
        self._writer: Any = None  # csv writer (its type is private to the csv module)
        # Batches whose rows were not written since the last failure (0: writing works).
        self.missed = 0

    def record(
        self,
        event: BatchDone,
        job_id: str,
        model: str,
        only: Container[int] | None = None,
        started_at: float | None = None,
    ) -> None:
        """Append the batch's rows (those of the query indices in ``only``, when given:
        the answers the scheduler counted; ``started_at``: when the batch started
        running); a failure is logged (once), never raised."""
        try:
            self._write(event, job_id, model, only, started_at)
        except (OSError, ValueError) as e:  # ValueError: a file closed under us
            self._drop_file()
            if not self.missed:
                self.log.error(
                    "cannot append to %s: %s; query timings are not logged until it "
                    "works again (results are not affected)",
                    self.path,
                    e.strerror if isinstance(e, OSError) and e.strerror else e,
                )
            self.missed += 1
            return
        if self.missed:
            self.log.warning(
                "query timings are logged to %s again (%d batch%s missed)",
                self.path,
                self.missed,
                "" if self.missed == 1 else "es",
            )
            self.missed = 0

    def _write(
        self,
        event: BatchDone,
        job_id: str,
        model: str,
        only: Container[int] | None,
        started_at: float | None,
    ) -> None:
        if self._file is not None and os.fstat(self._file.fileno()).st_nlink == 0:
            self._drop_file()  # removed while open: write where people will look
        if self._file is None:
            self._open()
        assert self._file is not None
        left = None if only is None else {i for i, _ in event.results if i in only}
        for (index, row), seconds in zip(event.results, event.timings, strict=False):
            if left is not None:
                if index not in left:
                    continue  # ignored by the scheduler, or a second answer in this batch
                left.discard(index)
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
                    _count(row.get("prompt_tokens")),
                    _count(row.get("completion_tokens")),
                    "" if started_at is None else f"{started_at:.3f}",
                ]
            )
        self._file.flush()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a", newline="")
        try:
            writer = csv.writer(f)
            if f.tell() == 0:
                writer.writerow(HEADER)
            elif _last_byte(self.path) != b"\n":
                f.write("\n")  # end the row a full disk cut short
            f.flush()
        except BaseException:
            with contextlib.suppress(OSError, ValueError):
                f.close()
            raise
        self._file, self._writer = f, writer

    def _drop_file(self) -> None:
        """Forget the open file (rows buffered in it are lost with the failure)."""
        f, self._file, self._writer = self._file, None, None
        if f is not None:
            # Its buffer may not be writable either; the descriptor is closed anyway.
            with contextlib.suppress(OSError, ValueError):
                f.close()

    def close(self) -> None:
        self._drop_file()


def _count(value: object) -> str:
    """A token count for the log ("" for rows without one, or a bogus one)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else ""


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def read_page(path: Path, job_id: str, offset: int, limit: int = PAGE_BYTES) -> TimingRows:
    """``job_id``'s rows among the log's lines from byte ``offset`` on, scanning about
    ``limit`` bytes (whole lines); the reply says where the next page starts.

    The columns are the file's own header's (a file begun before a column was added
    has fewer).  A missing file is an empty log.  Blocking: run it in a thread."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return TimingRows(job_id, HEADER, (), None)
    with f:
        first = f.readline()
        columns = tuple(next(csv.reader([first.decode(errors="replace")]), ()))
        if not columns:
            return TimingRows(job_id, HEADER, (), None)
        f.seek(max(offset, len(first)))
        data = f.read(limit)
        more = len(data) == limit
        if more:
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a page: skip it
                cut = len(data)
            data = data[:cut]
        start = max(offset, len(first))
    key = job_id.encode()
    rows = tuple(
        tuple(r[: len(columns)])
        for r in csv.reader(
            line.decode(errors="replace") for line in data.splitlines() if key in line
        )
        if len(r) > 1 and r[1] == job_id
    )
    return TimingRows(job_id, columns, rows, start + len(data) if more else None)
