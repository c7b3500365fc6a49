"""Grading with llama.cpp, inside the worker process (op ``kind``, torch-free process).

:func:`grade` is what :mod:`inference.kinds.grading` calls there for a ``llama.cpp``
model: it loads the GGUF file once (llama-cpp-python; kept warm in the process's
state, keyed by path, threads and context, so a new version of the file is a new
load) and grades the batch's items one after another.  Each item starts from an
empty context (``reset``), so its reply depends on nothing but the item, the prompt
and the seed: the same job gives the same scores however its items are batched.
Decoding is constrained by a grammar (:func:`inference.grading.gbnf`); an invalid
reply is asked once more, with the next seed, then becomes an error row.

llama_cpp is imported inside :func:`_load`, so importing this module costs nothing.
"""

from __future__ import annotations

import time
from typing import Any

from inference import grading
from inference.worker_main import error_line

# Grammars compiled, per (max_score, feedback characters): a handful per process.
_GRAMMARS_KEPT = 64


def _load(state: dict[str, Any], path: str, threads: int, context: int) -> Any:
    key = (path, threads, context)
    warm = state.get("llm")
    if warm is not None and warm[0] == key:
        return warm[1]
    from llama_cpp import Llama  # the worker process only

    old = state.pop("llm", None)
    if old is not None:
        old[1].close()  # free the old model before loading the new one
    started = time.perf_counter()
    llm = Llama(
        model_path=path,
        n_threads=threads,
        n_threads_batch=threads,
        n_ctx=context,
        verbose=False,
    )
    state["llm"] = (key, llm)
    state["load_seconds"] = time.perf_counter() - started
    return llm


def _grammar(state: dict[str, Any], max_score: int, max_chars: int) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar

    grammars: dict[tuple[int, int], Any] = state.setdefault("grammars", {})
    key = (max_score, max_chars)
    if key not in grammars:
        if len(grammars) >= _GRAMMARS_KEPT:
            grammars.clear()
        grammars[key] = LlamaGrammar.from_string(grading.gbnf(*key), verbose=False)
    return grammars[key]


def grade(state: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Grade ``args["queries"]`` (query inputs) with the GGUF at ``args["path"]``.

    args: path, threads, context, model (the name rows carry), max_tokens,
    temperature, seed, template (None: the default prompt), queries.
    Returns ``{"rows": [ROW...], "load_seconds": S}``, one row per query, in order.
    """
    llm = _load(state, str(args["path"]), int(args["threads"]), int(args["context"]))
    load_seconds = state.pop("load_seconds", 0.0)
    rows = [_grade_one(state, llm, args, text) for text in args["queries"]]
    return {"rows": rows, "load_seconds": load_seconds}


def _grade_one(state: dict[str, Any], llm: Any, args: dict[str, Any], text: str) -> dict[str, Any]:
    query = grading.start(text)
    if not isinstance(query, grading.Query):
        return query  # the row of a line that cannot be graded
    assert query.item is not None
    max_tokens = int(args["max_tokens"])
    grammar = _grammar(state, query.item.max_score, grading.feedback_chars(max_tokens))
    prompt = grading.messages(query.item, args.get("template"))
    tries = grading.Tries(query, args["model"])
    for attempt in range(grading.ATTEMPTS):
        llm.reset()  # every item from an empty context: see the module docstring
        try:
            out = llm.create_chat_completion(
                prompt,
                grammar=grammar,
                max_tokens=max_tokens,
                temperature=grading.temperature(float(args["temperature"]), attempt),
                seed=int(args["seed"]) + attempt,
            )
        except Exception as e:  # llama.cpp's failures (context overflow, ...) are per item
            return tries.failed(error_line(e))
        reply = out["choices"][0]["message"].get("content") or ""
        row = tries.offer(reply, out.get("usage") or {})
        if row is not None:
            return row
    return tries.failed()
