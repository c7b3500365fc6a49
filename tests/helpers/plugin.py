"""A user's plug-in, made by a test: an installed distribution with ``idunno.job_kinds``
entry points, in a directory that goes on ``sys.path`` (or PYTHONPATH for the nodes).

``importlib.metadata`` finds any ``NAME.dist-info`` directory on the path holding a
``METADATA`` and an ``entry_points.txt``, exactly as it finds what pip installed, so
this is the real loading path without pip or a network.

:func:`make_plugin` writes the distribution ``idunno-toy`` with the package
``idunno_toy``: ``toynet``, a small user image model declared with
:class:`~inference.kinds.custom.ImageModel` (its build function in
``idunno_toy/net.py``, the only file that imports torch), plus whatever broken entries
a test asks for.  :func:`toy_weights` saves its state_dict, :func:`toy_reference` runs
it on one image without IDunno (plain PIL and torch), as the expected answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

TOY_MODEL = "toynet"
TOY_LABELS = tuple(f"class-{i}" for i in range(10))
# Not the defaults, so that a test sees them used: a bicubic resize to 40, a 32 crop.
TOY_RESIZE, TOY_CROP, TOY_MEAN, TOY_STD = 40, 32, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)

_KINDS_MODULE = f'''"""idunno_toy's job kinds: torch-free, the node imports it."""
from inference.kinds.custom import ImageModel

KIND = ImageModel(
    {TOY_MODEL!r},
    build="idunno_toy.net:build",
    resize={TOY_RESIZE},
    crop={TOY_CROP},
    mean={TOY_MEAN!r},
    std={TOY_STD!r},
    interpolation="bicubic",
    labels={TOY_LABELS!r},
)
'''

_NET_MODULE = '''"""toynet's network: imported by the worker process only."""
import torch


def build() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
'''


def make_plugin(root: Path, extra: Mapping[str, str] | None = None) -> Path:
    """Write the distribution under ``root``; the directory to put on the path.

    ``extra`` adds entry points (name -> ``module:attribute``) to the group; modules
    ``idunno_toy.broken`` (raises at import) and attributes ``idunno_toy.bad:NOT_A_KIND``,
    ``idunno_toy.bad:make_kind`` (a factory) and ``idunno_toy.bad:failing`` (a factory
    that raises) are there for them to name.
    """
    root.mkdir(parents=True, exist_ok=True)
    package = root / "idunno_toy"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text(_KINDS_MODULE)
    (package / "net.py").write_text(_NET_MODULE)
    (package / "broken.py").write_text('raise ImportError("idunno_toy.broken is broken")\n')
    (package / "bad.py").write_text(
        "from inference.kinds.custom import ImageModel\n"
        "NOT_A_KIND = 42\n"
        "def make_kind():\n"
        "    return ImageModel('toyfactory', build='idunno_toy.net:build')\n"
        "def failing():\n"
        "    raise RuntimeError('no kind today')\n"
    )
    info = root / "idunno_toy-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: idunno-toy\nVersion: 1.0\n")
    entries = {TOY_MODEL: "idunno_toy:KIND", **(extra or {})}
    (info / "entry_points.txt").write_text(
        "[idunno.job_kinds]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
    )
    return root


def _toy_build() -> Any:
    """The plug-in's own build function, run here (the same source as its net.py)."""
    namespace: dict[str, Any] = {}
    exec(_NET_MODULE, namespace)
    return namespace["build"]()


def toy_weights(path: Path, seed: int = 7) -> Path:
    """toynet's state_dict at ``path``, its logits spread so that top-5 order is clear."""
    import torch

    torch.manual_seed(seed)
    net = _toy_build()
    with torch.no_grad():
        net[-1].weight.mul_(40.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def toy_reference(weights: Path, image: Path) -> list[list[Any]] | None:
    """toynet's top 5 for ``image``, by plain PIL and torch (None if it does not decode)."""
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    net = _toy_build()
    net.load_state_dict(torch.load(weights, weights_only=True))
    net.eval()
    transform = v2.Compose(
        [
            v2.Resize(TOY_RESIZE, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
            v2.CenterCrop(TOY_CROP),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(TOY_MEAN, TOY_STD),
        ]
    )
    try:
        with Image.open(image) as img:
            x = transform(img.convert("RGB")).unsqueeze(0)
    except Exception:
        return None
    with torch.inference_mode():
        probs = torch.softmax(net(x), dim=1)[0]
    top = torch.topk(probs, 5)
    return [
        [int(i), TOY_LABELS[int(i)], float(p)] for p, i in zip(top.values, top.indices, strict=True)
    ]
