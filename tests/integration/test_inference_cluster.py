"""IDunno end to end: real processes, real torchvision models, driven by the console
(the kill tests' jobs are paced pseudo-models: what they check is exactly-once).

Weights are freshly initialised torchvision models saved as state_dicts (pretrained
ones cannot be downloaded here) and the images are generated; both go into SDFS as a
user would put them.  The reference is a plain single-process torchvision run over the
same weights and images, written here independently of ``inference.runtime``.
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.localcluster import ConsoleError, LocalCluster, wait_for
from tests.helpers import nodelogs
from tests.helpers.imagegen import CORRUPT, make_images, make_weights
from tests.helpers.reference import plain_torchvision

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MODELS = ("resnet50", "inception_v3")
# The kill tests' two jobs: paced pseudo-models (0.4 and 0.6 s a query, no torch; what
# they check is that every query comes back once after a node dies, whatever the
# model), which run long enough for the kill to land mid-job.
KILL_MODELS = ("noop-400ms", "noop-600ms")
COPIES = 3  # each generated image goes in this many times, under different names


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dataset")
    originals = make_images(root / "originals")
    images = root / "images"
    images.mkdir()
    for copy in range(COPIES):
        for p in originals:
            shutil.copyfile(p, images / f"c{copy}_{p.name}")
    weights = {m: make_weights(root / f"{m}.pth", m, seed=1) for m in MODELS}
    return {"images": images, "originals": root / "originals", "weights": weights}


@functools.cache
def _reference_net(model: str, weights: Path) -> tuple[Any, Any]:
    return plain_torchvision(model, weights)  # built once per model, not once per image


@functools.cache  # the copies of an image share its original's answer: computed once
def reference_top5(model: str, weights: Path, image: Path) -> list[list[Any]] | None:
    """Plain torchvision: the state_dict, the weights' own transforms, softmax, top 5."""
    import torch
    from PIL import Image

    net, meta = _reference_net(model, weights)
    try:
        with Image.open(image) as img:
            x = meta.transforms()(img.convert("RGB")).unsqueeze(0)
    except Exception:
        return None
    with torch.inference_mode():
        probs = torch.softmax(net(x), dim=1)[0]
    top = torch.topk(probs, 5)
    labels = meta.meta["categories"]
    return [
        [int(i), labels[int(i)], float(p)] for p, i in zip(top.values, top.indices, strict=True)
    ]


def _load(c: LocalCluster, dataset: dict[str, Any], weights: bool = True) -> None:
    """Wait for the cluster, then put the images (and the weights) into SDFS."""
    c.wait_converged(timeout=30)
    c.console("H1", "put-dir", str(dataset["images"]), "images", timeout=120)
    for model, path in dataset["weights"].items() if weights else ():
        c.console("H2", "put", str(path), f"models/{model}.pth", timeout=120)


@pytest.fixture(scope="module")
def cluster(dataset: dict[str, Any]) -> Iterator[LocalCluster]:
    with LocalCluster(5, cluster={"transfer": "tcp"}) as c:
        _load(c, dataset)
        yield c


def _finished(c: LocalCluster, via: str, job: str) -> dict[str, Any] | None:
    status: dict[str, Any] = c.console(via, "C4", "status", job)
    return status if status["state"] in ("done", "failed") else None


def _wait_done(c: LocalCluster, job: str, timeout: float) -> dict[str, Any]:
    return wait_for(
        lambda: _finished(c, "H3", job),
        timeout,
        f"{job} to finish",
        interval=0.5,
    )


def _rows(c: LocalCluster, job: str, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / f"{job}.jsonl"
    got = c.console("H4", "C4", "get-output", job, str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert got["results"] == len(rows)
    return rows


def test_two_concurrent_jobs_match_a_single_process_run(
    cluster: LocalCluster, dataset: dict[str, Any], tmp_path: Path
) -> None:
    c = cluster
    jobs = {}
    for model in MODELS:
        reply = c.console("H2", "C4", "submit-job", model)
        assert reply["model"] == model and reply["queries"] == 8 * COPIES
        jobs[model] = reply["job_id"]
    # While both run, C5 names the workers of each.
    seen_both = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not seen_both:
        running = c.console("H5", "C5")["jobs"]
        seen_both = all(running.get(j, {}).get("workers") for j in jobs.values())
        if all(c.console("H3", "C4", "status", j)["state"] == "done" for j in jobs.values()):
            break
        time.sleep(0.2)
    assert seen_both, "C5 never showed both jobs with workers"
    for model, job in jobs.items():
        status = _wait_done(c, job, 300)
        assert status["state"] == "done" and status["done"] == status["total"] == 8 * COPIES
        rows = _rows(c, job, tmp_path)
        assert [r["input"] for r in rows] == sorted(r["input"] for r in rows)
        for row in rows:
            # c{copy}_NAME holds NAME's bytes: the reference runs on the original.
            copy = row["input"].removeprefix("images/")
            image = dataset["originals"] / copy.split("_", 1)[1]
            expected = reference_top5(model, dataset["weights"][model], image)
            if expected is None:
                assert row["input"].endswith(CORRUPT) and row.get("error")
                continue
            assert [r[0] for r in row["top5"]] == [e[0] for e in expected], row["input"]
            assert [r[1] for r in row["top5"]] == [e[1] for e in expected]
            for got, want in zip(row["top5"], expected, strict=True):
                assert abs(got[2] - want[2]) < 1e-4

    # C1 and C2 agree with the leader's timing log.
    with (c.workdir / "data" / "H1" / "query_timings.csv").open() as f:
        logged = list(csv.DictReader(f))
    c1 = c.console("H4", "C1")["models"]
    c2 = c.console("H4", "C2")["models"]
    for model in MODELS:
        seconds = [float(r["seconds"]) for r in logged if r["model"] == model]
        assert c1[model]["query_count"] == len(seconds)
        assert c2[model]["mean"] == pytest.approx(statistics.fmean(seconds), rel=1e-6)
        assert c2[model]["median"] == pytest.approx(statistics.median(seconds), rel=1e-6)
        assert set(c2[model]) >= {"mean", "std", "median", "p90", "p95", "p99"}


def test_c3_sets_the_batch_size(cluster: LocalCluster) -> None:
    reply = cluster.console("H3", "C3", "ResNet50", "4")
    assert reply["model"] == "resnet50" and reply["batch_size"] == 4
    with pytest.raises(ConsoleError) as err:
        cluster.console("H3", "C3", "nosuchmodel", "4")
    assert err.value.returncode == 1 and "resnet50" in str(err.value)


def _check_exactly_once(rows: list[dict[str, Any]], total: int) -> None:
    inputs = [r["input"] for r in rows]
    assert len(inputs) == total and len(set(inputs)) == total


def _run_with_a_kill(c: LocalCluster, victim: str, tmp_path: Path) -> dict[str, Any]:
    jobs = {m: c.console("H3", "C4", "submit-job", m)["job_id"] for m in KILL_MODELS}
    # Kill once both jobs are under way.
    wait_for(
        lambda: all(c.console("H3", "C4", "status", j)["done"] >= 2 for j in jobs.values()),
        120,
        "both jobs under way",
        interval=0.2,
    )
    killed = time.time()
    c.kill(victim)
    survivor = "H4" if victim != "H4" else "H5"
    for job in jobs.values():
        status = wait_for(
            functools.partial(_finished, c, survivor, job),
            300,
            f"{job} to finish after the kill",
            interval=0.5,
        )
        assert status["state"] == "done"
        out = tmp_path / f"{job}.jsonl"
        c.console(survivor, "C4", "get-output", job, str(out))
        _check_exactly_once(
            [json.loads(line) for line in out.read_text().splitlines()], status["total"]
        )
    return {"killed_at": killed, "jobs": jobs}


@pytest.mark.background  # mostly waits for failure detection
def test_a_worker_killed_mid_job(dataset: dict[str, Any], tmp_path: Path) -> None:
    with LocalCluster(5, cluster={"transfer": "tcp"}) as c:
        _load(c, dataset, weights=False)
        run = _run_with_a_kill(c, "H4", tmp_path)
        # The jobs may finish on the other workers before H4 is even detected (if it
        # held no batch when it died), so wait for the detection rather than assume it.
        detected = wait_for(
            lambda: nodelogs.first(c.log_path("H1"), "failed", "H4", run["killed_at"]),
            15,
            "H4's failure to be detected",
        )
        print(f"worker H4 killed; detected {detected - run['killed_at']:.2f} s later")


@pytest.mark.background  # mostly waits for failure detection
def test_the_leader_killed_mid_job(dataset: dict[str, Any], tmp_path: Path) -> None:
    with LocalCluster(5, cluster={"transfer": "tcp"}) as c:
        _load(c, dataset, weights=False)
        run = _run_with_a_kill(c, "H1", tmp_path)
        took_over = None
        for line in c.log_path("H2").read_text().splitlines():
            if "takes over scheduling" in line:
                took_over = nodelogs.to_epoch(line.split()[0], run["killed_at"])
        assert took_over is not None, "H2 never took over"
        print(f"leader H1 killed; H2 took over {took_over - run['killed_at']:.2f} s later")


def test_membership_never_waits_behind_inference(cluster: LocalCluster) -> None:
    """While every worker runs a job, no member is so much as suspected."""
    began = time.time()
    job = cluster.console("H2", "C4", "submit-job", "inception_v3")["job_id"]
    _wait_done(cluster, job, 300)
    for node in cluster.nodes:
        events = nodelogs.events(cluster.log_path(node.name), began)
        suspicions = [e for e in events if e.kind in ("suspected", "failed") and e.at >= began]
        assert suspicions == [], f"{node.name}: {suspicions}"
