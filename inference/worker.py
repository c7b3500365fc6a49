"""The worker role, on every node (the leader included): runs the batches it is given.

The leader sends :class:`~net.messages.AssignBatch`; the worker acknowledges at once
and runs the batch in the background through the model's job kind
(:mod:`inference.kinds`), which fetches what the batch needs from the file store and
runs it, normally in the worker process (:class:`~inference.worker_client.WorkerProcess`,
``python -m inference.worker_main``), which holds the models warm; the node process
never imports torch.  The node holds :data:`WORKER_SLOTS` batches at once: one runs in
the worker process while the next one's inputs and weights are fetched, so the process
never waits for the leader's round trip between batches; the process still runs one
batch at a time (``WorkerContext.slot``).

The result, or the one-line reason the batch failed, goes to whoever is leader by then
(:class:`~net.messages.BatchResult` through :func:`membership.peers.call_leader`),
with a longer window than a console request's: a batch's result is minutes of work,
and leadership may be moving (detection takes about 5 s, then the standby takes over).

The worker's capacity (threads, GPU, slots) is what the scheduler sizes its batches by.
It also lists the models this worker cannot serve now (``unavailable``) and how many
requests it runs at once per model (``parallel``, from ``[[llm]]``).  A batch whose
kind raises :class:`~inference.kinds.base.ModelUnavailable` (a grading server is down)
makes the worker announce its new capacity to the leader *before* it reports the
batch failed: the leader then puts the batch's queries back without charging them an
attempt, and gives this worker no more of that model.  The worker probes with back-off
(:data:`PROBE_FIRST` doubling to :data:`PROBE_MAX`) and announces the model again
once the probe succeeds.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import trio

from config.llm import LlmSpec
from config.topology import InferenceConfig
from inference import kinds
from inference.files import FileStore
from inference.kinds.base import ModelUnavailable, WorkerContext
from inference.worker_client import WorkerProcess
from membership.peers import ClusterView, call_leader
from net.errors import ClusterError
from net.messages import AssignBatch, BatchResult, Capacity, StoreAck
from net.meters import BusyMeter
from net.rpc import RPC_TIMEOUT

# How long a worker keeps trying to hand a result to a leader (see the docstring).
REPORT_RETRY_WINDOW = 60.0
# Its retries stay this frequent: until the result is in, the batch's slot is taken
# (the scheduler gives the worker no new work), so every late second idles it.
REPORT_RETRY_MAX_DELAY = 0.25
# Batches a worker holds at once (see the docstring).
WORKER_SLOTS = 2
# Probing a model marked unavailable: first pause, and the most it doubles to.
PROBE_FIRST = 1.0
PROBE_MAX = 30.0


def _gpu_name() -> str | None:
    """The first NVIDIA GPU's name, without importing torch (nvidia-smi, if present).

    None where ``$CUDA_VISIBLE_DEVICES`` hides every GPU from the worker (empty or -1):
    the worker then runs on the CPU, and its capacity must say so.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return None
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


class Worker:
    def __init__(
        self,
        me: str,
        view: ClusterView,
        files: FileStore,
        config: InferenceConfig,
        threads: int,
        data_dir: Path,
        log: logging.Logger,
        host: str = "127.0.0.1",
        llms: Sequence[LlmSpec] = (),
    ) -> None:
        self.me = me
        self.view = view
        self.log = log
        self.threads = threads
        self.process = WorkerProcess(threads, log_path=data_dir / "worker.log")
        self.torchless = WorkerProcess(threads, log_path=data_dir / "worker.log", torch=False)
        self.context = WorkerContext(
            files=files,
            cache=data_dir / "cache",
            process=self.process,
            slot=trio.Lock(),
            allow_download=config.allow_download,
            torchless=self.torchless,
            host=host,
            threads=threads,
        )
        self.parallel = {s.name: s.parallel for s in llms if s.parallel > 1}
        self.unavailable: dict[str, str] = {}  # model -> why (see the module docstring)
        # For /metrics (web.metrics): seconds with a batch under way here (from its
        # assignment until its result is ready; overlapping batches count once), on
        # trio's clock, and batches by outcome with the queries they answered.
        self.busy = BusyMeter()
        self.batches: Counter[str] = Counter()
        self.queries = 0
        self._gpu: str | bool | None = False  # False: not looked up yet
        self._nursery: trio.Nursery | None = None

    def capacity(self) -> dict[str, Any]:
        if self._gpu is False:
            self._gpu = _gpu_name()
        capacity: dict[str, Any] = {
            "threads": self.threads,
            "gpu": self._gpu or None,
            "slots": WORKER_SLOTS,
        }
        if self.unavailable:
            capacity["unavailable"] = sorted(self.unavailable)
        if self.parallel:
            capacity["parallel"] = dict(self.parallel)
        return capacity

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await self.process.aclose()
                await self.torchless.aclose()
                for value in self.context.state.values():
                    if hasattr(value, "aclose"):
                        await value.aclose()

    def assign(self, request: AssignBatch) -> StoreAck:
        assert self._nursery is not None
        self._nursery.start_soon(self._run_batch, request)
        return StoreAck(True)

    async def _run_batch(self, req: AssignBatch) -> None:
        started = time.perf_counter()  # for the log line only
        self.busy.start(trio.current_time())
        try:
            kind = kinds.kind_of(req.model)
            out = await kind.run_batch(self.context, req.model, req.queries)
            reply = BatchResult(self.me, req.batch_id, out.rows, out.timings, "")
            self.queries += len(out.rows)
        except ModelUnavailable as e:
            self.log.warning("batch %d of %s: %s", req.batch_id, req.job_id, e)
            # The leader hears first that this worker cannot serve the model, so it
            # takes the batch back for free; the failure then finds it taken.
            await self._model_down(e.model, e.reason, e.probe)
            reply = BatchResult(self.me, req.batch_id, (), (), f"{self.me}: {e}")
        except Exception as e:  # any failure goes back to the scheduler, not up
            why = str(e) if isinstance(e, ClusterError) else f"{type(e).__name__}: {e}"
            self.log.warning("batch %d of %s failed: %s", req.batch_id, req.job_id, why)
            reply = BatchResult(self.me, req.batch_id, (), (), f"{self.me}: {why}")
        finally:
            self.busy.stop(trio.current_time())
        self.batches["failed" if reply.error else "done"] += 1
        self.log.debug(
            "batch %d of %s: %d queries in %.3f s",
            req.batch_id,
            req.job_id,
            len(req.queries),
            time.perf_counter() - started,
        )
        await self._report(reply)

    async def _model_down(
        self, model: str, reason: str, probe: Callable[[], Awaitable[bool]]
    ) -> None:
        if model not in self.unavailable:  # else its probe is running already
            self.unavailable[model] = reason
            assert self._nursery is not None
            self._nursery.start_soon(self._probe, model, probe)
        # Every time: a leader that missed the first announcement (it was changing)
        # must still hear it before this batch's failure.
        await self._announce()

    async def _probe(self, model: str, probe: Callable[[], Awaitable[bool]]) -> None:
        delay = PROBE_FIRST
        while True:
            await trio.sleep(delay)
            try:
                ok = await probe()
            except Exception as e:  # a probe that breaks is a probe that failed
                self.log.debug("probe of %s failed: %s", model, e)
                ok = False
            if ok:
                break
            delay = min(2 * delay, PROBE_MAX)
        self.unavailable.pop(model, None)
        self.log.warning("%s can serve %s again", self.me, model)
        await self._announce()

    async def _announce(self) -> None:
        """Tell the leader this worker's capacity (what it can serve changed)."""
        try:
            await call_leader(
                self.view,
                Capacity(self.me, self.capacity()),
                timeout=RPC_TIMEOUT,
                window=REPORT_RETRY_WINDOW,
                max_delay=REPORT_RETRY_MAX_DELAY,
            )
        except ClusterError as e:
            # The next leader asks every worker for its capacity anyway.
            self.log.warning("could not tell the leader about %s: %s", self.unavailable, e)

    async def _report(self, result: BatchResult) -> None:
        """Hand a batch's result to the leader, whoever that is by now."""
        try:
            reply = await call_leader(
                self.view,
                result,
                timeout=RPC_TIMEOUT,
                window=REPORT_RETRY_WINDOW,
                max_delay=REPORT_RETRY_MAX_DELAY,
            )
        except ClusterError as e:
            self.log.warning("batch %d: no scheduler took its result: %s", result.batch_id, e)
            return
        if not (isinstance(reply, StoreAck) and reply.ok):
            self.log.warning(
                "batch %d: the scheduler refused its result: %r", result.batch_id, reply
            )
