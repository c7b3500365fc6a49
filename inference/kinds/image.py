"""Image classification: torchvision's classification models over images in the file store.

Every model of torchvision's registry is served by name (:mod:`inference.models`);
a user's own image model is this kind with a build function of theirs
(:class:`inference.kinds.custom.ImageModel`).

A query's input is the name of an image file (JPEG or PNG) in SDFS; a job is every
file matching a glob (default ``images/*``) or a random sample of COUNT of them.  A
batch runs in the worker process (:mod:`inference.worker_main`, op ``run``, which
uses :mod:`inference.runtime`; torch is imported there only): the node fetches the
model's weights (``models/MODEL.pth``, cached by version) and the images it does not
hold itself, then hands the worker process local paths.  A row is
``{"input", "top5": [[CLASS_INDEX, LABEL, PROBABILITY] x 5]}``, or
``{"input", "top5": [], "error"}`` for an image that could not be classified.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.events import Query, Row
from inference.files import FileStore
from inference.kinds.base import BatchOutput, WorkerContext, local_copies, matching_files
from inference.models import MODELS, CustomModel, canonical_or_none, weights_sdfs_name
from net.errors import NotFound

DEFAULT_PATTERN = "images/*"


def _checked(row: Any, name: str) -> Row:
    """A worker-process row, refused unless it is an image row for ``name``."""
    if not isinstance(row, dict) or row.get("input") != name:
        raise ValueError(f"the worker answered {row!r} for {name}")
    if "error" in row:
        if not isinstance(row["error"], str):
            raise ValueError(f"the worker's error for {name} is not a string")
    elif not isinstance(row.get("top5"), list):
        raise ValueError(f"the worker's row for {name} has no top5 list")
    return row


class ImageClassification:
    name = "image-classification"
    models: tuple[str, ...] = MODELS

    # A user's model (ImageModel) sets this; None serves torchvision's models.
    custom: CustomModel | None = None

    def canonical(self, model: str) -> str | None:
        return canonical_or_none(model)

    def weights_name(self, model: str) -> str:
        """The SDFS file holding ``model``'s weights (a state_dict)."""
        return weights_sdfs_name(model)

    async def queries(
        self, files: FileStore, model: str, pattern: str | None, count: int | None
    ) -> list[str]:
        return await matching_files(files, pattern, count, DEFAULT_PATTERN, "images")

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        names = [name for _, name in queries]
        # Fetching overlaps the batch before this one; running does not.
        weights = await self._weights(ctx, model)
        paths = await local_copies(ctx, names)
        async with ctx.slot:
            reply = await ctx.process.run(
                model,
                weights,
                [str(p) for p in paths],
                names,
                allow_download=ctx.allow_download,
                custom=self.custom.to_wire() if self.custom is not None else None,
            )
        rows = reply["results"]
        timings = tuple(float(r.pop("seconds", 0.0)) for r in rows)
        checked = tuple(
            (i, _checked(row, name)) for (i, name), row in zip(queries, rows, strict=True)
        )
        return BatchOutput(checked, timings)

    async def _weights(self, ctx: WorkerContext, model: str) -> Path | None:
        """The model's weights from the store, cached by version; None if it has none
        (the worker process then uses torchvision's own, if downloads are allowed)."""
        name = self.weights_name(model)
        try:
            version = await ctx.files.newest_version(name)
        except NotFound:
            return None
        path = ctx.cache / "weights" / f"{model}-v{version}.pth"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            await ctx.files.get(name, path)
        return path

    def error_row(self, input: str, error: str) -> Row:
        return {"input": input, "top5": [], "error": error}

    def output_line(self, row: Row) -> dict[str, Any]:
        out = {"input": row.get("input"), "top5": row.get("top5", [])}
        if row.get("error"):
            out["error"] = row["error"]
        return out
