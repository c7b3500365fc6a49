"""LLM grading: the models of the cluster file's ``[[llm]]`` tables.

A job is ``C4 submit-job LLMNAME SDFSFILE``: one query per item of a JSON Lines file
in SDFS (:func:`inference.grading.parse_items`; a missing or duplicate id refuses the
job, a malformed line becomes an error row).  A batch runs on the worker's node by
the model's backend:

* ``llama.cpp``: the GGUF file named by ``model`` is fetched from SDFS (cached by
  version) and graded in the node's torch-free worker process
  (:mod:`inference.llama_worker`, which keeps it loaded);
* ``openai``: the node itself sends the items to the server at ``url``
  (:mod:`inference.openai_client`, ``{host}`` being this node's host); a server that
  is down makes the batch raise :class:`~inference.kinds.base.ModelUnavailable`.

A template file in SDFS (``prompt``) replaces the default prompt; it is checked at
submission and read by each worker (cached by version).  A row is
``{"input": ID, "score", "max_score", "feedback", "model", "prompt_tokens",
"completion_tokens", "seconds"}`` or ``{"input": ID, "error"}``; the scheduler keeps the
query input (the item's JSON) as a row's input, and :meth:`Grading.output_line` writes
the item's id instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from config.llm import LlmSpec
from inference import grading
from inference.events import Query, Row
from inference.files import FileStore
from inference.kinds.base import (
    BatchOutput,
    ModelUnavailable,
    WorkerContext,
    run_in_worker_process,
)
from net.errors import Invalid, NotFound

GRADE_ENTRY = "inference.llama_worker:grade"
# A prompt template, in bytes.
MAX_TEMPLATE_BYTES = 64 * 1024


class Grading:
    """The grading models of one cluster file (see the module docstring)."""

    name = "llm-grading"

    def __init__(self, specs: Sequence[LlmSpec]) -> None:
        self.specs = {s.name.lower(): s for s in specs}
        self.models: tuple[str, ...] = tuple(s.name for s in specs)

    def canonical(self, model: str) -> str | None:
        spec = self.specs.get(model.lower())
        return spec.name if spec is not None else None

    def spec(self, model: str) -> LlmSpec:
        return self.specs[model.lower()]

    # --- submission (on the leader) ----------------------------------------------------

    async def queries(
        self, files: FileStore, model: str, pattern: str | None, count: int | None
    ) -> list[str]:
        spec = self.spec(model)
        if count is not None or pattern is None or any(c in pattern for c in "*?["):
            raise Invalid(
                f"{model} grades a file: C4 submit-job {model} SDFSFILE "
                "(JSON Lines, one {id, question, answer} per line)"
            )
        if spec.backend == "llama.cpp":
            await _exists(files, spec.model, f"{model}'s GGUF file")
        if spec.prompt:
            try:
                grading.check_template(await read_text(files, spec.prompt, MAX_TEMPLATE_BYTES))
            except ValueError as e:
                raise Invalid(f"{spec.prompt}: {e}") from None
        data = await read_bytes(files, pattern, grading.MAX_FILE_BYTES)
        try:
            inputs = grading.parse_items(data, pattern)
        except grading.ItemsRefused as e:
            raise Invalid(str(e)) from None
        if not inputs:
            raise Invalid(f"{pattern} holds no items (JSON Lines: one item per line)")
        return inputs

    # --- batches (on a worker) ---------------------------------------------------------

    async def run_batch(
        self, ctx: WorkerContext, model: str, queries: Sequence[Query]
    ) -> BatchOutput:
        spec = self.spec(model)
        texts = [text for _, text in queries]
        template = await self._template(ctx, spec)
        if spec.backend == "llama.cpp":
            rows = await self._llama(ctx, spec, texts, template)
        else:
            rows = await self._openai(ctx, spec, texts, template)
        if len(rows) != len(queries):
            raise ValueError(f"{len(rows)} rows for a batch of {len(queries)}")
        timings = tuple(float(r.get("seconds", 0.0)) for r in rows)
        return BatchOutput(
            tuple((i, row) for (i, _), row in zip(queries, rows, strict=True)), timings
        )

    async def _llama(
        self, ctx: WorkerContext, spec: LlmSpec, texts: list[str], template: str | None
    ) -> list[dict[str, Any]]:
        if not llama_cpp_installed():
            # This machine's problem, not the items': the worker announces it cannot
            # serve the model, so its queries run elsewhere at no cost.
            raise ModelUnavailable(
                spec.name,
                "llama-cpp-python is not installed on this worker (make venv installs it)",
                _llama_cpp_probe,
            )
        path = await cached_copy(ctx, spec.model, f"{spec.name}.gguf")
        args = {
            "path": str(path),
            "threads": ctx.threads,
            "context": spec.context,
            "model": spec.name,
            "max_tokens": spec.max_tokens,
            "temperature": spec.temperature,
            "seed": spec.seed,
            "template": template,
            "queries": texts,
        }
        reply = await run_in_worker_process(
            ctx, GRADE_ENTRY, args, f"grading {len(texts)} items", torch=False
        )
        rows = reply.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"the worker answered {str(reply)[:80]} for a grading batch")
        return rows

    async def _openai(
        self, ctx: WorkerContext, spec: LlmSpec, texts: list[str], template: str | None
    ) -> list[dict[str, Any]]:
        from inference.openai_client import OpenAIClient, ServerDown  # httpx: only if used

        url = spec.url_for(ctx.host)
        key = f"openai:{spec.name}:{url}"
        client = ctx.state.get(key)
        if client is None:
            client = ctx.state[key] = OpenAIClient(spec, url)
        try:
            async with ctx.slot:
                rows: list[dict[str, Any]] = await client.grade(texts, template)
        except ServerDown as e:
            raise ModelUnavailable(spec.name, str(e), client.healthy) from None
        return rows

    async def _template(self, ctx: WorkerContext, spec: LlmSpec) -> str | None:
        if not spec.prompt:
            return None
        path = await cached_copy(ctx, spec.prompt, f"{spec.name}.prompt")
        return await trio.Path(path).read_text(encoding="utf-8")

    # --- rows ----------------------------------------------------------------------

    def error_row(self, input: str, error: str) -> Row:
        return {"input": input, "error": error}

    def output_line(self, row: Row) -> dict[str, Any]:
        return {**row, "input": grading.label_of(str(row.get("input", "")))}


def llama_cpp_installed() -> bool:
    """llama-cpp-python can be imported here (the worker process shares this venv)."""
    importlib.invalidate_caches()
    return importlib.util.find_spec("llama_cpp") is not None


async def _llama_cpp_probe() -> bool:
    return llama_cpp_installed()


# --- files ---------------------------------------------------------------------------


async def _exists(files: FileStore, name: str, what: str) -> int:
    try:
        return await files.newest_version(name)
    except NotFound:
        raise Invalid(f"{what} {name} is not in SDFS: put it first") from None


async def read_bytes(files: FileStore, name: str, limit: int) -> bytes:
    """The newest version of SDFS file ``name``; Invalid if missing or over ``limit`` bytes."""
    with tempfile.TemporaryDirectory(prefix="idunno-read-") as tmp:
        local = Path(tmp) / "file"
        try:
            await files.get(name, local)
        except NotFound:
            raise Invalid(f"no SDFS file named {name}") from None
        size = local.stat().st_size
        if size > limit:
            raise Invalid(f"{name} is {size} bytes (limit {limit})")
        return await trio.Path(local).read_bytes()


async def read_text(files: FileStore, name: str, limit: int) -> str:
    data = await read_bytes(files, name, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"{name} is not UTF-8 text") from None


async def cached_copy(ctx: WorkerContext, name: str, label: str) -> Path:
    """A local copy of the newest version of ``name``, fetched once per version."""
    version = await ctx.files.newest_version(name)
    path = ctx.cache / "models" / f"{label}-v{version}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two batches may fetch at once: each into its own file, the last rename wins.
        partial = path.with_name(f"{path.name}.part-{secrets.token_hex(4)}")
        await ctx.files.get(name, partial)
        partial.replace(path)  # never a half-written model under the final name
    return path
