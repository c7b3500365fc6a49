"""TimingLog: a query_timings.csv that cannot be written costs rows, never results,
and is said once; writing resumes by itself."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.events import BatchDone
from inference.timings import HEADER, TimingLog
from tests.helpers.tinydisk import fill, free, tiny_disk


def batch(batch_id: int, size: int = 3) -> BatchDone:
    results = tuple((batch_id * 100 + i, {"input": f"in/{batch_id}/{i}"}) for i in range(size))
    return BatchDone("H2", batch_id, results, tuple(0.5 for _ in results), float(batch_id))


def rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def batches_logged(path: Path) -> list[str]:
    """The batch ids of the complete rows, one per row, header skipped."""
    return [r[6] for r in rows(path)[1:] if len(r) == len(HEADER)]


@pytest.fixture
def log() -> logging.Logger:
    return logging.getLogger("test.timings")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tiny_disk(tmp_path / "disk") as d:
        yield d


def test_a_full_disk_is_said_once_and_logging_resumes(
    disk: Path, log: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    path = disk / "query_timings.csv"
    timings = TimingLog(path, log)
    timings.record(batch(1), "job-1", "resnet50")
    fill(disk)
    for b in (2, 3, 4):
        timings.record(batch(b, size=400), "job-1", "resnet50")  # bigger than a page
    assert timings.missed == 3
    free(disk)
    timings.record(batch(5), "job-1", "resnet50")
    timings.close()

    messages = [r.getMessage() for r in caplog.records if r.name == "test.timings"]
    assert messages == [
        f"cannot append to {path}: No space left on device; query timings are not logged "
        "until it works again (results are not affected)",
        f"query timings are logged to {path} again (3 batches missed)",
    ]
    # Whatever a full disk cut short ends its own line: batch 5's rows are whole.
    assert rows(path)[0] == list(HEADER)
    assert batches_logged(path)[:3] == ["1"] * 3
    assert batches_logged(path)[-3:] == ["5"] * 3
    assert rows(path)[-1][3] == "502"


def test_a_file_removed_while_open_is_recreated(tmp_path: Path, log: logging.Logger) -> None:
    path = tmp_path / "query_timings.csv"
    timings = TimingLog(path, log)
    timings.record(batch(1), "job-1", "m")
    path.unlink()
    timings.record(batch(2), "job-1", "m")
    timings.close()
    assert rows(path)[0] == list(HEADER)
    assert batches_logged(path) == ["2"] * 3


def test_a_row_left_unfinished_is_ended_before_the_next(
    tmp_path: Path, log: logging.Logger
) -> None:
    path = tmp_path / "query_timings.csv"
    path.write_text(",".join(HEADER) + "\n1.000,job-1,m,0,in,H2,1,0.5,12,,")
    timings = TimingLog(path, log)
    timings.record(batch(2), "job-1", "m")
    timings.close()
    assert [len(r) for r in rows(path)] == [len(HEADER)] * 5
    assert batches_logged(path) == ["1", "2", "2", "2"]


def test_grading_rows_log_their_tokens_and_image_rows_leave_them_empty(
    tmp_path: Path, log: logging.Logger
) -> None:
    path = tmp_path / "query_timings.csv"
    graded = {"input": "q1", "score": 3, "prompt_tokens": 114, "completion_tokens": 23}
    bogus = {"input": "q2", "prompt_tokens": "many", "completion_tokens": True}
    event = BatchDone("H2", 7, ((0, graded), (1, bogus), (2, {"input": "a.jpg"})), (1.5,) * 3, 9.0)
    timings = TimingLog(path, log)
    timings.record(event, "job-1", "smollm2", started_at=7.25)
    timings.close()
    header, *logged = rows(path)
    assert header[-3:] == ["prompt_tokens", "completion_tokens", "started_at"]
    assert [r[4] for r in logged] == ["q1", "q2", "a.jpg"]
    assert [r[-3:-1] for r in logged] == [["114", "23"], ["", ""], ["", ""]]
    # When the batch started running: with finished_at, the interval it ran.
    assert [(r[0], r[-1]) for r in logged] == [("9.000", "7.250")] * 3
