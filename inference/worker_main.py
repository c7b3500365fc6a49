"""The inference worker process: ``python -m inference.worker_main [--threads N] [--device D]``.

Torch runs here, in a child of the node, so that the node's trio loop (failure
detector, SDFS, console) never waits behind a forward pass and never imports torch.

Protocol: the node writes requests to the worker's stdin and reads replies from its
stdout.  Each message is a msgpack map behind a 4-byte big-endian length.  Requests are
handled one at a time, in order; each reply echoes the request's ``id`` (if it had
one), which lets the client skip a reply whose request it gave up on.

    {"op": "hello"}
        -> {"ok": true, "device": "cpu" | "cuda:0", "gpu": NAME | null, "threads": N,
            "torch": VERSION, "torchvision": VERSION, "models": [WARM MODEL...], "pid": PID}
    {"op": "load", "model": NAME, "weights": PATH | null, "allow_download": false}
        -> {"ok": true, "model": CANONICAL NAME, "seconds": LOAD TIME (0 if warm)}
    {"op": "run", "id": ID, "model": NAME, "weights": PATH | null,
     "inputs": [LOCAL PATH...], "names": [SDFS NAME...], "allow_download": false,
     "custom": null | {"name", "build": "MODULE:FUNCTION", "preprocess": {...}, "labels"}}
        -> {"ok": true, "id": ID, "results": [ROW...], "timing": {"load", "decode",
            "forward", "total", "cpu"}}
    {"op": "kind", "id": ID, "entry": "MODULE:FUNCTION", "args": {...}}
        -> {"ok": true, "id": ID, ...what FUNCTION returned}
    any failure -> {"ok": false, "error": ONE LINE}

``kind`` is how a job kind other than image classification runs its batches here
without this module knowing it (:mod:`inference.kinds.base`): the kind names its own
worker-side function, imported on first use, and calls it as
``FUNCTION(state, args) -> dict``, where ``state`` is a dict kept for the life of the
process for that entry (its warm models).  Only the node writes to this process's
stdin, and the node takes the entry from its own kinds registry, never from a request.

``custom`` runs a user's image model (:class:`inference.models.CustomModel`, sent by
:class:`inference.kinds.custom.ImageModel`) instead of a torchvision one: like a kind's
entry, its build function comes from the node's registry, never from a request.

Rows are those of :class:`inference.runtime.BatchResult`.  EOF on stdin ends the process
with status 0 (after the request in hand): closing the pipe is how the node stops it,
and how it stops when the node dies.  Logs go to stderr only; stdout carries nothing
but replies.

This module's top level imports no torch, so the client can share the framing below;
:func:`main` imports the runtime.  With ``--no-torch`` it never does: the process
answers ``hello`` (``torch`` null) and ``kind`` only, for kinds that need no torch
(llama.cpp grading), so a node grading with an LLM does not carry torch's memory.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import struct
import sys
from typing import IO, TYPE_CHECKING, Any

import msgpack

from net.errors import one_line as net_one_line

if TYPE_CHECKING:
    from inference.runtime import ModelRunner

log = logging.getLogger("inference.worker")

HEADER = struct.Struct(">I")
# A request is a list of paths and a reply a few hundred bytes per image; 64 MiB is far
# beyond both and still bounds what a corrupt length can make either side allocate.
MAX_FRAME = 64 * 1024 * 1024
# An error line in a reply or a row, in characters.
ERROR_CHARS = 300


class FrameError(Exception):
    """The byte stream is not a sequence of valid frames (it cannot be resynchronised)."""


def encode_frame(message: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise FrameError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return HEADER.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (length,) = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise FrameError(f"frame length {length} is over the {MAX_FRAME}-byte limit")
    return int(length)


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ValueError(f"undecodable message: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError(f"a message must be a map, not {type(message).__name__}")
    return message


def read_frame(stream: IO[bytes]) -> bytes | None:
    """The next frame's body, or None at a clean EOF (between frames)."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise FrameError("EOF inside a frame header")
    length = frame_length(header)
    body = stream.read(length)
    if len(body) < length:
        raise FrameError(f"EOF after {len(body)} of {length} bytes of a frame")
    return body


# --- request handling -------------------------------------------------------------


def _str_list(request: dict[str, Any], key: str) -> list[str]:
    value = request.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key!r} must be a list of strings")
    return value


def _optional_str(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string or null")
    return value


def _model(request: dict[str, Any]) -> str:
    value = request.get("model")
    if not isinstance(value, str):
        raise ValueError("'model' must be a string")
    return value


# Per kind entry: the state its function keeps between calls (warm models).
_KIND_STATE: dict[str, dict[str, Any]] = {}


def _kind_call(request: dict[str, Any]) -> dict[str, Any]:
    entry = request.get("entry")
    args = request.get("args", {})
    if not isinstance(entry, str) or entry.count(":") != 1:
        raise ValueError("'entry' must be 'module:function'")
    if not isinstance(args, dict):
        raise ValueError("'args' must be a map")
    module_name, function_name = entry.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    result = function(_KIND_STATE.setdefault(entry, {}), args)
    if not isinstance(result, dict):
        raise ValueError(f"{entry} returned a {type(result).__name__}, not a map")
    return result


def handle(runner: ModelRunner | TorchlessRunner, request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request (the runtime's failures become ``ok: false``)."""
    from inference.models import CustomModel, canonical_model

    op = request.get("op")
    try:
        if op == "hello":
            reply: dict[str, Any] = {"ok": True, **runner.describe(), "pid": os.getpid()}
        elif op == "load":
            model = _model(request)
            seconds = runner.load(
                model, _optional_str(request, "weights"), bool(request.get("allow_download"))
            )
            reply = {"ok": True, "model": canonical_model(model), "seconds": seconds}
        elif op == "run":
            inputs = _str_list(request, "inputs")
            names = _str_list(request, "names") if "names" in request else None
            custom = request.get("custom")
            result = runner.run(
                _model(request),
                _optional_str(request, "weights"),
                inputs,
                names,
                bool(request.get("allow_download")),
                CustomModel.from_wire(custom) if custom is not None else None,
            )
            reply = {"ok": True, "results": result.rows, "timing": result.timing}
        elif op == "kind":
            reply = {**_kind_call(request), "ok": True}
        else:
            raise ValueError(f"unknown op {op!r}: expected hello, load, run or kind")
    except Exception as exc:
        # The traceback is for the worker's log; the caller gets one line.
        log.warning("request %r (op %r) failed", request.get("id"), op, exc_info=True)
        reply = {"ok": False, "error": error_line(exc)}
    if "id" in request:
        reply["id"] = request["id"]
    return reply


class TorchlessRunner:
    """The runner of a ``--no-torch`` process: it describes itself and serves op
    ``kind``; the image ops need torch and are refused."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def describe(self) -> dict[str, Any]:
        return {"device": "cpu", "gpu": None, "threads": self.threads, "torch": None, "models": []}

    def load(self, *args: Any) -> float:
        raise ValueError("op 'load' needs torch; this worker runs without it (--no-torch)")

    def run(self, *args: Any) -> Any:
        raise ValueError("op 'run' needs torch; this worker runs without it (--no-torch)")


def serve(
    runner: ModelRunner | TorchlessRunner | None,
    startup_error: str | None,
    inp: IO[bytes],
    out: IO[bytes],
) -> int:
    """Answer requests until EOF; the process's exit status."""
    while True:
        try:
            body = read_frame(inp)
        except FrameError as exc:
            # Without a trustworthy length there is no next frame to find.
            log.error("giving up on the request stream: %s", exc)
            return 1
        if body is None:
            log.info("stdin closed; exiting")
            return 0
        try:
            request = decode_body(body)
        except ValueError as exc:
            reply: dict[str, Any] = {"ok": False, "error": str(exc)}
        else:
            if runner is None:
                # Still answer, so the node learns why instead of seeing a silent exit.
                reply = {"ok": False, "error": startup_error or "the worker failed to start"}
                if "id" in request:
                    reply["id"] = request["id"]
            else:
                reply = handle(runner, request)
        out.write(encode_frame(reply))
        out.flush()


def error_line(exc: BaseException) -> str:
    """``exc`` as a single line for replies and rows (torch's messages span many lines)."""
    name = type(exc).__name__
    return net_one_line(f"{name}: {exc}" if str(exc).strip() else name, ERROR_CHARS)


def _threads(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference.worker_main",
        description="IDunno inference worker: length-prefixed msgpack requests on stdin, "
        "replies on stdout, logs on stderr.",
    )
    parser.add_argument("--threads", type=_threads, default=None, help="torch CPU threads")
    parser.add_argument(
        "--device", default="auto", help="cpu, cuda, cuda:N or auto (cuda if present)"
    )
    parser.add_argument(
        "--no-torch", action="store_true", help="never import torch: answer hello and kind only"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)

    # Keep the real stdout for replies and point fd 1 at stderr: anything else that
    # prints (torch.hub's "Downloading ..." line, a C library) would otherwise corrupt
    # the framing.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format=f"%(asctime)s %(levelname)s worker[{os.getpid()}]: %(message)s",
    )

    runner: ModelRunner | None = None
    startup_error: str | None = None
    if args.no_torch:
        log.info("ready without torch: %d threads", args.threads or 1)
        try:
            return serve(TorchlessRunner(args.threads or 1), None, sys.stdin.buffer, out)
        except BrokenPipeError:
            return 0
    try:
        from inference.runtime import ModelRunner

        try:
            runner = ModelRunner(device=args.device, threads=args.threads)
        except Exception as exc:
            startup_error = f"worker start-up failed: {error_line(exc)}"
    except Exception as exc:  # torch itself failed to import
        startup_error = f"worker start-up failed: cannot import torch: {exc}"
    if startup_error is not None:
        log.error("%s", startup_error)
    else:
        assert runner is not None
        info = runner.describe()
        log.info(
            "ready: device %s (%s), %d threads, torch %s",
            info["device"],
            info["gpu"] or "no GPU",
            info["threads"],
            info["torch"],
        )
    try:
        return serve(runner, startup_error, sys.stdin.buffer, out)
    except BrokenPipeError:
        # The node went away while a reply was being written: nothing left to serve.
        return 0


if __name__ == "__main__":
    sys.exit(main())
