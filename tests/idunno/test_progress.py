"""The job progress bar: rate and ETA from the samples a waiter sees, and how it is drawn."""

from __future__ import annotations

import io

import pytest

from idunno.progress import JobMeter, clock_text, job_line, show


def test_the_meter_measures_from_the_first_sample_it_saw() -> None:
    meter = JobMeter()
    assert meter.update(10.0, 5, 100) == (None, None)  # one sample: no rate yet
    assert meter.update(10.0, 9, 100) == (None, None)  # no time has passed
    assert meter.update(12.0, 5, 100) == (None, None)  # nothing done since
    rate, eta = meter.update(15.0, 25, 100)
    assert rate == pytest.approx(4.0) and eta == pytest.approx(18.75)
    assert meter.update(20.0, 105, 100)[1] == 0.0  # never a negative time left


def test_clock_text() -> None:
    assert [clock_text(s) for s in (0, 7.4, 65, 3723)] == ["0:00", "0:07", "1:05", "1:02:03"]


def test_the_line_shows_done_total_rate_and_eta() -> None:
    line = job_line("job-3 resnet50 running", 12, 40, 4.25, 6.6)
    bar = "#" * 7 + "-" * 17
    assert line == f"job-3 resnet50 running [{bar}]  12/40 queries   30.0%  4.2 q/s  ETA 0:07"
    assert job_line("job-3", 40, 40, 4.0, 0.0).endswith("40/40 queries  100.0%  4.0 q/s")
    assert job_line("job-4", 0, 0) == f"job-4 [{'#' * 24}]  0/0 queries  100.0%"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_the_line_redrawn_a_pipe_only_the_last() -> None:
    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        show(stream, "a", final=False)
        show(stream, "b", final=True)
    assert tty.getvalue() == "\r\033[Ka\r\033[Kb\n"
    assert pipe.getvalue() == "b\n"
