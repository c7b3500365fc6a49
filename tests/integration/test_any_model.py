"""Any model end to end: a torchvision model other than the first two, and a user's
plug-in model, on real processes, driven by the console.

One 3-node cluster serves every check.  Its node processes (and so their worker
processes) get a test-made plug-in distribution on PYTHONPATH (tests/helpers/plugin.py:
``toynet``, an ImageModel entry point).  The weights are made here with torchvision
(mobilenet_v3_small) and with the plug-in's own build function (toynet), and put in
SDFS as a user would; the images are tests/helpers/imagegen.py's.  Every row's top 5
is compared, to the probability, with the same model run in this process on the same
image without IDunno (tests/helpers/reference.py, tests/helpers/plugin.py).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.localcluster import ConsoleError, LocalCluster, wait_for
from tests.helpers.imagegen import CORRUPT, make_images, make_weights
from tests.helpers.plugin import TOY_MODEL, make_plugin, toy_reference, toy_weights
from tests.helpers.reference import plain_torchvision

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MOBILENET = "mobilenet_v3_small"
# Batches compute in other shapes than the reference's one image at a time.
PROB_TOL = 1e-5


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("any-model")
    make_images(root / "images")
    return {
        "root": root,
        "images": root / "images",
        "plugin": make_plugin(root / "site"),
        MOBILENET: make_weights(root / f"{MOBILENET}.pth", MOBILENET, seed=5),
        TOY_MODEL: toy_weights(root / f"{TOY_MODEL}.pth"),
    }


@pytest.fixture(scope="module")
def cluster(dataset: dict[str, Path]) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as mp:
        # Every process the cluster starts (nodes, their workers, consoles) inherits it.
        path = os.environ.get("PYTHONPATH", "")
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(dataset["plugin"]), path) if p))
        with LocalCluster(3, cluster={"transfer": "tcp"}) as c:
            c.wait_converged(timeout=30)
            c.console("H1", "put-dir", str(dataset["images"]), "images", timeout=120)
            for model in (MOBILENET, TOY_MODEL):
                c.console("H2", "put", str(dataset[model]), f"models/{model}.pth", timeout=120)
            yield c


def test_models_lists_them_and_unknown_names_are_refused_with_suggestions(
    cluster: LocalCluster,
) -> None:
    listed = cluster.console("H3", "models")
    assert listed["models"][:2] == ["resnet50", "inception_v3"]
    assert MOBILENET in listed["models"] and len(listed["kinds"]["image-classification"]) == 80
    assert listed["kinds"][TOY_MODEL] == [TOY_MODEL]
    assert listed["skipped"] == {}
    text = cluster.console("H3", "models", json=False)
    assert "image-classification (80):" in text and f"{TOY_MODEL} (1):" in text

    with pytest.raises(ConsoleError) as refused:
        cluster.console("H2", "C3", "mobilenet_v3", "4")
    assert refused.value.returncode == 1
    assert "did you mean mobilenet_v3_large, mobilenet_v3_small" in str(refused.value)
    assert "\n" not in str(refused.value)
    with pytest.raises(ConsoleError, match="unknown model 'toynett': did you mean toynet"):
        cluster.console("H2", "C4", "submit-job", "toynett")


def _rows(c: LocalCluster, job: str, out: Path) -> list[dict[str, Any]]:
    c.console("H3", "C4", "get-output", job, str(out))
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_mobilenet_and_a_plugin_model_end_to_end(
    cluster: LocalCluster, dataset: dict[str, Path], tmp_path: Path
) -> None:
    c = cluster
    assert c.console("H2", "C3", "MobileNetV3Small", "3") == {"model": MOBILENET, "batch_size": 3}
    assert c.console("H2", "C3", "ToyNet", "2") == {"model": TOY_MODEL, "batch_size": 2}
    jobs: dict[str, str] = {}
    for model in (MOBILENET, TOY_MODEL):
        reply = c.console("H1", "C4", "submit-job", model.upper())
        assert reply["model"] == model and reply["queries"] == 8
        jobs[model] = reply["job_id"]

    def finished(job: str) -> dict[str, Any] | None:
        status: dict[str, Any] = c.console("H3", "C4", "status", job)
        return status if status["state"] in ("done", "failed") else None

    net, meta = plain_torchvision(MOBILENET, dataset[MOBILENET])
    for model, job in jobs.items():
        status = wait_for(functools.partial(finished, job), 180, f"{job} to finish", interval=0.5)
        assert status["state"] == "done" and status["done"] == status["total"] == 8
        rows = _rows(c, job, tmp_path / f"{job}.jsonl")
        assert len(rows) == 8
        for row in rows:
            image = dataset["images"] / row["input"].removeprefix("images/")
            if model == MOBILENET:
                expected = _torchvision_top5(net, meta, image)
            else:
                expected = toy_reference(dataset[TOY_MODEL], image)
            if expected is None:
                assert image.name == CORRUPT and row["error"].startswith("cannot decode image")
                continue
            got = row["top5"]
            assert [r[:2] for r in got] == [e[:2] for e in expected], (model, row["input"])
            assert [r[2] for r in got] == pytest.approx([e[2] for e in expected], abs=PROB_TOL)

    # C1 and C2 count them like any model.
    rates = c.console("H1", "C1")["models"]
    assert rates[MOBILENET]["query_count"] == rates[TOY_MODEL]["query_count"] == 8
    assert set(c.console("H1", "C2")["models"]) >= {MOBILENET, TOY_MODEL}


def _torchvision_top5(net: Any, meta: Any, image: Path) -> list[list[Any]] | None:
    import torch
    from PIL import Image

    try:
        with Image.open(image) as img:
            x = meta.transforms()(img.convert("RGB")).unsqueeze(0)
    except Exception:
        return None
    with torch.inference_mode():
        top = torch.topk(torch.softmax(net(x), dim=1)[0], 5)
    labels = meta.meta["categories"]
    pairs = zip(top.values, top.indices, strict=True)
    return [[int(i), labels[int(i)], float(p)] for p, i in pairs]
