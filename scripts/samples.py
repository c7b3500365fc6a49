"""Sample inputs for IDunno: generated images and freshly initialised model weights.

Used by the demo (``scripts/demo.py``) and, through ``tests/helpers/imagegen.py``, by
the tests.  Nothing here needs a network:

* :func:`make_images` draws images with PIL from a seeded generator, in the formats
  and shapes SDFS may hold: JPEG and PNG; RGB, RGBA, greyscale and palette;
  landscape, portrait, square, thin strips and images smaller than the models' crop.
* :func:`make_weights` saves a freshly initialised torchvision model as a state_dict,
  the format of ``models/*.pth`` in SDFS.  Pretrained ImageNet weights cannot be
  downloaded offline; these load and run exactly like them, but their predictions
  mean nothing.

torch is imported inside :func:`make_weights` only, so that a caller that needs just
the images does not pay for it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from PIL import Image, ImageDraw

__all__ = ["gradient", "make_images", "make_weights", "noise", "shapes"]


# --- drawing ------------------------------------------------------------------------


def noise(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """An RGB image of uniform random pixels."""
    w, h = size
    return Image.frombytes("RGB", size, rng.randbytes(w * h * 3))


def shapes(rng: random.Random, img: Image.Image, count: int) -> Image.Image:
    """Draw ``count`` random ellipses and outlined rectangles on ``img`` (in place)."""
    draw = ImageDraw.Draw(img)
    w, h = img.size
    for _ in range(count):
        x0, y0 = rng.randrange(w), rng.randrange(h)
        x1, y1 = x0 + rng.randrange(4, max(5, w // 2)), y0 + rng.randrange(4, max(5, h // 2))
        rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        colour: int | tuple[int, ...] = rgb[0] if img.mode == "L" else rgb
        black: int | tuple[int, ...] = 0 if img.mode == "L" else (0, 0, 0)
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1, y1), fill=colour, outline=black)
    return img


def gradient(size: tuple[int, int]) -> Image.Image:
    """An RGB image of three crossing linear ramps."""
    ramp = Image.linear_gradient("L").resize(size)
    return Image.merge(
        "RGB", (ramp, ramp.rotate(90).resize(size), ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    )


# Sizes (width, height) the demo's images are drawn at: the models resize the shorter
# side to 256 (ResNet-50) or 342 (Inception-v3) and crop, so both smaller and larger
# inputs, and extreme aspect ratios, exercise the preprocessing.
_SIZES: tuple[tuple[int, int], ...] = (
    (640, 480),
    (480, 640),
    (500, 333),
    (333, 500),
    (256, 256),
    (800, 600),
    (1024, 768),
    (320, 200),
    (150, 120),
    (96, 96),
    (400, 37),
    (64, 48),
)

# (image mode, file format); JPEG holds no alpha or palette, so those are PNGs.
_KINDS: tuple[tuple[str, str], ...] = (
    ("RGB", "jpg"),
    ("RGB", "jpg"),
    ("RGB", "jpg"),
    ("RGB", "png"),
    ("RGBA", "png"),
    ("L", "jpg"),
    ("L", "png"),
    ("P", "png"),
)


def _background(rng: random.Random, mode: str, size: tuple[int, int]) -> Image.Image:
    style = rng.randrange(3)
    if style == 0:
        img = noise(rng, size)
    elif style == 1:
        img = gradient(size)
    else:
        img = Image.new("RGB", size, (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(rng.randrange(64, 256))
    elif mode == "L":
        img = img.convert("L")
    return img


def make_images(directory: Path, count: int = 48, seed: int = 2022) -> list[Path]:
    """``count`` decodable images in ``directory``, named ``img-000.jpg``, ``img-001.png`` ...

    Sizes, modes and formats cycle through a varied set (see ``_SIZES`` and ``_KINDS``);
    the content is random noise, gradients or flat colour with random shapes on top.
    The same ``seed`` and ``count`` give the same files, byte for byte.
    """
    if count < 0:
        raise ValueError(f"count must be at least 0, not {count}")
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths: list[Path] = []
    for i in range(count):
        size = _SIZES[i % len(_SIZES)]
        mode, fmt = _KINDS[i % len(_KINDS)]
        base = "RGBA" if mode == "RGBA" else "L" if mode == "L" else "RGB"
        img = shapes(rng, _background(rng, base, size), rng.randrange(2, 16))
        if mode == "P":
            img = img.quantize(rng.choice((8, 16, 64)))
        path = directory / f"img-{i:03d}.{fmt}"
        if fmt == "jpg":
            img.save(path, "JPEG", quality=rng.randrange(70, 96))
        else:
            img.save(path, "PNG")
        paths.append(path)
    return paths


# --- weights --------------------------------------------------------------------------


def make_weights(path: Path, model: str, seed: int = 0, logit_std: float = 6.0) -> Path:
    """A freshly initialised torchvision ``model`` saved as a state_dict at ``path``.

    ``model`` is ``resnet50`` or ``inception_v3``.  Random networks give degenerate
    outputs: inception_v3's init (std 0.1 everywhere, batch-norm statistics still 0
    and 1) makes logits so large that softmax puts 1.0 on one class and exact zeros
    elsewhere, and then top-5 order is a tie-break.  So the classifier is rescaled
    until the logits' spread across classes is about ``logit_std``: the top
    probabilities are then distinct and their order is decided by real differences,
    not by last-bit rounding that a batch size or a thread count can change.
    """
    import torch
    from torchvision.models import inception_v3, resnet50

    torch.manual_seed(seed)
    if model == "resnet50":
        net, size = resnet50(weights=None), 224
    elif model == "inception_v3":
        net, size = inception_v3(weights=None, aux_logits=True, init_weights=True), 299
    else:
        raise ValueError(f"no generator for {model!r}")
    net.eval()
    with torch.no_grad():
        spread = float(net(torch.randn(2, 3, size, size)).std(dim=1).mean())
        net.fc.weight.mul_(logit_std / spread)
        net.fc.bias.mul_(logit_std / spread)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def random_file(path: Path, size: int) -> Path:
    """``size`` random (incompressible) bytes at ``path``, written in 1 MiB pieces."""
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    return path
