"""A user's own image model, as a job kind: a build function and its preprocessing.

The common case of plugging in a model needs no job-kind code: declare it in a
torch-free module of your package and name it in the ``idunno.job_kinds`` entry-point
group (see README, "Your own model")::

    # mypkg/idunno.py: imported by the node, so no torch at the top level
    from inference.kinds.custom import ImageModel

    KIND = ImageModel("leafnet", build="mypkg.net:build", resize=256, crop=224,
                      labels=("healthy", "rust", "scab"))

    # pyproject.toml
    [project.entry-points."idunno.job_kinds"]
    leafnet = "mypkg.idunno:KIND"

``build`` names a function ``build() -> torch.nn.Module`` that the worker process
imports and calls (torch lives there); the node loads the state_dict in SDFS
``models/NAME.pth`` into what it returns (strict, weights_only), in eval mode.  The
rest is image classification's: inputs are SDFS images (a glob or a COUNT), decoded
and preprocessed as given (resize the shorter side, centre crop, mean/std), batched,
softmax, top 5; rows and output lines are the same, with ``labels`` (default:
ImageNet's 1000 classes) naming the classes.  C1-C5 and the dashboard see it as any
model.  The package must be installed (or on PYTHONPATH) on every node's machine, as
the worker process imports ``build``'s module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from inference.kinds.image import ImageClassification
from inference.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CustomModel,
    Preprocess,
    canonical_or_none,
)

# What a model name may look like: it becomes an SDFS name (models/NAME.pth) and a
# word on the console's command line.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENTRY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class ImageModel(ImageClassification):
    """The job kind of one user image model (see the module docstring)."""

    def __init__(
        self,
        name: str,
        build: str,
        *,
        resize: int = 256,
        crop: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
        labels: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"model name {name!r}: use letters, digits and ._- (at most 64)")
        if canonical_or_none(name) is not None or name.lower() == "noop":
            raise ValueError(f"model name {name!r} is taken by a built-in model")
        if not isinstance(build, str) or not _ENTRY.fullmatch(build):
            raise ValueError(f"build {build!r} must be 'module:function'")
        if labels is not None and (
            isinstance(labels, str) or not all(isinstance(x, str) for x in labels)
        ):
            raise ValueError("labels must be a sequence of class names")
        # Preprocess.from_wire checks the numbers (sizes >= 1, three means and stds).
        preprocess = Preprocess.from_wire(
            {
                "resize": resize,
                "crop": crop,
                "mean": list(mean),
                "std": list(std),
                "interpolation": interpolation,
            }
        )
        self.name = name
        self.models = (name,)
        self.custom = CustomModel(
            name, build, preprocess, tuple(labels) if labels is not None else None
        )

    def canonical(self, model: str) -> str | None:
        return self.name if model.strip().lower() == self.name.lower() else None

    def weights_name(self, model: str) -> str:
        return f"models/{self.name}.pth"
