"""A user's own model through the ``idunno.job_kinds`` entry-point group.

The plug-in is a real distribution (``NAME.dist-info`` with ``METADATA`` and
``entry_points.txt``) in a temporary directory on the path, found by
``importlib.metadata`` as an installed one would be (tests/helpers/plugin.py).  The
node's registry loads it at import; a broken entry is logged once and skipped.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference import kinds
from inference.kinds.custom import ImageModel
from net.errors import Invalid
from node import commands
from node.commands import Context
from tests.helpers.imagegen import CORRUPT, make_images
from tests.helpers.plugin import (
    TOY_CROP,
    TOY_LABELS,
    TOY_MODEL,
    make_plugin,
    toy_reference,
    toy_weights,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

BAD_ENTRIES = {
    "broken": "idunno_toy.broken:KIND",  # its module raises at import
    "missing": "idunno_toy:NO_SUCH_THING",  # no such attribute
    "number": "idunno_toy.bad:NOT_A_KIND",  # 42
    "failing": "idunno_toy.bad:failing",  # a factory that raises
    "twice": "idunno_toy:KIND",  # the same kind again: its name is taken
}


@pytest.fixture
def plugin_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The plug-in on sys.path (with a factory entry and the broken ones); afterwards
    its kinds unregistered and its modules forgotten."""
    root = make_plugin(tmp_path / "site", {"factory": "idunno_toy.bad:make_kind", **BAD_ENTRIES})
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(kinds, "_SKIPPED", {})
    try:
        yield root
    finally:
        for name in (TOY_MODEL, "toyfactory"):
            kinds.unregister(name)
        for module in [m for m in sys.modules if m.split(".")[0] == "idunno_toy"]:
            del sys.modules[module]


def test_entry_points_register_kinds_and_broken_ones_are_skipped_once(
    plugin_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.kinds"):
        loaded = kinds.load_entry_points()
    assert loaded == [TOY_MODEL, "toyfactory"]
    kind, name = kinds.resolve("ToyNet")
    assert isinstance(kind, ImageModel) and name == TOY_MODEL
    assert kinds.resolve("TOYFACTORY")[1] == "toyfactory"
    assert kinds.resolve("resnet50")[1] == "resnet50"  # the built-ins are still first

    catalogue = kinds.catalogue()
    assert catalogue["kinds"][TOY_MODEL] == [TOY_MODEL]
    assert catalogue["models"][:2] == ["resnet50", "inception_v3"]
    assert TOY_MODEL in catalogue["models"] and "toyfactory" in catalogue["models"]
    skipped = catalogue["skipped"]
    assert set(skipped) == set(BAD_ENTRIES)
    assert skipped["broken"] == "ImportError: idunno_toy.broken is broken"
    assert skipped["number"].startswith("TypeError: it gave a int, not a job kind")
    assert skipped["failing"] == "RuntimeError: no kind today"
    assert "already registered" in skipped["twice"]
    assert "NO_SUCH_THING" in skipped["missing"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == len(BAD_ENTRIES)  # once each
    assert all("\n" not in w and "skipped" in w for w in warnings)

    # An unknown name close to the plug-in's is pointed at it.
    with pytest.raises(Invalid, match="did you mean toynet"):
        kinds.resolve("toynett")


def test_the_node_loads_plugins_at_import_without_torch(plugin_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from inference import kinds\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'torchvision'})\n"
        "print(json.dumps({**kinds.catalogue(), 'heavy': heavy}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_path), str(REPO_ROOT)])}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    reply = json.loads(out.stdout)
    assert reply["heavy"] == []
    assert reply["kinds"][TOY_MODEL] == [TOY_MODEL] and "toyfactory" in reply["models"]
    assert set(reply["skipped"]) == set(BAD_ENTRIES)
    assert out.stderr.count("skipped") == len(BAD_ENTRIES)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("bad name", "m:f"), {}, "use letters"),
        (("MobileNet_V2", "m:f"), {}, "taken by a built-in"),
        (("noop", "m:f"), {}, "taken by a built-in"),
        (("ok", "m.f"), {}, "must be 'module:function'"),
        (("ok", "m:f"), {"labels": "abc"}, "sequence of class names"),
        (("ok", "m:f"), {"crop": 0}, "crop >= 1"),
        (("ok", "m:f"), {"interpolation": "lanczos"}, "unknown interpolation"),
    ],
)
def test_image_model_refuses_bad_declarations(
    args: tuple[str, str], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ImageModel(*args, **kwargs)


def test_image_model_is_an_image_kind_with_its_own_name_and_weights() -> None:
    kind = ImageModel("Leaf-Net", "pkg.net:build", resize=64, crop=56, labels=("a", "b"))
    assert kind.canonical("leaf-net") == "Leaf-Net" and kind.canonical("leafnet") is None
    assert kind.models == ("Leaf-Net",) and kind.name == "Leaf-Net"
    assert kind.weights_name("Leaf-Net") == "models/Leaf-Net.pth"
    assert kind.custom is not None and kind.custom.preprocess.crop == 56
    assert kind.error_row("images/a.jpg", "boom") == {
        "input": "images/a.jpg",
        "top5": [],
        "error": "boom",
    }


def test_the_runner_runs_a_user_model_like_plain_torch(plugin_path: Path, tmp_path: Path) -> None:
    from inference.runtime import ModelRunner

    kinds.load_entry_points()
    kind, _ = kinds.resolve(TOY_MODEL)
    assert isinstance(kind, ImageModel) and kind.custom is not None
    weights = toy_weights(tmp_path / "toynet.pth")
    images = make_images(tmp_path / "images")
    runner = ModelRunner(device="cpu", threads=2)
    result = runner.run(TOY_MODEL, str(weights), [str(p) for p in images], None, custom=kind.custom)
    for row, image in zip(result.rows, images, strict=True):
        expected = toy_reference(weights, image)
        if image.name == CORRUPT:
            assert expected is None and row["error"].startswith("cannot decode image")
            continue
        assert expected is not None
        assert [r[:2] for r in row["top5"]] == [e[:2] for e in expected]
        assert [r[2] for r in row["top5"]] == pytest.approx([e[2] for e in expected], abs=1e-6)
        assert all(r[1] in TOY_LABELS for r in row["top5"])
    assert runner.describe()["models"] == [TOY_MODEL]
    assert kind.custom.preprocess.crop == TOY_CROP


class _Node:
    """Just enough of a node for a NODE command that reads the registry only."""

    test_mode = False


async def test_the_models_command_lists_what_c3_and_c4_accept() -> None:
    parsed = commands.parse("models", [])
    assert parsed.where is commands.Where.NODE
    ctx = Context(None, _Node(), None)  # type: ignore[arg-type]
    reply = await commands.run(parsed, ctx)
    assert reply["models"][:2] == ["resnet50", "inception_v3"]
    assert "mobilenet_v3_small" in reply["models"] and "noop" not in reply["models"]
    assert reply["kinds"]["image-classification"] == reply["models"]
    assert reply["skipped"] == {}
    assert "  models" in commands.help_text()
    with pytest.raises(commands.CommandError, match="usage: models"):
        commands.parse("models", ["extra"])


def test_unreadable_installed_metadata_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise ValueError("bad METADATA in some.dist-info")

    monkeypatch.setattr(importlib.metadata, "entry_points", broken)
    with caplog.at_level(logging.WARNING, logger="inference.kinds"):
        assert kinds.load_entry_points() == []
    assert [r.getMessage() for r in caplog.records] == [
        "cannot list the idunno.job_kinds entry points: bad METADATA in some.dist-info"
    ]
