"""The OpenAI-compatible client's failure paths that the end-to-end tests found broken.

* A server that cannot be reached must make :meth:`OpenAIClient.grade` raise
  :class:`ServerDown` itself (the job kind turns exactly that into ModelUnavailable),
  not the ExceptionGroup trio wraps around its request tasks; and through the job kind,
  a batch sent to a dead server raises ModelUnavailable.
* llama-cpp-python 0.3's server refuses ``response_format`` type ``json_schema`` with
  HTTP 500 (its validation error, reported as an internal error) rather than 422.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import trio

from config.llm import LlmSpec
from inference import grading
from inference.kinds.base import ModelUnavailable, WorkerContext
from inference.kinds.grading import Grading
from inference.openai_client import OpenAIClient, ServerDown, refuses_json_schema

# What llama_cpp.server 0.3.36 answers a json_schema response_format (captured).
LLAMA_CPP_SERVER_500 = json.dumps(
    {
        "error": {
            "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
            "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
            "'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n",
            "type": "internal_server_error",
            "param": None,
            "code": None,
        }
    }
)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spec(port: int, parallel: int) -> LlmSpec:
    return LlmSpec(
        name="smollm2",
        backend="openai",
        model="smollm2",
        url=f"http://{{host}}:{port}/v1",
        parallel=parallel,
    )


def _queries(n: int) -> list[str]:
    data = "".join(json.dumps({"id": i, "question": "Q?", "answer": "A"}) + "\n" for i in range(n))
    return grading.parse_items(data.encode())


@pytest.mark.parametrize("parallel", [1, 3])
async def test_a_server_that_cannot_be_reached_raises_server_down(parallel: int) -> None:
    spec = _spec(_closed_port(), parallel)
    client = OpenAIClient(spec, spec.url_for("127.0.0.1"))
    try:
        with pytest.raises(ServerDown, match="ConnectError"):
            await client.grade(_queries(4), None)
        assert not await client.healthy()
    finally:
        await client.aclose()


async def test_a_batch_sent_to_a_dead_server_is_model_unavailable(tmp_path: Path) -> None:
    spec = _spec(_closed_port(), 2)
    kind = Grading([spec])
    ctx = WorkerContext(
        files=None,  # type: ignore[arg-type]  # no prompt template: never asked
        cache=tmp_path,
        process=None,  # type: ignore[arg-type]  # the openai backend runs on the node
        slot=trio.Lock(),
        allow_download=False,
        host="127.0.0.1",
    )
    queries = list(enumerate(_queries(3)))
    with pytest.raises(ModelUnavailable) as err:
        await kind.run_batch(ctx, "smollm2", queries)
    assert err.value.model == "smollm2" and "ConnectError" in err.value.reason
    assert await err.value.probe() is False  # still down
    for client in ctx.state.values():
        await client.aclose()


def test_json_schema_refusals() -> None:
    assert refuses_json_schema(500, LLAMA_CPP_SERVER_500)  # llama-cpp-python 0.3
    assert refuses_json_schema(422, "{}")
    assert refuses_json_schema(400, "bad request")
    # Any other 500 is the server's failure, not a refusal of the format.
    assert not refuses_json_schema(500, '{"error": "CUDA out of memory"}')
    assert not refuses_json_schema(503, "busy: response_format")
    assert not refuses_json_schema(404, "model not found")
