"""The Python client driving a whole session on a real local cluster, as a script would.

One cluster of real processes for the module (three nodes, the built-in TCP transfer).
The blocking :class:`idunno.Client` puts generated images and freshly initialised
mobilenet_v3_small weights, iterates a paced job's rows while it runs (the first
arrives before it is done), submits a job of the model with batch size 1 and reads its
rows as they come, waits for a second job with the progress bar, and
reads the results back, which agree with ``C4 get-output`` run by ``python -m
console``; the :class:`idunno.AsyncClient` does the same with ``await`` and
``async for``; bad input comes back as typed errors with one-line messages.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idunno import (
    AsyncClient,
    Client,
    FileStatus,
    Invalid,
    ModelLatency,
    ModelRate,
    NotFound,
    Unreachable,
    UsageError,
)
from scripts.localcluster import LocalCluster, free_port
from tests.helpers.imagegen import make_images, make_weights

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# Any torchvision model will do; a small one keeps the weights and the workers light.
MODEL = "mobilenet_v3_small"
WEIGHTS = f"models/{MODEL}.pth"
# A quarter second a query, no model: a job that runs a known while (inference.kinds.paced).
PACED = "noop-250ms"
COPIES = 2  # each generated image (8, one corrupt) goes in twice: 16 queries


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(3, cluster={"transfer": "tcp", "replication": 3}) as c:
        c.wait_converged(timeout=30)
        yield c


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("client-data")
    originals = make_images(root / "originals")
    images = root / "images"
    images.mkdir()
    for copy in range(COPIES):
        for p in originals:
            shutil.copyfile(p, images / f"c{copy}_{p.name}")
    return {"images": images, "weights": make_weights(root / f"{MODEL}.pth", MODEL, seed=1)}


def by_input(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: r["input"])


def test_a_whole_session_with_the_blocking_client(
    cluster: LocalCluster,
    dataset: dict[str, Path],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    with Client(cluster.config_path) as c:  # no node given: the file's first that answers
        members = c.members()
        assert members.leader == "H1"
        assert [m.name for m in members.members] == ["H1", "H2", "H3"]

        files = c.put_dir(dataset["images"], "images", progress=True)
        assert len(files) == 8 * COPIES
        put = c.put(dataset["weights"], WEIGHTS, progress=True)
        assert (put.name, len(put.replicas)) == (WEIGHTS, 3)
        assert sorted(c.ls_all("images/*")) == sorted(files)
        status = c.ls(WEIGHTS)
        assert isinstance(status, FileStatus) and status.versions == (put.version,)
        err = capfd.readouterr().err
        assert f"{8 * COPIES} of {8 * COPIES} files" in err  # put-dir's progress, on stderr

        # Rows come in as queries complete, not when the job is done: shown with a job
        # that takes a known while (a quarter second a query, one query per batch).
        assert c.set_batch_size(PACED, 1).batch_size == 1
        paced = c.submit(PACED, "images/*")
        states = [paced.status().state for _ in paced.results(poll=0.2)]
        assert len(states) == 8 * COPIES
        assert states[0] == "running", states  # the first row came before the job was done

        # The model's job, one query per batch, its rows read as they come.
        assert c.set_batch_size(MODEL, 1).batch_size == 1
        job = c.submit(MODEL, "images/*")
        assert (job.model, job.queries) == (MODEL, 8 * COPIES)
        rows = list(job.results(poll=0.2))
        assert len(rows) == 8 * COPIES and len({r["input"] for r in rows}) == 8 * COPIES
        final = job.wait(progress=True)
        assert (final.state, final.done, final.total) == ("done", 8 * COPIES, 8 * COPIES)

        # A second job, waited for with the progress bar.
        second = c.submit(MODEL, 4)
        waited = second.wait(progress=True)
        assert waited.state == "done"
        bar = capfd.readouterr().err.strip().splitlines()[-1]
        assert bar.startswith(f"{second.job_id} {MODEL} done [{'#' * 24}]  4/4 queries  100.0%")

        # What the client read agrees with C4 get-output, by the client and by the console.
        out = job.output(tmp_path / "client.jsonl")
        assert (out.job_id, out.results, out.state) == (job.job_id, 8 * COPIES, "done")
        mine = [json.loads(x) for x in (tmp_path / "client.jsonl").read_text().splitlines()]
        console = tmp_path / "console.jsonl"
        cluster.console("H2", "C4", "get-output", job.job_id, str(console), timeout=60)
        theirs = [json.loads(x) for x in console.read_text().splitlines()]
        assert mine == theirs and by_input(rows) == by_input(theirs)
        assert sum(1 for r in rows if r.get("error")) == COPIES  # the corrupt image's rows
        assert all(len(r["top5"]) == 5 for r in rows if not r.get("error"))

        # Bad input: typed errors, one line each.
        errors: list[Exception] = []
        for call in (
            lambda: c.put(tmp_path / "missing.jpg", "images/missing.jpg"),
            lambda: c.job("job-999").status(),
            lambda: c.ls("images/nothing.jpg"),
            lambda: c.submit("no-such-model", 2),
            lambda: c.command("C4", "status"),
        ):
            with pytest.raises((Invalid, NotFound)) as caught:
                call()
            errors.append(caught.value)
        assert [type(e) for e in errors] == [Invalid, NotFound, NotFound, Invalid, UsageError]
        assert str(errors[0]) == f"local file {tmp_path / 'missing.jpg'} does not exist"
        assert str(errors[1]).startswith("no such job: job-999")
        assert all("\n" not in str(e) for e in errors)
    with pytest.raises(Unreachable, match=r"^cannot learn the members: cannot reach 127.0.0.1:"):
        Client.connect(cluster.config_path, f"127.0.0.1:{free_port()}")


async def test_the_async_client_runs_the_same_api(
    cluster: LocalCluster, dataset: dict[str, Path], tmp_path: Path
) -> None:
    async with AsyncClient(cluster.config_path, "H3") as c:
        (tmp_path / "note.txt").write_text("hello from the async client\n")
        put = await c.put(tmp_path / "note.txt", "notes/a.txt")
        got = await c.get("notes/a.txt", tmp_path / "back.txt")
        assert (got.version, (tmp_path / "back.txt").read_text()) == (
            put.version,
            "hello from the async client\n",
        )
        if WEIGHTS not in await c.ls_all("models/*"):  # run alone
            await c.put(dataset["weights"], WEIGHTS)
            await c.put_dir(dataset["images"], "images")
        job = await c.submit(MODEL, 3)
        rows = [row async for row in job.results(poll=0.2)]
        assert len(rows) == 3 and all(r["input"].startswith("images/") for r in rows)
        assert (await job.wait(progress=False)).state == "done"
        rates, latency = await c.rates(), await c.latency()
        assert isinstance(rates[MODEL], ModelRate) and rates[MODEL].query_count >= 3
        assert isinstance(latency[MODEL], ModelLatency) and latency[MODEL].mean > 0
        assert job.job_id not in await c.assignments()  # done: no workers any more
        assert (await c.command("ls-all", "notes/*")) == {"files": ["notes/a.txt"]}
        await c.delete("notes/a.txt")
        with pytest.raises(NotFound):
            await c.get("notes/a.txt", tmp_path / "gone.txt")
