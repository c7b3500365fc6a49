"""Grading through an OpenAI-compatible chat-completions server, from the worker's node.

One client serves every classroom set-up: Ollama (``http://HOST:11434/v1``), vLLM,
llama.cpp's own server (``python -m llama_cpp.server``), LM Studio.  The node sends
the requests itself (trio and httpx: waiting on a server needs no worker process and
no torch), ``parallel`` of them at once per server, each item's prompt from
:mod:`inference.grading` and its reply validated there.

Constrained decoding.  The reply's schema goes in ``response_format``.  OpenAI,
Ollama and vLLM take ``{"type": "json_schema", "json_schema": {"name", "schema"}}``;
llama.cpp's Python server takes ``{"type": "json_object", "schema": ...}`` and refuses
the other (llama-cpp-python 0.3 answers its validation error with HTTP 500, naming
``response_format``).  The client starts with ``json_schema`` and, if a server refuses
it (:func:`refuses_json_schema`), switches that server to ``json_object`` for good.

Failures.  A server that is busy (503, 429) is retried with exponential back-off for
up to :data:`BUSY_WINDOW` seconds.  A server that cannot be reached (connection
refused or reset, a timeout), that stays busy, or that does not have the model (404)
makes the batch raise :class:`~inference.kinds.base.ModelUnavailable`: the worker then
tells the leader it cannot serve the model, the batch's queries run elsewhere, and
:meth:`OpenAIClient.healthy` is asked with back-off until the server completes a
one-token request for the model again.
An invalid reply is asked once more (with the next seed), then becomes an error row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import trio

from config.llm import LlmSpec
from inference import grading

# Seconds to connect; a reply may take minutes on a slow machine (max_tokens on a CPU).
CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 300.0
# A probe's one-token completion (a loaded server answers in well under a second).
PROBE_TIMEOUT = 30.0
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
        """The server completes a one-token request for the model (the probe while it is
        marked down).  Not just its model list: a server that answers but lacks the
        model (Ollama's 404 before ``ollama pull``) must stay down, or the worker would
        flap between down and up while the batches it is given come back unanswered."""
        body = {
            "model": self.spec.model,
            "messages": [{"role": "user", "content": "Reply OK."}],
            "max_tokens": 1,
            "temperature": 0.0,
        }
        try:
            reply = await self._http.post("/chat/completions", json=body, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError:
            return False
        return reply.status_code == 200

    async def grade(self, queries: Sequence[str], template: str | None) -> list[dict[str, Any]]:
        """One row per query input, in order; ServerDown if the server fails us."""
        rows: list[dict[str, Any]] = [{}] * len(queries)
        limiter = trio.CapacityLimiter(self.spec.parallel)
        down: list[ServerDown] = []

        async def one(i: int, text: str) -> None:
            try:
                async with limiter:
                    rows[i] = await self._grade_one(text, template)
            except ServerDown as e:  # the first says why; the batch's other requests stop
                down.append(e)
                nursery.cancel_scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                for i, text in enumerate(queries):
                    nursery.start_soon(one, i, text)
        except ExceptionGroup as group:  # anything else: one line for the failed batch
            raise _first_leaf(group) from None
        if down:
            raise down[0]
        return rows

    async def _grade_one(self, text: str, template: str | None) -> dict[str, Any]:
        query = grading.start(text)
        if not isinstance(query, grading.Query):
            return query  # the row of a line that cannot be graded
        assert query.item is not None
        prompt = grading.messages(query.item, template)
        tries = grading.Tries(query, self.spec.name)
        for attempt in range(grading.ATTEMPTS):
            reply, usage = await self.complete(prompt, query.item.max_score, attempt)
            row = tries.offer(reply, usage)
            if row is not None:
                return row
        return tries.failed()

    def _body(self, prompt: list[dict[str, str]], max_score: int, attempt: int) -> dict[str, Any]:
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
            "temperature": grading.temperature(self.spec.temperature, attempt),
            "seed": self.spec.seed + attempt,
            "response_format": response_format,
        }

    async def complete(
        self, prompt: list[dict[str, str]], max_score: int, attempt: int = 0
    ) -> tuple[str, dict[str, Any]]:
        """The reply's text and its usage; ServerDown if the server fails us."""
        delay, deadline = BUSY_FIRST, trio.current_time() + BUSY_WINDOW
        while True:
            sent_format = self.format  # another request may change it meanwhile
            try:
                reply = await self._http.post(
                    "/chat/completions", json=self._body(prompt, max_score, attempt)
                )
            except httpx.HTTPError as e:  # refused, reset, timed out: the server is gone
                raise ServerDown(f"{self.base_url}: {type(e).__name__}: {e}") from None
            status = reply.status_code
            if status == 200:
                return _content(reply)
            if sent_format == "json_schema" and refuses_json_schema(status, reply.text):
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


def refuses_json_schema(status: int, body: str) -> bool:
    """Whether a server's answer refuses ``response_format`` type ``json_schema``: a
    bad request (400, 422), or llama-cpp-python 0.3's HTTP 500 for a request that
    fails its validation, which names ``response_format`` (a 500 for anything else is
    a server error, not a refusal)."""
    return status in (400, 422) or (status == 500 and "response_format" in body)


def _first_leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _content(reply: httpx.Response) -> tuple[str, dict[str, Any]]:
    try:
        body = reply.json()
        content = body["choices"][0]["message"].get("content") or ""
        usage = body.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return reply.text[:ERROR_EXCERPT], {}  # parse_reply refuses it, with the text
    return str(content), usage if isinstance(usage, dict) else {}
