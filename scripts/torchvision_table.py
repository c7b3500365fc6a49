"""Write ``inference/torchvision_models.py``: torchvision's classification models, torch-free.

    python -m scripts.torchvision_table > inference/torchvision_models.py

The node must refuse an unknown model at once (C3, C4) without importing torch, so
the names of torchvision's classification models, the weights each one's SDFS file is
expected to hold and those weights' preprocessing are kept as plain data in
:mod:`inference.torchvision_models`.  This script derives that module from the
installed torchvision's own registry (``list_models``, ``get_model_weights``, the
weights' ``transforms()``), and ``tests/inference/test_models.py`` compares the two:
after a torchvision upgrade that adds a model or changes a preset, the test fails and
says to run this again.

Each model's weights are torchvision's ``DEFAULT`` entry, except ``resnet50``, which
keeps ``IMAGENET1K_V1`` (what IDunno has always served: its ``DEFAULT`` is V2, resized
to 232 rather than 256, so V1's files would be preprocessed wrongly).
"""

from __future__ import annotations

import sys
from typing import Any

# Models whose weights are not torchvision's DEFAULT, and why: see the module docstring.
PINNED = {"resnet50": "IMAGENET1K_V1"}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

HEADER = '''"""torchvision's image classification models, as plain data (generated: do not edit).

Written by ``python -m scripts.torchvision_table > inference/torchvision_models.py``
from torchvision {version}'s registry; ``tests/inference/test_models.py`` checks it
against the installed torchvision.  For each model: the weights entry its SDFS file
``models/NAME.pth`` is expected to hold (a state_dict of those weights' architecture)
and those weights' own preprocessing (``weights.transforms()``): resize the shorter
side to ``resize`` (``interpolation``, antialiased), centre-crop ``crop``, scale to
[0, 1], normalise with ``mean`` and ``std``.  Importing it costs no torch.
"""

from __future__ import annotations

IMAGENET_MEAN = {mean!r}
IMAGENET_STD = {std!r}

# name: (weights entry, resize, crop, interpolation, mean, std)
TORCHVISION_MODELS: dict[
    str, tuple[str, int, int, str, tuple[float, float, float], tuple[float, float, float]]
] = {{
'''


def rows() -> dict[str, tuple[str, int, int, str, tuple[float, ...], tuple[float, ...]]]:
    """The table, from the installed torchvision."""
    from torchvision import models
    from torchvision.transforms._presets import ImageClassification

    out: dict[str, tuple[str, int, int, str, tuple[float, ...], tuple[float, ...]]] = {}
    for name in models.list_models(module=models):
        enum: Any = models.get_model_weights(name)
        weights = enum[PINNED[name]] if name in PINNED else enum.DEFAULT
        preset = weights.transforms()
        if not isinstance(preset, ImageClassification) or not preset.antialias:
            raise ValueError(f"{name}: {weights} has a preset IDunno does not know: {preset!r}")
        (resize,), (crop,) = preset.resize_size, preset.crop_size
        out[name] = (
            weights._name_,
            resize,
            crop,
            preset.interpolation.value,
            tuple(preset.mean),
            tuple(preset.std),
        )
    return out


def _vector(v: tuple[float, ...]) -> str:
    if v == IMAGENET_MEAN:
        return "IMAGENET_MEAN"
    if v == IMAGENET_STD:
        return "IMAGENET_STD"
    return repr(v)


def render() -> str:
    import torchvision

    text = HEADER.format(version=torchvision.__version__, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    for name, (weights, resize, crop, interp, mean, std) in rows().items():
        text += (
            f"    {name!r}: ({weights!r}, {resize}, {crop}, {interp!r}, "
            f"{_vector(mean)}, {_vector(std)}),\n"
        )
    return text + "}\n"


if __name__ == "__main__":
    sys.stdout.write(render())
