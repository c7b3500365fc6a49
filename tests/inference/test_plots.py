"""The ``plot`` command's pieces: rows to intervals and series (pure), the drawing, the
leader's paged reading of its timing log, and the command's bad input."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest

from inference import plots
from inference.events import BatchDone
from inference.timings import HEADER, TimingLog, read_page
from node.commands import CommandError, Context, parse, run


def rows_of(
    batches: list[tuple[str, int, float, float, int]], job: str = "job-1"
) -> list[dict[str, str]]:
    """Timing-log rows for batches ``(worker, batch_id, start, end, queries)``."""
    out = []
    for worker, batch, start, end, n in batches:
        for q in range(n):
            out.append(
                {
                    "finished_at": f"{end:.3f}",
                    "job_id": job,
                    "model": "resnet50",
                    "query": str(batch * 100 + q),
                    "input": f"images/{batch}-{q}.jpg",
                    "worker": worker,
                    "batch_id": str(batch),
                    "seconds": repr((end - start) / n),
                    "started_at": f"{start:.3f}",
                }
            )
    return out


# Two workers, batches of 4 back to back: H2's take 1 s, H3's 2 s (0.25 and 0.5 s a query).
BATCHES = [("H2", b, 100.0 + b, 101.0 + b, 4) for b in range(30)] + [
    ("H3", 100 + b, 100.0 + 2 * b, 102.0 + 2 * b, 4) for b in range(15)
]


def test_rows_become_one_span_per_batch_on_its_worker() -> None:
    rows = rows_of(BATCHES)
    spans = plots.spans(rows)
    assert len(spans) == 45 and sum(s.queries for s in spans) == 180
    busy = plots.busy(rows)
    assert list(busy) == ["H2", "H3"]
    assert busy["H2"][:2] == [(100.0, 101.0), (101.0, 102.0)]
    assert busy["H3"][-1] == (128.0, 130.0)
    # A log written before started_at: a batch starts its queries' time before its end.
    old = [
        {k: v for k, v in r.items() if k != "started_at"} for r in rows_of([("H2", 1, 5.0, 7.0, 2)])
    ]
    assert plots.busy(old) == {"H2": [(5.0, 7.0)]}
    # Rows that cannot be read are skipped, not fatal.
    assert plots.spans([{"finished_at": "x", "worker": "H2"}, {}]) == []


def test_throughput_counts_each_query_over_its_batch_like_c1() -> None:
    window, times, rates = plots.throughput(rows_of(BATCHES))
    assert window == 7.5  # a 30-s job: a quarter of it
    assert times[0] == pytest.approx(100.0 - 7.5) and times[-1] == pytest.approx(130.0)
    steady = [k for k, t in enumerate(times) if 110.0 <= t <= 130.0]
    # H2 does 4 queries/s, H3 2/s, all along: level curves, not batch-sized steps.
    assert all(rates["H2"][k] == pytest.approx(4.0) for k in steady)
    assert all(rates["H3"][k] == pytest.approx(2.0) for k in steady)
    assert all(rates["all"][k] == pytest.approx(6.0) for k in steady)
    assert rates["all"][0] == 0.0
    assert plots.throughput([]) == (10.0, [], {})
    assert plots.window_for(100.0) == 10.0


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_draw_writes_two_pngs_with_the_bars_where_the_rows_say(tmp_path: Path) -> None:
    import matplotlib.image

    files = plots.draw(rows_of(BATCHES), tmp_path, "job-1")
    assert files == [tmp_path / "busy.png", tmp_path / "throughput.png"]
    assert png_size(files[0]) == (1000, 250) and png_size(files[1]) == (1000, 450)
    for f in files:
        pixels = matplotlib.image.imread(f)
        assert pixels.std() > 0.05  # not blank
    # busy.png: H2's bars fill its row from start to end; the blue is there.
    pixels = matplotlib.image.imread(files[0])
    blue = (abs(pixels[..., 0] - 0.12) < 0.05) & (abs(pixels[..., 2] - 0.71) < 0.05)
    assert blue.sum() > 1000
    with pytest.raises(ValueError, match="no answered queries"):
        plots.draw([], tmp_path, "job-9")


def test_the_leader_reads_a_jobs_rows_in_pages(tmp_path: Path) -> None:
    path = tmp_path / "query_timings.csv"
    log = TimingLog(path)
    for b in range(300):
        job = "job-1" if b % 3 else "job-2"
        results = tuple((b * 10 + q, {"input": f"images/job-1-{q}.jpg"}) for q in range(4))
        log.record(BatchDone("H2", b, results, (0.5,) * 4, 10.0 + b), job, "m", None, 9.5 + b)
    log.close()
    whole = read_page(path, "job-1", 0)
    assert whole.next_offset is None and whole.columns == HEADER
    assert len(whole.rows) == 200 * 4
    assert {r[1] for r in whole.rows} == {"job-1"}  # job-2's rows naming job-1 inputs: no
    pages = []
    offset: int | None = 0
    while offset is not None:
        page = read_page(path, "job-1", offset, limit=2000)
        pages.append(page)
        offset = page.next_offset
    assert len(pages) > 10
    assert [r for p in pages for r in p.rows] == list(whole.rows)
    assert read_page(tmp_path / "missing.csv", "job-1", 0).rows == ()
    assert read_page(path, "job-3", 0).rows == ()


class _NoTimings:
    """An inference client whose leader knows no such job."""

    async def timings(self, job_id: str) -> list[dict[str, str]]:
        from net.errors import NotFound

        raise NotFound(f"no such job: {job_id}")


async def _plot(args: list[str]) -> dict[str, Any]:
    ctx = Context(sdfs=None, node=None, inference=_NoTimings())  # type: ignore[arg-type]
    return await run(parse("plot", args), ctx)


async def test_plot_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(CommandError, match="is not a directory") as e:
        await _plot(["job-1", str(afile)])
    assert "\n" not in str(e.value)
    with pytest.raises(CommandError, match="cannot create"):
        await _plot(["job-1", str(afile / "sub")])
    with pytest.raises(CommandError, match="no such job: job-7"):
        await _plot(["job-7", str(tmp_path / "out")])
    with pytest.raises(CommandError, match="usage: plot JOB_ID LOCALDIR"):
        parse("plot", ["job-1"])
