"""Grading through an OpenAI-compatible chat-completions server, from the worker's node.

One client serves every classroom set-up: Ollama (``http://HOST:11434/v1``), vLLM,
llama.cpp's own server (``python -m llama_cpp.server``), LM Studio.  The node sends
the requests itself (trio and httpx: waiting on a server needs no worker process and
no torch), ``parallel`` of them at once per server, each item's prompt from
:mod:`inference.grading` and its reply validated there.

Constrained decoding.  The reply's schema goes in ``response_format``.  OpenAI,
Ollama and vLLM take ``{"type": "json_schema", "json_schema": {"name", "schema"}}``;
llama.cpp's Python server takes ``{"type": "json_object", "schema": ...}`` and refuses
the other (with 500 and a validation error naming ``response_format``, in 0.3.x).  The
client starts with ``json_schema`` and, if a server refuses it as a bad request (400 or
422, or that 500), switches that server to ``json_object`` for good.

Failures.  A server that is busy (503, 429) is retried with exponential back-off for
up to :data:`BUSY_WINDOW` seconds.  A server that cannot be reached (connection
refused or reset, a timeout), that stays busy, or that does not have the model (404)
makes the batch raise :class:`~inference.kinds.base.ModelUnavailable`: the worker then
tells the leader it cannot serve the model, the batch's queries run elsewhere, and
:meth:`OpenAIClient.healthy` is asked with back-off until the server answers again.
An invalid reply is asked once more (with the next seed), then becomes an error row.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx
import trio

from config.llm import LlmSpec
from inference import grading

# Seconds to connect; a reply may take minutes on a slow machine (max_tokens on a CPU).
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 300.0
# A busy server (503 or 429) is retried for this long, backing off from BUSY_FIRST.
BUSY_WINDOW = 30.0
BUSY_FIRST = 0.25
# A reply body read for an error message, in characters.
ERROR_EXCERPT = 200


class ServerDown(Exception):
    """The server cannot serve the model now (see the module docstring)."""


class OpenAIClient:
    """Requests to one server's ``/chat/completions`` for one model."""

    def __init__(self, spec: LlmSpec, base_url: str) -> None:
        self.spec = spec
        self.base_url = base_url
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(REPLY_TIMEOUT, connect=CONNECT_TIMEOUT),
            limits=httpx.Limits(
                max_connections=spec.parallel, max_keepalive_connections=spec.parallel
            ),
        )
        self.format = "json_schema"  # or "json_object" once the server refused json_schema

    async def aclose(self) -> None:
        await self._http.aclose()

    async def healthy(self) -> bool:
        """The server answers its model list (the probe while it is marked down)."""
        try:
            reply = await self._http.get("/models", timeout=CONNECT_TIMEOUT)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    async def grade(self, queries: Sequence[str], template: str | None) -> list[dict[str, Any]]:
        """One row per query input, in order; ServerDown if the server fails us."""
        rows: list[dict[str, Any]] = [{}] * len(queries)
        limiter = trio.CapacityLimiter(self.spec.parallel)

        async def one(i: int, text: str) -> None:
            async with limiter:
                rows[i] = await self._grade_one(text, template)

        try:
            async with trio.open_nursery() as nursery:
                for i, text in enumerate(queries):
                    nursery.start_soon(one, i, text)
        except BaseExceptionGroup as group:
            # The nursery wraps what its requests raised: a server that failed one of
            # them is down for the whole batch (the kind catches ServerDown, not groups).
            down, _ = group.split(ServerDown)
            if down is None:
                raise
            raise _first(down) from None
        return rows

    async def _grade_one(self, text: str, template: str | None) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            query = grading.decode_query(text)
        except ValueError as e:
            return grading.error_row(grading.label_of(text), str(e), seconds=0.0)
        if query.item is None:
            return grading.error_row(query.label, query.error, seconds=0.0)
        item = query.item
        prompt = grading.messages(item, template)
        used = [0, 0]
        why = ""
        for attempt in range(grading.ATTEMPTS):
            reply, usage = await self.complete(prompt, item.max_score, self.spec.seed + attempt)
            used[0] += int(usage.get("prompt_tokens") or 0)
            used[1] += int(usage.get("completion_tokens") or 0)
            try:
                score, feedback = grading.parse_reply(reply, item.max_score)
            except ValueError as e:
                why = str(e)
                continue
            return grading.row(
                query,
                self.spec.name,
                score,
                feedback,
                used[0],
                used[1],
                time.perf_counter() - started,
            )
        return grading.error_row(
            query.label,
            f"no valid grade after {grading.ATTEMPTS} tries: {why}",
            model=self.spec.name,
            prompt_tokens=used[0],
            completion_tokens=used[1],
            seconds=time.perf_counter() - started,
        )

    def _body(self, prompt: list[dict[str, str]], max_score: int, seed: int) -> dict[str, Any]:
        schema = grading.json_schema(max_score, grading.feedback_chars(self.spec.max_tokens))
        if self.format == "json_schema":
            response_format: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"name": "grade", "schema": schema, "strict": True},
            }
        else:
            response_format = {"type": "json_object", "schema": schema}
        return {
            "model": self.spec.model,
            "messages": prompt,
            "max_tokens": self.spec.max_tokens,
            "temperature": self.spec.temperature,
            "seed": seed,
            "response_format": response_format,
        }

    async def complete(
        self, prompt: list[dict[str, str]], max_score: int, seed: int
    ) -> tuple[str, dict[str, Any]]:
        """The reply's text and its usage; ServerDown if the server fails us."""
        delay, deadline = BUSY_FIRST, trio.current_time() + BUSY_WINDOW
        while True:
            sent = self.format  # requests in flight at once may all be refused
            try:
                reply = await self._http.post(
                    "/chat/completions", json=self._body(prompt, max_score, seed)
                )
            except httpx.HTTPError as e:  # refused, reset, timed out: the server is gone
                raise ServerDown(f"{self.base_url}: {type(e).__name__}: {e}") from None
            status = reply.status_code
            if status == 200:
                return _content(reply)
            if sent == "json_schema" and _refuses_json_schema(reply):
                self.format = "json_object"  # llama.cpp's server: see the module docstring
                continue
            if status in (429, 503):
                if trio.current_time() + delay > deadline:
                    raise ServerDown(f"{self.base_url}: busy (HTTP {status}) for {BUSY_WINDOW:g} s")
                await trio.sleep(delay)
                delay = min(2 * delay, 8.0)
                continue
            excerpt = " ".join(reply.text[:ERROR_EXCERPT].split())
            if status == 404:
                raise ServerDown(f"{self.base_url}: model {self.spec.model!r} not found: {excerpt}")
            raise ServerDown(f"{self.base_url}: HTTP {status}: {excerpt}")


def _first(group: BaseExceptionGroup[ServerDown]) -> ServerDown:
    """The first ServerDown in a (possibly nested) exception group."""
    first = group.exceptions[0]
    return first if isinstance(first, ServerDown) else _first(first)


def _refuses_json_schema(reply: httpx.Response) -> bool:
    """The server refused ``response_format`` ``json_schema`` as a bad request: 400 or
    422, or llama.cpp's Python server's 500 whose body names ``response_format`` (it
    answers a failed request validation with 500)."""
    if reply.status_code in (400, 422):
        return True
    return reply.status_code == 500 and "response_format" in reply.text[:2000]


def _content(reply: httpx.Response) -> tuple[str, dict[str, Any]]:
    try:
        body = reply.json()
        content = body["choices"][0]["message"].get("content") or ""
        usage = body.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return reply.text[:ERROR_EXCERPT], {}  # parse_reply refuses it, with the text
    return str(content), usage if isinstance(usage, dict) else {}
