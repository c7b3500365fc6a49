"""Grading with llama.cpp (the real SmolLM2 model) in the torch-free worker process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from inference import grading, llama_worker
from inference.worker_client import RequestError, WorkerProcess
from tests.helpers.llm import smollm2_gguf

MAX_TOKENS = 40


def args(queries: list[str], **kw: Any) -> dict[str, Any]:
    return {
        "path": str(smollm2_gguf()),
        "threads": 1,
        "context": 1024,
        "model": "smollm2",
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
        "seed": 42,
        "template": None,
        "queries": queries,
        **kw,
    }


def items(n: int, **kw: Any) -> list[str]:
    lines = [
        json.dumps({"id": f"q{i}", "question": f"What is {i} + {i}?", "answer": str(i), **kw})
        for i in range(n)
    ]
    return grading.parse_items("\n".join(lines).encode())


@pytest.fixture
def state() -> Iterator[dict[str, Any]]:
    """The worker process's state for the kind, its model closed after the test (a
    model left to the interpreter's exit warns about llama.cpp's unclosed /dev/null)."""
    held: dict[str, Any] = {}
    yield held
    if "llm" in held:
        held["llm"][1].close()


def test_rows_are_valid_and_scores_do_not_depend_on_batching(state: dict[str, Any]) -> None:
    queries = items(3, max_score=4)
    malformed = grading.parse_items(b'{"id": "m", "question": "q"}')
    together = llama_worker.grade(state, args([*queries, *malformed]))["rows"]
    assert [r["input"] for r in together] == ["q0", "q1", "q2", "m"]
    for row in together[:3]:
        assert set(row) == {
            "input",
            "score",
            "max_score",
            "feedback",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "seconds",
        }
        assert 0 <= row["score"] <= 4 and row["max_score"] == 4  # the grammar's range
        assert isinstance(row["feedback"], str)
        assert len(row["feedback"]) <= grading.feedback_chars(MAX_TOKENS)
        assert row["prompt_tokens"] > 20 and 0 < row["completion_tokens"] <= 2 * MAX_TOKENS
    assert together[3] == {"input": "m", "error": "no 'answer'", "seconds": 0.0}
    # One at a time and in another order, with the model already warm: the same grades.
    apart = [llama_worker.grade(state, args([q]))["rows"][0] for q in reversed(queries)]
    key = ("input", "score", "feedback", "completion_tokens")
    assert [tuple(r[k] for k in key) for r in reversed(apart)] == [
        tuple(r[k] for k in key) for r in together[:3]
    ]


def test_the_model_is_loaded_once_per_file_and_settings(state: dict[str, Any]) -> None:
    first = llama_worker.grade(state, args(items(1)))
    warm = state["llm"][1]
    second = llama_worker.grade(state, args(items(1)))
    assert first["load_seconds"] > 0 and second["load_seconds"] == 0
    assert state["llm"][1] is warm
    llama_worker.grade(state, args(items(1), context=512))
    assert state["llm"][1] is not warm


async def test_the_torchless_worker_process_grades_without_importing_torch(
    tmp_path: Path,
) -> None:
    async with WorkerProcess(threads=1, log_path=tmp_path / "w.log", torch=False) as worker:
        with trio.fail_after(60):
            hello = await worker.hello()
            assert hello["torch"] is None and hello["threads"] == 1
            reply = await worker.request(
                {"op": "kind", "entry": "inference.llama_worker:grade", "args": args(items(1))}
            )
            assert reply["rows"][0]["input"] == "q0" and "score" in reply["rows"][0]
            probe = {"prefixes": ["torch", "torchvision", "llama_cpp"]}
            loaded = await worker.request(
                {"op": "kind", "entry": "tests.helpers.kindprobe:modules", "args": probe}
            )
            assert "llama_cpp" in loaded["loaded"]
            assert not [m for m in loaded["loaded"] if m.startswith("torch")]
            with pytest.raises(RequestError, match=r"op 'run' needs torch"):
                await worker.request({"op": "run", "model": "resnet50", "inputs": []})
            assert worker.starts == 1


def test_a_prompt_template_replaces_the_default_prompt(state: dict[str, Any]) -> None:
    (default,) = llama_worker.grade(state, args(items(1)))["rows"]
    template = "Mark $answer (for: $question) from 0 to $max_score."
    (templated,) = llama_worker.grade(state, args(items(1), template=template))["rows"]
    assert "score" in templated and templated["prompt_tokens"] < default["prompt_tokens"]
