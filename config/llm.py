"""Grading models: the cluster file's ``[[llm]]`` tables (see INTERFACE.md).

Each table names one model that C1-C5 accept beside the image models, and says how a
worker runs it: ``llama.cpp`` loads a GGUF file from SDFS in the worker process
(llama-cpp-python); ``openai`` sends chat completions to an OpenAI-compatible server
(Ollama's ``/v1``, vLLM, llama.cpp's server, LM Studio) at ``url``, where ``{host}``
is the worker's own host, so one line serves a server on every classroom machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from config.tables import ConfigError, Schema, check_table
from inference.models import canonical_or_none

BACKENDS = ("llama.cpp", "openai")
# Ollama's default port; its OpenAI-compatible API lives under /v1.
DEFAULT_OPENAI_URL = "http://{host}:11434/v1"
# Names C1-C5 use for image models: a grading model may not take one (nor any
# spelling of a torchvision model's name, which image classification would serve).
_RESERVED = {"noop"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Bounds that catch typos, not policy: a reply of 8,192 tokens is minutes of work.
MAX_PARALLEL = 64
MAX_TOKENS = 8192

_LLM_KEYS: Schema = {
    "name": str,
    "backend": str,
    "model": str,
    "url": str,
    "parallel": int,
    "max_tokens": int,
    "temperature": (int, float),
    "seed": int,
    "prompt": str,
    # Beyond INTERFACE.md: llama.cpp's context window, in tokens.
    "context": int,
}


@dataclass(frozen=True)
class LlmSpec:
    """One ``[[llm]]`` table."""

    name: str
    backend: str  # one of BACKENDS
    model: str  # llama.cpp: a GGUF file in SDFS; openai: the server's model name
    url: str = DEFAULT_OPENAI_URL  # openai only; "{host}" is the worker's host
    parallel: int = 1  # requests in flight per worker
    max_tokens: int = 128
    temperature: float = 0.0
    seed: int = 42
    prompt: str = ""  # an SDFS template file replacing the default prompt ("" = default)
    context: int = 2048  # llama.cpp only

    def url_for(self, host: str) -> str:
        """The server's base URL as seen from a worker on ``host``."""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal inside a URL
        return self.url.replace("{host}", host).rstrip("/")

    def to_plain(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_llms(raw: Any) -> tuple[LlmSpec, ...]:
    """The ``llm`` array of tables, validated; every error names the key at fault."""
    if not isinstance(raw, list):
        raise ConfigError("llm: expected an array of tables ([[llm]])")
    specs: list[LlmSpec] = []
    seen: set[str] = set()
    for i, table in enumerate(raw):
        prefix = f"llm[{i}]"
        check_table(prefix, table, _LLM_KEYS)
        for required in ("name", "backend", "model"):
            if required not in table:
                raise ConfigError(f"{prefix}.{required}: missing")
        name = table["name"]
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"{prefix}.name: use letters, digits and ._- (at most 64), got {name!r}"
            )
        if name.lower() in _RESERVED or canonical_or_none(name) is not None:
            raise ConfigError(f"{prefix}.name: {name!r} is an image model's name")
        if name.lower() in seen:
            raise ConfigError(f"{prefix}.name: duplicate name {name!r}")
        seen.add(name.lower())
        backend = table["backend"]
        if backend not in BACKENDS:
            raise ConfigError(
                f"{prefix}.backend: expected one of {', '.join(BACKENDS)}, got {backend!r}"
            )
        if not table["model"].strip():
            raise ConfigError(f"{prefix}.model: must not be empty")
        if backend == "openai":
            _check_url(f"{prefix}.url", table.get("url", DEFAULT_OPENAI_URL))
        else:
            for key in ("url", "parallel"):
                if key in table:
                    raise ConfigError(f"{prefix}.{key}: only for backend 'openai'")
        parallel = table.get("parallel", 1)
        if not 1 <= parallel <= MAX_PARALLEL:
            raise ConfigError(f"{prefix}.parallel: must be 1..{MAX_PARALLEL}, got {parallel}")
        max_tokens = table.get("max_tokens", 128)
        if not 16 <= max_tokens <= MAX_TOKENS:
            raise ConfigError(f"{prefix}.max_tokens: must be 16..{MAX_TOKENS}, got {max_tokens}")
        temperature = float(table.get("temperature", 0.0))
        if not 0.0 <= temperature <= 2.0:
            raise ConfigError(f"{prefix}.temperature: must be 0..2, got {temperature:g}")
        seed = table.get("seed", 42)
        if not 0 <= seed < 2**31:
            raise ConfigError(f"{prefix}.seed: must be 0..2147483647, got {seed}")
        context = table.get("context", 2048)
        if not 256 <= context <= 131072:
            raise ConfigError(f"{prefix}.context: must be 256..131072, got {context}")
        specs.append(
            LlmSpec(
                name=name,
                backend=backend,
                model=table["model"],
                url=table.get("url", DEFAULT_OPENAI_URL),
                parallel=parallel,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                prompt=table.get("prompt", ""),
                context=context,
            )
        )
    return tuple(specs)


def _check_url(key: str, url: str) -> None:
    parts = urlsplit(url.replace("{host}", "localhost"))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{key}: expected http://HOST:PORT/PATH, got {url!r}")
