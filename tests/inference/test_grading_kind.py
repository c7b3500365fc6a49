"""The grading job kind: submissions it refuses, the registry, the output lines."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from config.llm import LlmSpec
from inference import kinds
from inference.kinds.base import ModelUnavailable, WorkerContext
from inference.kinds.grading import Grading
from inference.worker_client import WorkerProcess
from net.errors import Invalid
from tests.helpers.dictfiles import DictFiles

LOCAL = LlmSpec("SmolLM2", "llama.cpp", "models/smollm2.gguf")
REMOTE = LlmSpec("llama3", "openai", "llama3.2:1b", prompt="prompts/grade.txt")
ITEMS = "\n".join(
    json.dumps({"id": f"q{i}", "question": "Q?", "answer": "A."}) for i in range(3)
).encode()


@pytest.fixture
def files() -> DictFiles:
    f = DictFiles()
    f.data["models/smollm2.gguf"] = b"GGUF"
    f.data["grading/items.jsonl"] = ITEMS
    f.data["prompts/grade.txt"] = b"Grade $answer to $question, 0 to $max_score."
    return f


@pytest.fixture
def registered() -> Iterator[None]:
    kinds.use_llms([LOCAL, REMOTE])
    yield
    kinds.use_llms([])


def test_grading_models_resolve_by_name_in_any_case(registered: None) -> None:
    kind, name = kinds.resolve("smollm2")
    assert isinstance(kind, Grading) and name == "SmolLM2"
    assert kinds.resolve("LLAMA3")[1] == "llama3"
    assert kinds.resolve("resnet50")[1] == "resnet50"  # image models are still there
    with pytest.raises(
        Invalid, match=r"valid models are .* image-classification models, SmolLM2 and llama3 "
    ):
        kinds.resolve("gpt-5")


def test_without_llm_tables_no_grading_model_exists() -> None:
    kinds.use_llms([])
    with pytest.raises(Invalid, match="unknown model 'smollm2'"):
        kinds.resolve("smollm2")


async def test_a_file_of_items_is_one_query_per_item(files: DictFiles) -> None:
    kind = Grading([LOCAL, REMOTE])
    inputs = await kind.queries(files, "SmolLM2", "grading/items.jsonl", None)
    assert len(inputs) == 3
    assert [kind.output_line({"input": t, "score": 1})["input"] for t in inputs] == [
        "q0",
        "q1",
        "q2",
    ]
    # The scheduler's error row for a query that failed for good names the item too.
    assert kind.output_line(kind.error_row(inputs[1], "no answer from H3 in 60.0 s")) == {
        "input": "q1",
        "error": "no answer from H3 in 60.0 s",
    }


@pytest.mark.parametrize(
    ("model", "pattern", "count", "setup", "message"),
    [
        ("SmolLM2", None, 5, None, r"SmolLM2 grades a file: C4 submit-job SmolLM2 SDFSFILE"),
        ("SmolLM2", "grading/*", None, None, r"grades a file"),
        ("SmolLM2", "grading/none.jsonl", None, None, r"^no SDFS file named grading/none"),
        (
            "SmolLM2",
            "grading/items.jsonl",
            None,
            "no-gguf",
            r"GGUF file models/smollm2.gguf is not",
        ),
        ("SmolLM2", "grading/empty.jsonl", None, None, r"grading/empty.jsonl holds no items"),
        ("SmolLM2", "grading/dup.jsonl", None, None, r"line 2: id 'a' is used on line 1"),
        ("llama3", "grading/items.jsonl", None, "bad-prompt", r"^prompts/grade.txt: the prompt"),
        ("llama3", "grading/items.jsonl", None, "no-prompt", r"^no SDFS file named prompts/"),
    ],
)
async def test_submissions_that_cannot_be_graded_are_refused_with_one_line(
    files: DictFiles,
    model: str,
    pattern: str | None,
    count: int | None,
    setup: str | None,
    message: str,
) -> None:
    files.data["grading/empty.jsonl"] = b"\n\n"
    files.data["grading/dup.jsonl"] = b'{"id": "a", "question": "", "answer": ""}\n' * 2
    if setup == "no-gguf":
        del files.data["models/smollm2.gguf"]
    elif setup == "bad-prompt":
        files.data["prompts/grade.txt"] = b"Grade $answer for $student"
    elif setup == "no-prompt":
        del files.data["prompts/grade.txt"]
    with pytest.raises(Invalid, match=message) as info:
        await Grading([LOCAL, REMOTE]).queries(files, model, pattern, count)
    assert "\n" not in str(info.value)


async def test_the_openai_backend_needs_no_file_in_sdfs(files: DictFiles) -> None:
    del files.data["models/smollm2.gguf"]
    inputs = await Grading([LOCAL, REMOTE]).queries(files, "llama3", "grading/items.jsonl", None)
    assert len(inputs) == 3


async def test_a_worker_without_llama_cpp_says_the_model_is_unavailable_here(
    files: DictFiles, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "llama_cpp" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    kind = Grading([LOCAL])
    inputs = await kind.queries(files, "SmolLM2", "grading/items.jsonl", None)
    ctx = WorkerContext(files, tmp_path, WorkerProcess(1), trio.Lock(), False)
    with pytest.raises(ModelUnavailable, match="llama-cpp-python is not installed") as info:
        await kind.run_batch(ctx, "SmolLM2", [(0, inputs[0])])
    assert info.value.model == "SmolLM2"
    assert not await info.value.probe()
    monkeypatch.setattr(importlib.util, "find_spec", real_find_spec)
    assert await info.value.probe()  # installed meanwhile: the model comes back
