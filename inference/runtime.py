"""Batched inference with torch: runs inside the worker process, never in the node.

A :class:`ModelRunner` keeps every model it has loaded warm, keyed by model name: a
model is built and its weights read once, and again only when the weights file's
content changes.  Re-fetching the same SDFS file (new mtime, same bytes) costs one
sha256 of the file, not a reload; an untouched file costs one ``stat``.

A batch is processed in three steps, each timed: decode (PIL) and preprocess every
image on the CPU; one forward pass per chunk of at most ``max_batch`` images on the
device; softmax and top-5.  An image that cannot be decoded becomes an error row;
the rest of the batch goes on.  Anything else that fails (a missing weights file, the
device running out of memory) raises, and the worker turns it into an error reply.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from inference.models import (
    CustomModel,
    Preprocess,
    build_custom,
    build_model,
    canonical_model,
    canonical_or_none,
    labels,
    preprocess_spec,
)
from inference.worker_main import error_line as one_line

TOP_K = 5
# An upper bound on one forward pass.  The scheduler picks the batch size (C3); this
# only keeps a very large request from holding every decoded image in memory at once
# (64 x 3 x 299 x 299 float32 is 69 MB).
DEFAULT_MAX_BATCH = 64


def pick_device(device: str | None) -> torch.device:
    """``cuda:N`` when asked for (or when ``None``/``auto`` and a GPU exists), else ``cpu``."""
    if device is None or device == "auto":
        return (
            torch.device("cuda", torch.cuda.current_device())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    try:
        dev = torch.device(device)
    except RuntimeError:  # torch lists every device type it knows, on one long line
        raise ValueError(f"unsupported device {device!r}: use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was requested but torch sees no CUDA GPU")
        if ":" not in device:  # (torch's stubs type .index as int, though it may be None)
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise ValueError(f"unsupported device {device!r}: use cpu, cuda, cuda:N or auto")
    return dev


def preprocess(spec: Preprocess, image: Image.Image) -> torch.Tensor:
    """torchvision's ``ImageClassification`` preset, step by step, for one RGB image."""
    resized = TF.resize(
        image, [spec.resize], interpolation=InterpolationMode(spec.interpolation), antialias=True
    )
    cropped = TF.center_crop(resized, [spec.crop])
    x = TF.convert_image_dtype(TF.pil_to_tensor(cropped), torch.float)
    normalized: torch.Tensor = TF.normalize(x, mean=list(spec.mean), std=list(spec.std))
    return normalized


def decode(path: str) -> Image.Image:
    """The image at ``path`` as RGB, fully read (PIL opens lazily; errors surface here)."""
    with Image.open(path) as img:
        # convert() loads the pixels, so a truncated or corrupt file fails inside the with.
        return img.convert("RGB")


@dataclass
class _Warm:
    net: torch.nn.Module
    weights_path: str | None
    stamp: tuple[int, int, int, int] | None  # (st_dev, st_ino, st_size, st_mtime_ns)
    sha256: str | None  # of the weights file's bytes; None for torchvision's own weights
    custom: CustomModel | None = None  # a user's model: how it was built


@dataclass(frozen=True)
class BatchResult:
    """One ``run``: a row per input, in input order, and the batch's timings (seconds).

    Rows are ``{"input", "top5": [[index, label, probability], ...], "seconds"}`` or, for
    an image that could not be decoded, ``{"input", "error", "seconds"}``.  ``seconds`` is
    the query's own decode time plus its share of its chunk's forward pass.
    ``timing`` has ``load`` (0 when the model was warm), ``decode``, ``forward``,
    ``total`` (wall clock) and ``cpu`` (process CPU time, all threads).
    """

    rows: list[dict[str, Any]]
    timing: dict[str, float]


class ModelRunner:
    """Loads models once and runs batches on one device (cuda if present, else cpu)."""

    def __init__(
        self,
        device: str | None = None,
        threads: int | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be at least 1, not {threads}")
            # Several workers share a host (one per node); each gets its slice of the
            # cores so that they do not oversubscribe them.
            torch.set_num_threads(threads)
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        self.device = pick_device(device)
        self.max_batch = max_batch
        self._models: dict[str, _Warm] = {}
        self._labels: dict[str, list[str]] = {}  # per torchvision model
        if self.device.type == "cuda":
            # Inputs always have the same shape per model, so cuDNN's autotuning pays off
            # after the first batch.
            torch.backends.cudnn.benchmark = True

    def describe(self) -> dict[str, Any]:
        """What the worker's ``hello`` reports."""
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
        return {
            "device": str(self.device),
            "gpu": gpu,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "models": sorted(self._models),
        }

    def warm_model(self, model: str) -> torch.nn.Module | None:
        """The loaded module for ``model``, if it is warm (for inspection and tests)."""
        warm = self._models.get(canonical_or_none(model) or model)
        return warm.net if warm is not None else None

    def load(
        self,
        model: str,
        weights_path: str | None,
        allow_download: bool = False,
        custom: CustomModel | None = None,
    ) -> float:
        """Make ``model`` warm with these weights; the seconds spent (0.0 if it already was).

        ``weights_path`` is a local file (the caller fetched it from SDFS).  ``None`` means
        torchvision's ImageNet weights, which :func:`build_model` only fetches when
        ``allow_download`` is true.  ``custom`` describes a user's model (its name is
        ``model``); otherwise ``model`` is a torchvision model.
        """
        name = custom.name if custom is not None else canonical_model(model)
        warm = self._models.get(name)
        if warm is not None and warm.custom != custom:
            warm = None  # the model's definition changed: build it again
        start = time.perf_counter()
        if weights_path is None:
            if warm is not None and warm.weights_path is None:
                return 0.0
            if custom is not None:
                net = build_custom(custom, None)
            else:
                net = build_model(name, None, allow_download)
            self._install(name, _Warm(net, None, None, None, custom))
            return time.perf_counter() - start

        st = os.stat(weights_path)
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if warm is not None and warm.weights_path == weights_path and warm.stamp == stamp:
            return 0.0
        # Read once, hash and load the same bytes: a file replaced between hashing and
        # loading cannot leave a model labelled with the wrong digest.
        with open(weights_path, "rb") as f:
            data = f.read()
        digest = hashlib.sha256(data).hexdigest()
        if warm is not None and warm.sha256 == digest:
            warm.weights_path, warm.stamp = weights_path, stamp
            return 0.0
        if custom is not None:
            net = build_custom(custom, io.BytesIO(data), source=weights_path)
        else:
            net = build_model(name, io.BytesIO(data), allow_download, source=weights_path)
        del data
        self._install(name, _Warm(net, weights_path, stamp, digest, custom))
        return time.perf_counter() - start

    def _install(self, name: str, warm: _Warm) -> None:
        old = self._models.pop(name, None)
        del old  # drop the previous copy before the new one moves to the device
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        warm.net.to(self.device)
        self._models[name] = warm

    def run(
        self,
        model: str,
        weights_path: str | None,
        inputs: list[str],
        names: list[str] | None = None,
        allow_download: bool = False,
        custom: CustomModel | None = None,
    ) -> BatchResult:
        """Top-5 classes for every image in ``inputs`` (local paths).

        ``names`` (default: ``inputs``) are what the rows call the images, normally
        their SDFS names.  ``custom``: ``model`` is this user's model.
        """
        if names is None:
            names = list(inputs)
        if len(names) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(names)} names")
        begin, begin_cpu = time.perf_counter(), time.process_time()
        load_s = self.load(model, weights_path, allow_download, custom)
        if custom is not None:
            name, spec = custom.name, custom.preprocess
            classes = list(custom.labels) if custom.labels is not None else self._labels_of(None)
        else:
            name = canonical_model(model)
            spec, classes = preprocess_spec(name), self._labels_of(name)
        net = self._models[name].net

        rows: list[dict[str, Any]] = []
        decode_total = forward_total = 0.0
        for lo in range(0, len(inputs), self.max_batch):
            chunk_rows: list[dict[str, Any]] = []
            tensors: list[torch.Tensor] = []
            ok_rows: list[dict[str, Any]] = []
            for path, label in zip(
                inputs[lo : lo + self.max_batch], names[lo : lo + self.max_batch], strict=True
            ):
                t0 = time.perf_counter()
                row: dict[str, Any] = {"input": label}
                try:
                    tensors.append(preprocess(spec, decode(path)))
                    ok_rows.append(row)
                except Exception as exc:  # any decoder failure is the image's problem
                    row["error"] = f"cannot decode image: {one_line(exc)}"
                row["seconds"] = time.perf_counter() - t0
                decode_total += row["seconds"]
                chunk_rows.append(row)
            if tensors:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    batch = torch.stack(tensors).to(self.device, non_blocking=True)
                    probs = torch.softmax(net(batch), dim=1)
                    top = torch.topk(probs, min(TOP_K, probs.shape[1]), dim=1)
                    # .cpu() waits for the GPU, so the forward time below is complete.
                    values: list[list[float]] = top.values.cpu().tolist()
                    indices: list[list[int]] = top.indices.cpu().tolist()
                forward_s = time.perf_counter() - t0
                forward_total += forward_s
                share = forward_s / len(tensors)
                for row, idx, val in zip(ok_rows, indices, values, strict=True):
                    row["top5"] = [
                        [i, classes[i] if i < len(classes) else str(i), p]
                        for i, p in zip(idx, val, strict=True)
                    ]
                    row["seconds"] += share
            rows.extend(chunk_rows)
        timing = {
            "load": load_s,
            "decode": decode_total,
            "forward": forward_total,
            "total": time.perf_counter() - begin,
            # CPU seconds of all this process's threads: against ``total`` it shows how
            # much of the host the batch really had (other workers compete for cores).
            "cpu": time.process_time() - begin_cpu,
        }
        return BatchResult(rows, timing)

    def _labels_of(self, model: str | None) -> list[str]:
        """A torchvision model's class names (None: ImageNet's, for user models)."""
        key = model or "resnet50"
        if key not in self._labels:
            self._labels[key] = labels(key)
        return self._labels[key]
