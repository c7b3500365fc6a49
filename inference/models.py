"""The models IDunno serves: names, where their weights live, how their input is prepared.

Every image classification model in torchvision's registry is served by name
(``resnet50``, ``inception_v3``, ``mobilenet_v3_small``, ... 80 of them with
torchvision 0.29).  This module is imported by the node (the image-classification job
kind, :mod:`inference.kinds.image`, validates model names with it), so its top level
must not import torch: a node that runs no job never loads torch (shared/DESIGN.md,
"Concurrency and CPU").  The names, each model's weights entry and its preprocessing
come from :mod:`inference.torchvision_models`, a table generated from torchvision's
registry whose test compares it with the installed torchvision.  The functions that
need torch or torchvision (:func:`build_model`, :func:`labels`,
:func:`torchvision_weights`) import them when called; only the worker process calls them.

Preprocessing is torchvision's own weights transforms (``weights.transforms()``):
antialiased resize of the shorter side (bilinear or bicubic, as the weights say),
centre crop, scale to [0, 1], mean/std normalisation.  The SDFS weights
``models/NAME.pth`` are expected to be a state_dict of that weights entry
(``IMAGENET1K_V1`` for resnet50 and inception_v3, as always; torchvision's ``DEFAULT``
for the others).

Names are case-insensitive and ``-`` stands for ``_``; a spelling without the
underscores (``ResNet50``, ``InceptionV3``, ``mobilenetv3small``) is accepted too
unless two models share it (``regnetx16gf`` could be regnet_x_16gf or
regnet_x_1_6gf).  An unknown name is refused on one line with the closest names.

``noop`` (the dispatch benchmark's pseudo-model) is a job kind of its own
(:mod:`inference.kinds.noop`): :func:`canonical_model` refuses it like any other
unknown name.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

from inference.torchvision_models import IMAGENET_MEAN, IMAGENET_STD, TORCHVISION_MODELS

if TYPE_CHECKING:  # only for annotations; never imported at run time by this module
    import torch
    from torchvision.models import WeightsEnum

RESNET50 = "resnet50"
INCEPTION_V3 = "inception_v3"
# The two models IDunno served first lead the list people see; the rest are sorted.
MODELS: tuple[str, ...] = (
    RESNET50,
    INCEPTION_V3,
    *sorted(set(TORCHVISION_MODELS) - {RESNET50, INCEPTION_V3}),
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MODELS", "Preprocess", "canonical_model"]


def _squash(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace("_", "")


# The spelling without underscores, where it names one model only.
_SQUASHED = Counter(_squash(m) for m in MODELS)
_ALIASES: dict[str, str] = {_squash(m): m for m in MODELS if _SQUASHED[_squash(m)] == 1}


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input (torchvision's ``ImageClassification`` preset)."""

    resize: int  # the shorter side is resized to this many pixels (antialiased)
    crop: int  # then the centre crop x crop square is kept
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel, after scaling to [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # of the resize: "bilinear", "bicubic" or "nearest"

    def to_wire(self) -> dict[str, Any]:
        """As a msgpack map (the worker process's ``run`` request carries it)."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_wire(cls, data: Any) -> Preprocess:
        """The inverse of :meth:`to_wire`; ValueError for anything else."""
        try:
            resize, crop = int(data["resize"]), int(data["crop"])
            mean = tuple(float(v) for v in data["mean"])
            std = tuple(float(v) for v in data["std"])
            interpolation = str(data.get("interpolation", "bilinear"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a preprocess spec needs resize, crop, mean and std: {exc}") from None
        if len(mean) != 3 or len(std) != 3 or resize < 1 or crop < 1 or min(std) <= 0:
            raise ValueError("a preprocess spec needs resize, crop >= 1 and 3 means and stds > 0")
        if interpolation not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"unknown interpolation {interpolation!r}")
        return cls(
            resize, crop, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]), interpolation
        )


PREPROCESS: dict[str, Preprocess] = {
    name: Preprocess(resize=resize, crop=crop, mean=mean, std=std, interpolation=interp)
    for name, (_, resize, crop, interp, mean, std) in TORCHVISION_MODELS.items()
}


def suggestions(name: str, names: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``names`` closest to ``name``: those it spells without underscores
    (``regnetx16gf``: regnet_x_16gf and regnet_x_1_6gf), those it begins
    (``mobilenet_v3``), then difflib's closest."""
    by_key: dict[str, list[str]] = {}
    for candidate in names:
        by_key.setdefault(_squash(candidate), []).append(candidate)
    key = _squash(name)
    found = list(by_key.get(key, []))
    if key:
        found += [c for c in names if _squash(c).startswith(key) and c not in found]
    for close in difflib.get_close_matches(key, list(by_key), n=n, cutoff=0.6):
        found += [c for c in by_key[close] if c not in found]
    return found[:n]


def canonical_or_none(name: str) -> str | None:
    """The canonical name of ``name`` if it names a torchvision model, else None."""
    exact = name.strip().lower().replace("-", "_")
    if exact in TORCHVISION_MODELS:
        return exact
    return _ALIASES.get(_squash(name))


def canonical_model(name: str) -> str:
    """The canonical name of ``name`` (``resnet50``, ``mobilenet_v3_small``, ...).

    Case-insensitive; ``-`` is ``_``, and the spelling without underscores is accepted
    where it is unambiguous (``ResNet50``, ``InceptionV3``).  Raises ValueError with a
    one-line message otherwise, naming the closest models.
    """
    canonical = canonical_or_none(name)
    if canonical is not None:
        return canonical
    close = suggestions(name, MODELS)
    hint = f"did you mean {or_list(close)}? " if close else ""
    raise ValueError(
        f"unknown model {name!r}: {hint}valid models are the {len(MODELS)} torchvision "
        f"classification models ({', '.join(MODELS[:2])}, ..., {MODELS[-1]})"
    )


def or_list(names: Sequence[str], word: str = "or") -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} {word} {names[-1]}"


def weights_sdfs_name(model: str) -> str:
    """The SDFS file holding ``model``'s weights (a torchvision state_dict)."""
    return f"models/{canonical_model(model)}.pth"


def weights_entry(model: str) -> str:
    """The name of the torchvision weights entry ``model``'s file holds (``IMAGENET1K_V1``)."""
    return TORCHVISION_MODELS[canonical_model(model)][0]


def preprocess_spec(model: str) -> Preprocess:
    return PREPROCESS[canonical_model(model)]


@dataclass(frozen=True)
class CustomModel:
    """A user's image model (see :class:`inference.kinds.custom.ImageModel`): what the
    worker process needs to build and run it, as the ``run`` request carries it."""

    name: str  # what C3/C4 call it; its weights are models/NAME.pth in SDFS
    build: str  # "module:function": FUNCTION() -> torch.nn.Module, called in the worker
    preprocess: Preprocess
    labels: tuple[str, ...] | None = None  # class names by index; None: ImageNet's 1000

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "build": self.build,
            "preprocess": self.preprocess.to_wire(),
            "labels": list(self.labels) if self.labels is not None else None,
        }

    @classmethod
    def from_wire(cls, data: Any) -> CustomModel:
        """The inverse of :meth:`to_wire`; ValueError for anything else."""
        if not isinstance(data, dict):
            raise ValueError("'custom' must be a map")
        name, build, labels = data.get("name"), data.get("build"), data.get("labels")
        if not isinstance(name, str) or not isinstance(build, str) or build.count(":") != 1:
            raise ValueError("'custom' needs a name and a build 'module:function'")
        if labels is not None and (
            not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
        ):
            raise ValueError("'custom' labels must be a list of strings or null")
        return cls(
            name,
            build,
            Preprocess.from_wire(data.get("preprocess")),
            tuple(labels) if labels is not None else None,
        )


# --- torch side: only the worker process calls these -------------------------------


def torchvision_weights(model: str) -> WeightsEnum:
    """torchvision's weights entry for ``model`` (labels, URL, reference transforms)."""
    from torchvision.models import get_model_weights

    name = canonical_model(model)
    weights: WeightsEnum = get_model_weights(name)[weights_entry(name)]
    return weights


def labels(model: str) -> list[str]:
    """``model``'s class names, indexed by class (its weights' ``meta["categories"]``).

    They ship inside torchvision, so no download is needed.
    """
    return list(torchvision_weights(model).meta["categories"])


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, indexed by class (what every model here predicts)."""
    return labels(RESNET50)


def build_model(
    model: str,
    weights: str | IO[bytes] | None,
    allow_download: bool = False,
    source: str | None = None,
) -> torch.nn.Module:
    """``model`` in eval mode on the CPU, with its weights loaded.

    ``weights`` is a local copy of the SDFS weights file (the caller fetched it), as a
    path or an open binary file; ``source`` names it in error messages (default: the
    path).  It must be a state_dict of the model's weights entry (:func:`weights_entry`),
    matching the architecture exactly (strict load).
    Without weights, torchvision's own weights are used if ``allow_download`` is true
    (torch.hub downloads them once, or finds them in its cache under $TORCH_HOME);
    otherwise that is an error, so that a node never reaches for the network unasked.

    Either way the network is made by torchvision's own builder for that weights entry,
    which sets the architecture options the weights need (inception_v3 and googlenet:
    ``transform_input=True`` and the auxiliary heads the files carry; the ViTs and
    MaxViT: the input size of their SWAG or 224 weights): with a file, the builder is
    handed its state_dict instead of downloading one.  Copying those options here would
    drift from torchvision; leaving one out (inception_v3's ``transform_input``, which no
    state_dict records) would silently give worse answers.
    """
    import torch
    from torchvision.models import get_model

    name = canonical_model(model)
    entry = torchvision_weights(name)
    if weights is None:
        if not allow_download:
            raise ValueError(
                f"no weights file given for {name} and downloading is not allowed "
                f"(fetch {weights_sdfs_name(name)} from SDFS first)"
            )
        net: torch.nn.Module = get_model(name, weights=entry)
        return net.eval()

    # weights_only: a weights file is data from the cluster; never unpickle code from it.
    where = source or (weights if isinstance(weights, str) else "the weights file")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{where} holds a {type(state).__name__}, not a state_dict for {name}")
    with _state_dict_for(entry, state):
        try:
            net = get_model(name, weights=entry)  # it calls entry.get_state_dict()
        except RuntimeError as exc:
            mismatch = state_dict_mismatch(str(exc))
            if mismatch is None:
                raise
            raise ValueError(f"{where} is not a {name} state_dict: {mismatch}") from None
    return net.eval()


class _state_dict_for:
    """Within the block, ``entry.get_state_dict()`` returns ``state`` instead of
    downloading (torchvision's builders call it to load their weights).

    The weights enum's class attribute is patched for the block only; the worker
    process builds one model at a time, on one thread."""

    def __init__(self, entry: WeightsEnum, state: dict[str, Any]) -> None:
        self.cls = type(entry)
        self.state = state

    def __enter__(self) -> None:
        state = self.state

        def get_state_dict(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return state

        self.cls.get_state_dict = get_state_dict

    def __exit__(self, *exc: object) -> None:
        del self.cls.get_state_dict  # back to WeightsEnum's own


def state_dict_mismatch(message: str) -> str | None:
    """torch's multi-line strict-load error as one clause, or None if it is not one.

    ``Error(s) in loading state_dict for ResNet: Missing key(s) in state_dict: "a", "b".
    Unexpected key(s) in state_dict: "c". size mismatch for d: ...`` becomes ``2 missing
    and 1 unexpected keys (e.g. 'a')``, or ``1 tensors of the wrong shape (e.g. 'd')``.
    """
    if not message.startswith("Error(s) in loading state_dict"):
        return None
    missing: list[str] = []
    unexpected: list[str] = []
    wrong_shape: list[str] = []
    for line in message.splitlines():
        line = line.strip()
        keys = re.findall(r'"([^"]*)"', line)
        if line.startswith("Missing key(s)"):
            missing += keys
        elif line.startswith("Unexpected key(s)"):
            unexpected += keys
        elif line.startswith("size mismatch for "):
            wrong_shape.append(line.removeprefix("size mismatch for ").split(":", 1)[0])
    if missing or unexpected:
        example = (missing or unexpected)[0]
        return f"{len(missing)} missing and {len(unexpected)} unexpected keys (e.g. {example!r})"
    if wrong_shape:
        return f"{len(wrong_shape)} tensors of the wrong shape (e.g. {wrong_shape[0]!r})"
    return None


def build_custom(
    custom: CustomModel, weights: str | IO[bytes] | None, source: str | None = None
) -> torch.nn.Module:
    """A user's model: ``custom.build()`` in eval mode on the CPU, with the SDFS
    state_dict at ``weights`` loaded strictly (weights_only, as for torchvision's)."""
    import importlib

    import torch

    if weights is None:
        raise ValueError(
            f"no weights file for {custom.name}: put its state_dict in SDFS as "
            f"models/{custom.name}.pth"
        )
    module_name, function_name = custom.build.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    net: Any = function()
    if not isinstance(net, torch.nn.Module):
        raise ValueError(f"{custom.build} returned a {type(net).__name__}, not a torch.nn.Module")
    where = source or (weights if isinstance(weights, str) else "the weights file")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{where} holds a {type(state).__name__}, not a state_dict")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        mismatch = state_dict_mismatch(str(exc))
        if mismatch is None:
            raise
        raise ValueError(f"{where} is not a {custom.name} state_dict: {mismatch}") from None
    built: torch.nn.Module = net.eval()
    return built
