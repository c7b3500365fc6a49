"""The OpenAI-compatible client against a real server (``python -m llama_cpp.server``)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
import trio

from config.llm import LlmSpec
from inference import grading, openai_client
from inference.openai_client import OpenAIClient, ServerDown
from scripts.localcluster import free_port
from tests.helpers.llm import llama_server

pytestmark = pytest.mark.integration  # starts a real server process

HOST = "127.0.0.1"


def spec(port: int, parallel: int = 4) -> LlmSpec:
    return LlmSpec(
        "smol",
        "openai",
        "smollm2",
        url=f"http://{{host}}:{port}/v1",
        parallel=parallel,
        max_tokens=32,
    )


def queries(n: int) -> list[str]:
    lines = [json.dumps({"id": i, "question": f"{i}+{i}?", "answer": str(i)}) for i in range(n)]
    return grading.parse_items("\n".join(lines).encode())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port(HOST)
    log = tmp_path_factory.mktemp("server") / "server.log"
    with llama_server(HOST, port, log):
        yield port


async def test_grades_through_a_real_server_in_its_response_format(server: int) -> None:
    client = OpenAIClient(spec(server), f"http://{HOST}:{server}/v1")
    try:
        with trio.fail_after(120):
            assert await client.healthy()
            rows = await client.grade([*queries(4), *grading.parse_items(b"oops")], None)
    finally:
        await client.aclose()
    assert [r["input"] for r in rows] == [0, 1, 2, 3, "line 1"]
    for row in rows[:4]:
        assert 0 <= row["score"] <= 10 and row["model"] == "smol"
        assert len(row["feedback"]) <= grading.feedback_chars(32)
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert "error" in rows[4]
    # llama.cpp's server refuses OpenAI's json_schema format: the client switched for good.
    assert client.format == "json_object"


async def test_a_busy_server_is_retried_with_back_off(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy in front of the real server answers 503 to the first requests."""
    monkeypatch.setattr(openai_client, "BUSY_FIRST", 0.05)
    async with trio.open_nursery() as nursery:
        proxy = await nursery.start(busy_proxy, server, 3)
        client = OpenAIClient(spec(server, parallel=1), f"http://{HOST}:{proxy.port}/v1")
        client.format = "json_object"
        try:
            with trio.fail_after(120):
                (row,) = await client.grade(queries(1), None)
        finally:
            await client.aclose()
        assert "score" in row and proxy.refused == 3
        # Busy for longer than the window: the server counts as down.
        monkeypatch.setattr(openai_client, "BUSY_WINDOW", 0.3)
        proxy.refused, proxy.refuse = 0, 1000
        client = OpenAIClient(spec(server, parallel=1), f"http://{HOST}:{proxy.port}/v1")
        try:
            with pytest.raises(ServerDown, match=r"busy \(HTTP 503\) for 0.3 s"):
                await client.grade(queries(1), None)
        finally:
            await client.aclose()
        nursery.cancel_scope.cancel()


# --- a 503-injecting proxy ----------------------------------------------------------------


class Proxy:
    def __init__(self, port: int, refuse: int) -> None:
        self.port = port
        self.refuse = refuse
        self.refused = 0


async def busy_proxy(
    upstream: int, refuse: int, *, task_status: trio.TaskStatus[Proxy] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answer the first ``refuse`` requests 503 (and close); relay the rest to upstream."""
    listeners = await trio.open_tcp_listeners(0, host=HOST)
    proxy = Proxy(listeners[0].socket.getsockname()[1], refuse)

    async def handle(stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            head += chunk
        if proxy.refused < proxy.refuse:
            headers, _, body = head.partition(b"\r\n\r\n")
            length = 0
            for line in headers.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += await stream.receive_some(65536)
            proxy.refused += 1
            await stream.send_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )
            await stream.aclose()
            return
        async with stream, await trio.open_tcp_stream(HOST, upstream) as up:
            await up.send_all(head)

            async def pipe(a: trio.SocketStream, b: trio.SocketStream) -> None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    while data := await a.receive_some(65536):
                        await b.send_all(data)
                    await b.send_eof()

            async with trio.open_nursery() as n:
                n.start_soon(pipe, stream, up)
                n.start_soon(pipe, up, stream)

    task_status.started(proxy)
    await trio.serve_listeners(handle, listeners)
