"""The real small model and a real OpenAI-compatible server, for grading tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from scripts.samples import smollm2_gguf

__all__ = ["llama_server", "server_argv", "smollm2_gguf"]


def server_argv(host: str, port: int, threads: int = 1, alias: str | None = None) -> list[str]:
    """The command line of ``python -m llama_cpp.server`` serving SmolLM2 (as ``alias``)."""
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf())]
    if alias is not None:
        argv += ["--model_alias", alias]
    argv += ["--host", host, "--port", str(port), "--n_threads", str(threads)]
    return [*argv, "--n_threads_batch", str(threads), "--n_ctx", "2048", "--verbose", "False"]


@contextmanager
def llama_server(
    host: str, port: int, log: Path, threads: int = 1, timeout: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m llama_cpp.server`` serving SmolLM2 at ``http://host:port/v1``,
    ready when yielded, killed on exit."""
    argv = server_argv(host, port, threads)
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(f"http://{host}:{port}/v1/models", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama_cpp.server not ready in {timeout:g} s; see {log}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
