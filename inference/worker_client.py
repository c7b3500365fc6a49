"""The node's handle on its inference worker process (trio; imports no torch).

Theory of operation.  A :class:`WorkerProcess` owns at most one child process running
``python -m inference.worker_main``, started on first use.  Requests go one at a time
(a ``trio.Lock``): the worker is single-threaded, so queueing here instead of in the
pipe costs nothing and keeps every reply attributable.

Invariants:

1. Replies are read through one buffer that is only changed after ``receive_some``
   returns, so a cancelled read never loses or splits a frame.
2. ``_owed`` names the one request whose reply is still to come (its caller was
   cancelled while waiting).  The next request first reads and drops replies up to
   and including that one, so no caller ever sees another request's reply.  The worker
   is left running: its warm models are worth more than the wait.
3. A request cancelled while it was being written leaves an unknown part of it in the
   pipe.  The process is then marked broken and replaced before the next request.
4. When the process dies (EOF on its stdout, a broken stdin), the request in flight
   fails with :class:`WorkerError` naming the exit status; the next request starts a
   fresh process.
5. Every process started is reaped: :meth:`aclose` and every failure path stop it in a
   shielded scope (EOF on stdin first, SIGKILL after ``stop_timeout``).

Errors: :class:`WorkerError` means the process failed (died, would not start, broke
the protocol); the request may be retried.  :class:`RequestError` means the worker
answered and refused (unknown model, unreadable weights file); retrying will not help.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from inference.worker_main import HEADER, FrameError, decode_body, encode_frame, frame_length

log = logging.getLogger("inference.worker_client")

# The directory that holds the inference package: put on the worker's PYTHONPATH so that
# it runs this same code even where the project is not installed.
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
THREADS_ENV = "IDUNNO_THREADS"


class WorkerError(Exception):
    """The worker process failed: it died, would not start, or broke the protocol."""


class RequestError(Exception):
    """The worker answered the request with an error (``ok: false``)."""


def host_cores() -> int:
    """The CPUs this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(nodes_per_host: int = 1) -> int:
    """Torch threads for one worker: this host's cores shared among its workers.

    Each node runs one worker, so ``nodes_per_host`` workers share the cores; at least
    1.  ``$IDUNNO_THREADS`` overrides the computation (an operator who knows better).
    """
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"${THREADS_ENV} must be a whole number, not {env!r}") from None
        if value < 1:
            raise ValueError(f"${THREADS_ENV} must be at least 1, not {value}")
        return value
    if nodes_per_host < 1:
        raise ValueError(f"nodes_per_host must be at least 1, not {nodes_per_host}")
    return max(1, host_cores() // nodes_per_host)


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


class _FrameReader:
    """Frames from a byte stream; cancellation-safe (see invariant 1)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buf = bytearray()

    async def read(self) -> dict[str, Any] | None:
        """The next message, or None at EOF."""
        while True:
            if len(self._buf) >= HEADER.size:
                length = frame_length(bytes(self._buf[: HEADER.size]))
                end = HEADER.size + length
                if len(self._buf) >= end:
                    body = bytes(self._buf[HEADER.size : end])
                    del self._buf[:end]
                    return decode_body(body)
            data = await self._stream.receive_some(1 << 16)
            if not data:
                return None
            self._buf += data


class WorkerProcess:
    """One inference worker process, started lazily and restarted after it dies.

    ``threads`` defaults to :func:`default_threads` for ``nodes_per_host``.  ``log_path``
    receives the worker's stderr (appended); ``None`` lets it inherit this process's
    stderr.  The object can be used again after :meth:`aclose` (a new process starts).
    """

    def __init__(
        self,
        threads: int | None = None,
        *,
        nodes_per_host: int = 1,
        device: str = "auto",
        log_path: str | os.PathLike[str] | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        torch: bool = True,
    ) -> None:
        self.threads = threads if threads is not None else default_threads(nodes_per_host)
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, not {self.threads}")
        self.device = device
        # False: a process that never imports torch (only op "kind"; see worker_main).
        self.torch = torch
        self.log_path = Path(log_path) if log_path is not None else None
        # Importing torch and starting CUDA can take tens of seconds on a cold disk.
        self.start_timeout = start_timeout
        # The worker finishes the request in hand before it sees EOF; after this long
        # it is killed instead.
        self.stop_timeout = stop_timeout
        self.python = python
        self._env = dict(env) if env is not None else None
        self._proc: trio.Process | None = None
        self._reader: _FrameReader | None = None
        self._lock = trio.Lock()
        self._next_id = 0
        self._owed: int | None = None
        self._broken: str | None = None
        self._current: str | None = None
        self.info: dict[str, Any] | None = None  # the last hello reply
        self.starts = 0  # processes started so far (restarts = starts - 1)

    # --- state ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The current worker's process id (None when none is running)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def busy(self) -> bool:
        """A request has been sent and its reply not yet read."""
        return self._current is not None or self._owed is not None

    def _command(self) -> list[str]:
        return [
            self.python,
            "-m",
            "inference.worker_main",
            "--threads",
            str(self.threads),
            "--device",
            self.device,
            *(() if self.torch else ("--no-torch",)),
        ]

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self._env is None else self._env)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PROJECT_ROOT + (os.pathsep + path if path else "")
        # torch.set_num_threads in the worker sizes torch's own pool; these keep the
        # OpenMP/MKL runtimes from sizing theirs to every core of the host at import.
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, str(self.threads))
        return env

    # --- life cycle -----------------------------------------------------------------

    async def start(self) -> dict[str, Any]:
        """Start the worker if it is not running; its hello reply."""
        async with self._lock:
            await self._ensure_started()
            assert self.info is not None
            return self.info

    async def _ensure_started(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None and self._broken is None:
            return
        if proc is not None:
            why = self._broken or f"the previous worker {describe_exit(proc.returncode)}"
            log.warning("restarting the inference worker: %s", why)
            await self._discard()
        await self._spawn()

    async def _spawn(self) -> None:
        stderr: Any = None
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            stderr = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps its own copy)
        try:
            proc = await trio.lowlevel.open_process(
                self._command(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=self._child_env(),
                # Its own session: a Ctrl-C at the node's terminal is the node's to handle
                # (it stops the worker by closing stdin), not the worker's.
                start_new_session=True,
            )
        except OSError as exc:  # no such interpreter, out of processes, ...
            raise WorkerError(f"cannot start the inference worker: {exc}") from exc
        finally:
            if stderr is not None:
                stderr.close()
        assert proc.stdout is not None
        self._proc = proc
        self._reader = _FrameReader(proc.stdout)
        self._broken = None
        self._owed = None
        self.info = None
        self.starts += 1
        log.info("started inference worker pid %d: %s", proc.pid, " ".join(self._command()))
        try:
            with trio.fail_after(self.start_timeout):
                hello = await self._exchange({"op": "hello"}, "hello")
            if not hello.get("ok"):
                # It runs but cannot serve (torch failed to import, no such device).
                raise WorkerError(f"inference worker cannot serve: {hello.get('error')}")
            self.info = hello
        except trio.TooSlowError:
            self._broken = f"no hello reply within {self.start_timeout:g} s"
            await self._discard()
            raise WorkerError(
                f"inference worker did not answer hello within {self.start_timeout:g} s"
            ) from None
        except BaseException:
            # A worker that could not even say hello is no use; do not keep it around.
            self._broken = self._broken or "start-up failed"
            with trio.CancelScope(shield=True):
                await self._discard()
            raise

    async def _discard(self) -> None:
        """Stop the current process for good: close its stdin, then kill it if need be."""
        proc, self._proc, self._reader = self._proc, None, None
        self._owed = None
        if proc is None:
            return
        # Shielded: whatever cancelled the caller, the child must not outlive this handle.
        with trio.CancelScope(shield=True):
            if proc.stdin is not None:
                await proc.stdin.aclose()  # EOF: the worker exits after the request in hand
            with trio.move_on_after(self.stop_timeout):
                await proc.wait()
            if proc.returncode is None:
                log.warning("inference worker pid %d did not exit; killing it", proc.pid)
                proc.kill()
                await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()

    async def aclose(self) -> None:
        """Stop the worker: EOF on its stdin, then SIGKILL after ``stop_timeout``.

        Safe to call from a cancelled scope (shielded) and while a request is in flight
        (that request fails with WorkerError); the lock is not taken, so a request
        stuck on a hung worker cannot keep the worker alive.
        """
        await self._discard()

    async def __aenter__(self) -> WorkerProcess:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- requests -------------------------------------------------------------------

    async def _lost(self, proc: trio.Process, during: str) -> WorkerError:
        """The error for a request whose worker went away; reaps the process."""
        if proc is not self._proc:  # aclose() took it away mid-request
            return WorkerError(f"inference worker (pid {proc.pid}) was stopped during {during}")
        with trio.CancelScope(shield=True):
            with trio.move_on_after(2):  # EOF comes first; the exit status a moment later
                await proc.wait()
            status = describe_exit(proc.returncode)
            self._broken = f"it {status}"
            await self._discard()
        where = f"; see {self.log_path}" if self.log_path is not None else ""
        return WorkerError(
            f"inference worker (pid {proc.pid}) {status} during {during}; "
            f"a new worker starts on the next request{where}"
        )

    async def _exchange(self, message: dict[str, Any], what: str) -> dict[str, Any]:
        """Send ``message`` and return its reply (the lock is held, the process started)."""
        proc, reader = self._proc, self._reader
        assert proc is not None and proc.stdin is not None and reader is not None
        try:
            # Invariant 2: first collect the reply a cancelled caller left behind.
            while self._owed is not None:
                late = await reader.read()
                if late is None:
                    raise await self._lost(proc, f"{what} (while skipping a stale reply)")
                if late.get("id") == self._owed:
                    self._owed = None

            self._next_id += 1
            rid = self._next_id
            frame = encode_frame({**message, "id": rid})
            try:
                await proc.stdin.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise
            except BaseException:
                self._broken = f"{what} was interrupted while being sent"  # invariant 3
                raise
            self._owed = rid
            self._current = what
            while True:
                reply = await reader.read()
                if reply is None:
                    raise await self._lost(proc, what)
                if reply.get("id") == rid:
                    self._owed = None
                    return reply
                log.warning("dropping a worker reply for request %r", reply.get("id"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # A broken stdin (the worker died) or a pipe aclose() closed under us.
            raise await self._lost(proc, what) from None
        except (FrameError, ValueError) as exc:
            if proc is self._proc:
                self._broken = f"protocol error: {exc}"
                await self._discard()
            raise WorkerError(f"inference worker broke the protocol during {what}: {exc}") from None
        finally:
            self._current = None

    async def request(self, message: dict[str, Any], what: str | None = None) -> dict[str, Any]:
        """Send one request (starting the worker if needed); its successful reply.

        Raises RequestError when the worker answers ``ok: false``, WorkerError when the
        process fails.
        """
        what = what or str(message.get("op"))
        async with self._lock:
            await self._ensure_started()
            reply = await self._exchange(message, what)
        if not reply.get("ok"):
            raise RequestError(str(reply.get("error") or f"{what} failed"))
        return reply

    async def hello(self) -> dict[str, Any]:
        """Device, GPU, threads and versions of the worker (starting it if needed)."""
        reply = await self.request({"op": "hello"})
        self.info = reply
        return reply

    async def load(
        self,
        model: str,
        weights_path: str | os.PathLike[str] | None,
        allow_download: bool = False,
    ) -> dict[str, Any]:
        """Make ``model`` warm in the worker; the reply's ``seconds`` is the load time."""
        return await self.request(
            {
                "op": "load",
                "model": model,
                "weights": os.fspath(weights_path) if weights_path is not None else None,
                "allow_download": allow_download,
            },
            f"load {model}",
        )

    async def run(
        self,
        model: str,
        weights_path: str | os.PathLike[str] | None,
        inputs: list[str],
        names: list[str] | None = None,
        allow_download: bool = False,
        custom: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Classify ``inputs`` (local image paths); ``{"results": [ROW...], "timing": {...}}``.

        ``names`` (default ``inputs``) label the rows, normally the images' SDFS names.
        ``custom`` (a :class:`~inference.models.CustomModel`'s ``to_wire()``) runs a
        user's image model named ``model`` instead of a torchvision one.
        A row is ``{"input", "top5": [[index, label, probability], ...], "seconds"}``, or
        ``{"input", "error", "seconds"}`` for an image that could not be decoded.
        """
        if names is not None and len(names) != len(inputs):
            raise ValueError(f"{len(inputs)} inputs but {len(names)} names")
        return await self.request(
            {
                "op": "run",
                "model": model,
                "weights": os.fspath(weights_path) if weights_path is not None else None,
                "inputs": [os.fspath(p) for p in inputs],
                "names": list(names) if names is not None else [os.fspath(p) for p in inputs],
                "allow_download": allow_download,
                **({"custom": custom} if custom is not None else {}),
            },
            f"run {model} on {len(inputs)} images",
        )
