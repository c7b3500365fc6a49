"""The reference for the inference tests and benchmark: plain torchvision, no IDunno.

Written apart from ``inference.runtime`` and ``inference.models``, as a user without
the cluster would, so that comparing against it checks our code rather than itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plain_torchvision(model: str, weights: Path) -> tuple[Any, Any]:
    """``(net, meta)``: the state_dict at ``weights`` in torchvision's ``model``, in eval
    mode on the CPU, and its ImageNet weights' metadata (``meta.transforms()``, the
    labels in ``meta.meta["categories"]``)."""
    import torch
    from torchvision.models import (
        Inception_V3_Weights,
        ResNet50_Weights,
        get_model,
        get_model_weights,
        inception_v3,
        resnet50,
    )

    if model == "resnet50":
        net, meta = resnet50(weights=None), ResNet50_Weights.IMAGENET1K_V1
    elif model == "inception_v3":
        # As torchvision builds it for its ImageNet weights: those were trained on
        # inputs in [-1, 1], which transform_input derives from normalised input.
        net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
        meta = Inception_V3_Weights.IMAGENET1K_V1
    else:
        # Another classification model with its default options, which fit its DEFAULT
        # weights for most (not googlenet's transform_input, nor vit_h_14's 518 input),
        # and those weights' transforms and labels.
        net, meta = get_model(model, weights=None), get_model_weights(model).DEFAULT
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    net.eval()
    return net, meta
