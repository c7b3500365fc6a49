"""The cluster file's [[llm]] tables: defaults, validation, one-line errors naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from config.llm import DEFAULT_OPENAI_URL, LlmSpec, parse_llms
from config.tables import ConfigError
from config.topology import config_from_dict

NODES = [{"name": "H1", "host": "127.0.0.1", "port": 8001}]


def llm(**kw: Any) -> dict[str, Any]:
    return {"name": "smollm2", "backend": "llama.cpp", "model": "models/s.gguf", **kw}


def test_a_cluster_file_declares_grading_models_in_order() -> None:
    config = config_from_dict(
        {
            "nodes": NODES,
            "llm": [
                llm(),
                {"name": "llama3", "backend": "openai", "model": "llama3.2:1b", "parallel": 4},
            ],
        }
    )
    local, remote = config.llms
    assert local == LlmSpec("smollm2", "llama.cpp", "models/s.gguf")
    assert (local.max_tokens, local.temperature, local.seed, local.prompt) == (128, 0.0, 42, "")
    assert remote.backend == "openai" and remote.parallel == 4
    assert remote.url == DEFAULT_OPENAI_URL == "http://{host}:11434/v1"
    assert config_from_dict({"nodes": NODES}).llms == ()


def test_url_for_puts_the_workers_host_in_the_url() -> None:
    spec = LlmSpec("m", "openai", "x", url="http://{host}:8080/v1/")
    assert spec.url_for("10.0.0.7") == "http://10.0.0.7:8080/v1"
    assert spec.url_for("::1") == "http://[::1]:8080/v1"
    fixed = LlmSpec("m", "openai", "x", url="https://grader.example:443/v1")
    assert fixed.url_for("10.0.0.7") == "https://grader.example:443/v1"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"backend": "llama.cpp", "model": "m"}, r"^llm\[0\]\.name: missing$"),
        (llm(backend="vllm"), r"^llm\[0\]\.backend: expected one of llama\.cpp, openai"),
        (llm(model=" "), r"^llm\[0\]\.model: must not be empty$"),
        (llm(name="ResNet50"), r"^llm\[0\]\.name: 'ResNet50' is an image model's name$"),
        (llm(name="MobileNetV2"), r"^llm\[0\]\.name: 'MobileNetV2' is an image model's name$"),
        (llm(name="a b"), r"^llm\[0\]\.name: use letters"),
        (llm(url="http://{host}:1/v1"), r"^llm\[0\]\.url: only for backend 'openai'$"),
        (llm(parallel=2), r"^llm\[0\]\.parallel: only for backend 'openai'$"),
        (llm(max_tokens=4), r"^llm\[0\]\.max_tokens: must be 16\.\.8192, got 4$"),
        (llm(temperature=-1), r"^llm\[0\]\.temperature: must be 0\.\.2, got -1$"),
        (llm(seed=-1), r"^llm\[0\]\.seed: must be 0\.\.2147483647, got -1$"),
        (llm(context=10), r"^llm\[0\]\.context: must be 256\.\.131072, got 10$"),
        (llm(temperature="hot"), r"^llm\[0\]\.temperature: expected int or float, got 'hot'$"),
        (llm(colour="red"), r"^llm\[0\]\.colour: unknown key$"),
        (
            llm(backend="openai", url="ftp://x/v1"),
            r"^llm\[0\]\.url: expected http://HOST:PORT/PATH, got 'ftp://x/v1'$",
        ),
        (llm(backend="openai", parallel=0), r"^llm\[0\]\.parallel: must be 1\.\.64, got 0$"),
    ],
)
def test_bad_tables_are_refused_naming_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_llms([table])


def test_names_are_unique_regardless_of_case() -> None:
    with pytest.raises(ConfigError, match=r"^llm\[1\]\.name: duplicate name 'SmolLM2'$"):
        parse_llms([llm(), llm(name="SmolLM2")])


def test_llm_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"^llm: expected an array of tables"):
        config_from_dict({"nodes": NODES, "llm": {"name": "x"}})
    with pytest.raises(ConfigError, match=r"^llm\[0\]: expected a table$"):
        parse_llms(["smollm2"])
