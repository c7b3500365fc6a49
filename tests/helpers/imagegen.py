"""Generated inputs for the inference tests: small images and model weights.

The generators live in ``scripts/samples.py`` (the demo uses them too, and scripts
never import tests); this module re-exports them and adds what only tests need: the
fixed eight-file image set with a corrupt file in it, and :func:`install_in_hub_cache`.

Pretrained ImageNet weights cannot be downloaded where the tests run, so the weights
are freshly initialised torchvision models saved as state_dicts (the same format as
``models/*.pth`` in SDFS); the tests compare computations, not accuracy.

torch is imported inside the weight functions only, so that a test that needs just
the images does not pay for it.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from PIL import Image

from scripts.samples import gradient, make_weights, noise, shapes

__all__ = ["CORRUPT", "install_in_hub_cache", "make_images", "make_weights"]

CORRUPT = "corrupt.jpg"


def make_images(directory: Path, seed: int = 1234) -> list[Path]:
    """Seven decodable images and one corrupt file (``CORRUPT``) in ``directory``.

    JPEG and PNG; RGB, RGBA, greyscale and palette; landscape, portrait and smaller
    than the crop.  Returned in a fixed order, the corrupt one in the middle so that
    tests see rows on both sides of it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    images: list[tuple[str, Image.Image]] = [
        ("noise_portrait.jpg", noise(rng, (333, 500))),
        ("shapes.png", shapes(rng, Image.new("RGB", (256, 256), (240, 240, 230)), 12)),
        ("alpha.png", shapes(rng, Image.new("RGBA", (320, 200), (0, 90, 160, 128)), 5)),
        ("gray.png", shapes(rng, Image.new("L", (150, 120), 30), 8)),
        ("palette.png", shapes(rng, Image.new("RGB", (64, 48), (200, 10, 10)), 4).quantize(16)),
        ("big.jpg", shapes(rng, noise(rng, (1024, 768)), 20)),
        ("strip.jpg", shapes(rng, gradient((400, 37)), 3)),
    ]
    paths: list[Path] = []
    for name, img in images:
        path = directory / name
        if name.endswith(".jpg"):
            img.convert("RGB").save(path, "JPEG", quality=90)
        else:
            img.save(path, "PNG")
        paths.append(path)
    corrupt = directory / CORRUPT
    # A JPEG start-of-image marker followed by junk: it gets past type sniffing by name
    # and magic number, and fails inside the decoder.
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + rng.randbytes(2000))
    paths.insert(3, corrupt)
    return paths


def image_set(work: Path, count: int) -> Path:
    """``work/images`` holding ``count`` decodable images (copies of
    :func:`make_images`' seven, named ``img-0000.jpg`` ...), for benchmarks."""
    originals = [p for p in make_images(work / "orig") if p.name != CORRUPT]
    images = work / "images"
    images.mkdir()
    for i in range(count):
        src = originals[i % len(originals)]
        shutil.copyfile(src, images / f"img-{i:04d}{src.suffix}")
    return images


def install_in_hub_cache(torch_home: Path, model: str, weights: Path) -> Path:
    """Copy ``weights`` to where torch.hub looks for torchvision's ImageNet weights.

    With ``$TORCH_HOME`` set to ``torch_home``, ``torchvision.models.resnet50(weights=
    ResNet50_Weights.IMAGENET1K_V1)`` (or inception_v3) then loads this file instead of
    downloading: torch.hub checks the hash only of files it downloads itself.  That
    makes torchvision's own pretrained code path usable as the reference offline.
    """
    from inference.models import torchvision_weights

    url: str = torchvision_weights(model).url
    target = torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, target)
    return target
