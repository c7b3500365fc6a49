"""Any torchvision classification model: the torch-free table, names, preprocessing, building.

The table (:mod:`inference.torchvision_models`) is checked against the installed
torchvision's registry, so an upgrade that adds a model or changes a preset fails
here.  Preprocessing is compared with torchvision's own ``weights.transforms()`` on
real images, for models with each kind of preset; building is compared with
torchvision's builder on the same state_dict.  The two models served from the start
are covered by test_runtime.py.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import models as tvm

from inference import models
from inference.models import (
    MODELS,
    CustomModel,
    Preprocess,
    build_custom,
    build_model,
    canonical_model,
    canonical_or_none,
    preprocess_spec,
    state_dict_mismatch,
    suggestions,
    torchvision_weights,
    weights_entry,
    weights_sdfs_name,
)
from inference.runtime import ModelRunner, decode, preprocess
from inference.torchvision_models import TORCHVISION_MODELS
from scripts import torchvision_table
from tests.helpers.imagegen import CORRUPT, make_images, make_weights

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    found = make_images(tmp_path_factory.mktemp("images"))
    return [p for p in found if p.name != CORRUPT]


@pytest.fixture(scope="module")
def mobilenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenet_v3_small weights, made with torchvision (shared: making them takes a while)."""
    root = tmp_path_factory.mktemp("weights")
    return make_weights(root / "mobilenet_v3_small.pth", "mobilenet_v3_small", seed=2)


# --- the table and the names ------------------------------------------------------------


def test_table_matches_the_installed_torchvision() -> None:
    # If this fails after a torchvision upgrade, regenerate the table:
    #   python -m scripts.torchvision_table > inference/torchvision_models.py
    assert torchvision_table.rows() == TORCHVISION_MODELS
    assert set(MODELS) == set(tvm.list_models(module=tvm))
    assert MODELS[:2] == ("resnet50", "inception_v3") and len(set(MODELS)) == len(MODELS)


def test_the_first_two_keep_their_v1_weights() -> None:
    assert weights_entry("ResNet50") == "IMAGENET1K_V1"  # torchvision's DEFAULT is V2
    assert weights_entry("inception_v3") == "IMAGENET1K_V1"
    assert preprocess_spec("resnet50") == Preprocess(resize=256, crop=224)
    assert preprocess_spec("inception_v3") == Preprocess(resize=342, crop=299)
    assert weights_entry("mobilenet_v3_small") == tvm.MobileNet_V3_Small_Weights.DEFAULT.name


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("mobilenet_v3_small", "mobilenet_v3_small"),
        ("MobileNet_V3_Small", "mobilenet_v3_small"),
        ("mobilenet-v3-small", "mobilenet_v3_small"),
        ("MobileNetV3Small", "mobilenet_v3_small"),
        (" VGG16_BN ", "vgg16_bn"),
        ("regnet_x_1_6gf", "regnet_x_1_6gf"),
        ("regnet_x_16gf", "regnet_x_16gf"),
        ("ResNet50", "resnet50"),
        ("InceptionV3", "inception_v3"),
        ("ViT_B_16", "vit_b_16"),
    ],
)
def test_names_are_case_insensitive_with_unambiguous_aliases(name: str, canonical: str) -> None:
    assert canonical_model(name) == canonical


def test_every_model_is_its_own_name_in_any_case() -> None:
    for name in MODELS:
        assert canonical_or_none(name) == name
        assert canonical_or_none(name.upper()) == name
        assert weights_sdfs_name(name.upper()) == f"models/{name}.pth"


def test_an_ambiguous_alias_is_refused_with_both_candidates() -> None:
    # Without underscores regnet_x_16gf and regnet_x_1_6gf are both "regnetx16gf".
    assert canonical_or_none("regnetx16gf") is None
    with pytest.raises(ValueError, match=r"did you mean regnet_x_16gf, regnet_x_1_6gf") as info:
        canonical_model("RegNetX16GF")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("typo", "first"),
    [("resnt50", "resnet50"), ("mobilenet_v3", "mobilenet_v3_large"), ("efficientnetb0", None)],
)
def test_unknown_names_suggest_the_closest(typo: str, first: str | None) -> None:
    if first is None:  # an alias that is right: not a typo at all
        assert canonical_model(typo) == "efficientnet_b0"
        return
    close = suggestions(typo, MODELS)
    assert close[0] == first and len(close) <= 3
    with pytest.raises(ValueError, match=f"unknown model '{typo}': did you mean {first}"):
        canonical_model(typo)


def test_gibberish_gets_no_suggestion_but_a_summary() -> None:
    assert suggestions("gpt-5", MODELS) == []
    with pytest.raises(ValueError, match=r"^unknown model 'gpt-5': valid models are the 80 "):
        canonical_model("gpt-5")


def test_the_node_side_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from inference.models import canonical_model, preprocess_spec, MODELS\n"
        "assert canonical_model('MobileNetV3Small') == 'mobilenet_v3_small'\n"
        "assert preprocess_spec('efficientnet_b0').interpolation == 'bicubic'\n"
        "import inference.kinds.custom\n"
        "heavy = {'torch', 'torchvision', 'numpy', 'PIL'}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


# --- preprocessing: torchvision's own transforms ----------------------------------------------

# One of each kind of preset: V1 bilinear 256/224, DEFAULT V2 232/224, bicubic,
# mean/std 0.5, a 518 SWAG input.
PRESET_MODELS = ("resnet50", "resnet101", "efficientnet_b0", "efficientnet_v2_l", "vit_h_14")


@pytest.mark.parametrize("model", PRESET_MODELS)
def test_preprocessing_is_torchvisions_own(model: str, images: list[Path]) -> None:
    transform = torchvision_weights(model).transforms()
    spec = preprocess_spec(model)
    for path in images[:4]:
        image = decode(str(path))
        ours = preprocess(spec, image)
        theirs = transform(image)
        assert ours.shape == theirs.shape == (3, spec.crop, spec.crop)
        assert torch.allclose(ours, theirs, atol=1e-6), (model, path.name)


def test_preprocess_travels_and_bad_specs_are_refused() -> None:
    spec = preprocess_spec("efficientnet_v2_l")
    assert Preprocess.from_wire(spec.to_wire()) == spec
    custom = CustomModel("toy", "pkg.mod:build", spec, ("a", "b"))
    assert CustomModel.from_wire(custom.to_wire()) == custom
    for bad in (
        None,
        {"resize": 0, "crop": 1, "mean": [0, 0, 0], "std": [1, 1, 1]},
        {"resize": 8, "crop": 8, "mean": [0, 0], "std": [1, 1, 1]},
        {"resize": 8, "crop": 8, "mean": [0, 0, 0], "std": [1, 0, 1]},
        {"resize": 8, "crop": 8, "mean": [0, 0, 0], "std": [1, 1, 1], "interpolation": "x"},
    ):
        with pytest.raises(ValueError):
            Preprocess.from_wire(bad)
    with pytest.raises(ValueError, match="build 'module:function'"):
        CustomModel.from_wire({**custom.to_wire(), "build": "no-colon"})
    with pytest.raises(ValueError, match="labels"):
        CustomModel.from_wire({**custom.to_wire(), "labels": [1, 2]})


# --- building: torchvision's builder, the SDFS state_dict ------------------------------------


def _saved(state: dict[str, torch.Tensor]) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


@pytest.mark.parametrize("model", ["mobilenet_v3_small", "googlenet"])
def test_build_model_loads_the_state_dict_into_torchvisions_architecture(
    model: str, mobilenet: Path, tmp_path: Path
) -> None:
    if model == "mobilenet_v3_small":
        path = mobilenet
    else:  # as torchvision's file holds them: with the auxiliary heads
        path = tmp_path / "googlenet.pth"
        torch.save(tvm.googlenet(aux_logits=True, init_weights=False).state_dict(), path)
    state = torch.load(path, weights_only=True)
    net = build_model(model, str(path))
    assert not net.training
    got = net.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in got)
    if model == "googlenet":
        # What torchvision's builder does for its weights: transform_input (which no
        # state_dict records), and the auxiliary heads loaded, then dropped.
        assert getattr(net, "transform_input", None) is True
        assert set(state) - set(got) == {k for k in state if k.startswith(("aux1.", "aux2."))}
    else:
        assert set(got) == set(state)
    # The weights enum is left as it was: no state_dict handed to the next build.
    assert "get_state_dict" not in vars(type(torchvision_weights(model)))


def test_wrong_weights_are_refused_in_one_line() -> None:
    other = _saved(tvm.resnet18().state_dict())
    with pytest.raises(ValueError, match=r"^x\.pth is not a mobilenet_v3_small state_dict: "):
        build_model("mobilenet_v3_small", other, source="x.pth")
    shapes = _saved(tvm.resnet18(num_classes=10).state_dict())
    with pytest.raises(ValueError, match=r"2 tensors of the wrong shape \(e\.g\. 'fc\.weight'\)"):
        build_model("resnet18", shapes, source="x.pth")
    with pytest.raises(ValueError, match="holds a list, not a state_dict"):
        build_model("resnet18", _saved([1, 2]), source="x.pth")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="downloading is not allowed"):
        build_model("mobilenet_v3_small", None)


def test_state_dict_mismatch_reads_torchs_message() -> None:
    assert state_dict_mismatch("CUDA out of memory") is None
    text = (
        "Error(s) in loading state_dict for X:\n\tMissing key(s) in state_dict: "
        '"a.w", "b.w". \n\tUnexpected key(s) in state_dict: "c". '
    )
    assert state_dict_mismatch(text) == "2 missing and 1 unexpected keys (e.g. 'a.w')"


def test_the_runner_serves_another_torchvision_model_like_torchvision(
    images: list[Path], mobilenet: Path
) -> None:
    path = mobilenet
    runner = ModelRunner(device="cpu", threads=2)
    images = images[:4]
    names = [p.name for p in images]
    result = runner.run("MobileNetV3Small", str(path), [str(p) for p in images], names)
    net = tvm.mobilenet_v3_small()
    net.load_state_dict(torch.load(path, weights_only=True))
    net.eval()
    weights = tvm.MobileNet_V3_Small_Weights.DEFAULT
    categories = weights.meta["categories"]
    for row, image in zip(result.rows, images, strict=True):
        with Image.open(image) as img:
            x = weights.transforms()(img.convert("RGB")).unsqueeze(0)
        with torch.inference_mode():
            top = torch.topk(torch.softmax(net(x), dim=1)[0], 5)
        assert [r[0] for r in row["top5"]] == top.indices.tolist()
        assert [r[1] for r in row["top5"]] == [categories[i] for i in top.indices.tolist()]
        assert [r[2] for r in row["top5"]] == pytest.approx(top.values.tolist(), abs=1e-5)
    assert runner.describe()["models"] == ["mobilenet_v3_small"]


def test_build_custom_needs_weights_and_a_module(tmp_path: Path) -> None:
    spec = CustomModel("toy", "no_such_module_here:build", Preprocess(8, 8))
    with pytest.raises(ValueError, match=r"put its state_dict in SDFS as models/toy\.pth"):
        build_custom(spec, None)
    with pytest.raises(ModuleNotFoundError):
        build_custom(spec, _saved({}))
    not_a_net = CustomModel("toy", "inference.models:or_list", Preprocess(8, 8))
    with pytest.raises(TypeError):  # or_list() needs an argument: the call itself fails
        build_custom(not_a_net, _saved({}))
    wrong = CustomModel("toy", "inference.models:canonical_or_none", Preprocess(8, 8))
    with pytest.raises(TypeError):
        build_custom(wrong, _saved({}))
    assert models.labels("mobilenet_v3_small")[0] == "tench"
