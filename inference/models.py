"""The models IDunno serves: names, where their weights live, how their input is prepared.

This module is imported by the node (the image-classification job kind,
:mod:`inference.kinds.image`, validates model names with it), so its top level must
not import torch: a node that runs no job never loads torch (shared/DESIGN.md,
"Concurrency and CPU").  The functions that need torch
or torchvision (:func:`build_model`, :func:`imagenet_labels`, :func:`torchvision_weights`)
import them when called; only the worker process calls them.

Preprocessing follows torchvision's own weights transforms
(``ResNet50_Weights.IMAGENET1K_V1.transforms()`` and
``Inception_V3_Weights.IMAGENET1K_V1.transforms()``): bilinear antialiased resize of
the shorter side, centre crop, scale to [0, 1], ImageNet mean/std normalisation.  The
SDFS weights are expected to be those IMAGENET1K_V1 state_dicts; the tests check that
:data:`PREPROCESS` still agrees with torchvision's presets.

``noop`` (the dispatch benchmark's pseudo-model) is a job kind of its own
(:mod:`inference.kinds.noop`): :func:`canonical_model` refuses it like any other
unknown name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations; never imported at run time by this module
    import torch
    from torchvision.models import Inception_V3_Weights, ResNet50_Weights

RESNET50 = "resnet50"
INCEPTION_V3 = "inception_v3"
MODELS: tuple[str, ...] = (RESNET50, INCEPTION_V3)

# Spellings are compared after lower-casing and dropping "_" and "-", so resnet50,
# ResNet50, RESNET_50, inception_v3, InceptionV3 and inceptionv3 all name a model.
_ALIASES: dict[str, str] = {m.replace("_", ""): m for m in MODELS}

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input (torchvision's ``ImageClassification`` preset)."""

    resize: int  # the shorter side is resized to this many pixels (bilinear, antialiased)
    crop: int  # then the centre crop x crop square is kept
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per-channel, after scaling to [0, 1]
    std: tuple[float, float, float] = IMAGENET_STD


PREPROCESS: dict[str, Preprocess] = {
    # ResNet50_Weights.IMAGENET1K_V1: resize 256, crop 224.
    RESNET50: Preprocess(resize=256, crop=224),
    # Inception_V3_Weights.IMAGENET1K_V1: the network's native 299 input, resized from 342
    # (the same 0.875 crop ratio as ResNet's 224/256).
    INCEPTION_V3: Preprocess(resize=342, crop=299),
}


def canonical_model(name: str) -> str:
    """The canonical name of ``name`` (``resnet50`` or ``inception_v3``).

    Case-insensitive; ``_`` and ``-`` are ignored, so ``ResNet50``, ``InceptionV3`` and
    ``inceptionv3`` are accepted.  Raises ValueError with a one-line message otherwise.
    """
    key = name.strip().lower().replace("_", "").replace("-", "")
    try:
        return _ALIASES[key]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: valid models are {', '.join(MODELS)}") from None


def weights_sdfs_name(model: str) -> str:
    """The SDFS file holding ``model``'s weights (a torchvision state_dict)."""
    return f"models/{canonical_model(model)}.pth"


def preprocess_spec(model: str) -> Preprocess:
    return PREPROCESS[canonical_model(model)]


# --- torch side: only the worker process calls these -------------------------------


def torchvision_weights(model: str) -> ResNet50_Weights | Inception_V3_Weights:
    """torchvision's ImageNet weights entry for ``model`` (labels, URL, reference transforms)."""
    from torchvision.models import Inception_V3_Weights, ResNet50_Weights

    if canonical_model(model) == RESNET50:
        return ResNet50_Weights.IMAGENET1K_V1
    return Inception_V3_Weights.IMAGENET1K_V1


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet class names, indexed by class.

    They ship inside torchvision (the weights' ``meta["categories"]``), so no download is
    needed; both models share the same list.
    """
    return list(torchvision_weights(RESNET50).meta["categories"])


def build_model(
    model: str,
    weights: str | IO[bytes] | None,
    allow_download: bool = False,
    source: str | None = None,
) -> torch.nn.Module:
    """``model`` in eval mode on the CPU, with its weights loaded.

    ``weights`` is a local copy of the SDFS weights file (the caller fetched it), as a
    path or an open binary file; ``source`` names it in error messages (default: the
    path).  It must be a state_dict matching the architecture exactly (strict load).
    Without weights, torchvision's own ImageNet weights are used if ``allow_download`` is true
    (torch.hub downloads them once, or finds them in its cache under $TORCH_HOME);
    otherwise that is an error, so that a node never reaches for the network unasked.
    """
    import torch
    from torchvision.models import inception_v3, resnet50

    name = canonical_model(model)
    net: torch.nn.Module
    if weights is None:
        if not allow_download:
            raise ValueError(
                f"no weights file given for {name} and downloading is not allowed "
                f"(fetch {weights_sdfs_name(name)} from SDFS first)"
            )
        # torchvision's builders set the architecture options that match their weights
        # (inception_v3: transform_input=True, aux_logits=True).
        if name == RESNET50:
            net = resnet50(weights=torchvision_weights(name))
        else:
            net = inception_v3(weights=torchvision_weights(name))
        return net.eval()

    if name == RESNET50:
        net = resnet50(weights=None)
    else:
        # The same options torchvision's builder sets when it loads IMAGENET1K_V1:
        # aux_logits=True because the state_dict carries the AuxLogits head (a strict load
        # needs it; eval mode ignores it), init_weights=False because every parameter is
        # about to be overwritten (and the random init is slow), and transform_input=True
        # because those weights were trained on inputs scaled to [-1, 1]: the flag
        # converts ImageNet-normalised input to that.  It is not part of the state_dict,
        # so leaving it False would silently give worse answers with the real weights.
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    # weights_only: a weights file is data from the cluster; never unpickle code from it.
    where = source or (weights if isinstance(weights, str) else "the weights file")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{where} holds a {type(state).__name__}, not a state_dict for {name}")
    # Strict in effect, but the mismatch is reported on one line instead of torch's
    # multi-line list of every key.
    result = net.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        example = (missing or unexpected)[0]
        raise ValueError(
            f"{where} is not a {name} state_dict: {len(missing)} missing and "
            f"{len(unexpected)} unexpected keys (e.g. {example!r})"
        )
    return net.eval()
