"""IDunno on one node: the scheduler (on the leader), its hot standby, and a worker.

Every node runs this service.  Its roles:

* leader (the first live member in ring order, as for SDFS): owns the
  :class:`~inference.scheduler.Scheduler`.  Every state change is an event
  (:mod:`inference.scheduler`); the leader applies it, carries out the actions
  (batches to workers, outputs to SDFS), appends query timings to a CSV, and
  streams the event to the hot standby;
* hot standby (the next live member in ring order): keeps a copy of the scheduler
  by replaying the leader's events (or a snapshot when it falls behind).  When the
  leader fails it becomes the leader, restores that copy and calls ``takeover``:
  batches on live workers stay where they are (their results come to it), those on
  dead workers go back to their jobs' queues.  Nothing done is lost, nothing is
  counted twice (the scheduler keeps exactly one result per query);
* worker (every live member, the leader included): runs the batches it is given,
  one at a time, in a separate worker process that holds the models warm (the node
  process never imports torch), reading inputs it holds as SDFS replicas from its
  own disk and fetching the rest, and reports to whoever is leader by then.

Times given to the scheduler are wall-clock seconds (``time.time()``), so they mean
the same on a new leader.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import random
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import trio

from config.topology import ClusterConfig, Node
from inference.models import canonical_model, weights_sdfs_name
from inference.scheduler import (
    Assign,
    BatchDone,
    BatchFailed,
    BatchLost,
    Event,
    JobAccepted,
    JobFinished,
    JobStarted,
    QueryGaveUp,
    Scheduler,
    SchedulerConfig,
    SetBatchSize,
    Submit,
    Takeover,
    Tick,
    WorkerDown,
    WorkerUp,
    event_from_plain,
    event_to_plain,
)
from inference.worker_client import WorkerProcess, default_threads
from membership.core import Event as MemberEvent
from membership.core import MembershipCore
from membership.peers import Peers
from net.codec import Codec
from net.errors import ClusterError, NotFound
from net.messages import (
    AssignBatch,
    BatchResult,
    Capacity,
    CapacityRequest,
    ConsoleReply,
    ErrorReply,
    LeaderCommand,
    StandbyEvent,
    StandbySnapshot,
    StoreAck,
    VersionState,
)
from net.rpc import RpcError
from net.transport import Address
from node.commands import CommandError
from sdfs.names import disk_name
from sdfs.service import SdfsService

INFERENCE_REQUESTS = (
    AssignBatch,
    BatchResult,
    StandbyEvent,
    StandbySnapshot,
    CapacityRequest,
    LeaderCommand,
)

# A model that does no inference at all: for measuring what the scheduler, the RPCs
# and the workers cost per query (bench/inference.py), never for real results.
NOOP_MODEL = "noop"
# How long a worker keeps trying to hand a result to a leader (leadership may be
# moving: detection takes about 5 s).
REPORT_RETRY_WINDOW = 60.0
# How long get-output waits for a finished job's output file to appear in SDFS.
OUTPUT_WAIT = 30.0
RPC_TIMEOUT = 5.0
# Inputs a worker fetches at once from other nodes.
FETCH_PARALLELISM = 8
# Batches a worker holds at once: one runs in the worker process while the next one's
# inputs and weights are fetched, so the process never waits for the leader's round
# trip between batches.  The worker process still runs one batch at a time.
WORKER_SLOTS = 2
# Scheduler events sent to the standby per request, at most.
STANDBY_BATCH = 512


def _model_name(name: str) -> str:
    if name.lower() == NOOP_MODEL:
        return NOOP_MODEL
    try:
        return canonical_model(name)
    except ValueError as e:
        raise CommandError(str(e)) from None


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


class InferenceService:
    def __init__(
        self,
        config: ClusterConfig,
        me: Node,
        membership: MembershipCore,
        frames: Codec,
        sdfs: SdfsService,
        data_dir: Path,
        logger: logging.Logger | None = None,
    ) -> None:
        self.config = config
        self.me = me
        self.membership = membership
        self.frames = frames
        self.sdfs = sdfs
        self.data_dir = data_dir
        self.log = logger or logging.getLogger(f"inference.{me.name}")
        self.cache = data_dir / "cache"
        self.peers = Peers(membership, config, frames, self.handle)
        nodes_here = sum(1 for n in config.nodes if n.host == me.host) or 1
        self.threads = config.inference.threads or default_threads(nodes_here)
        self.worker = WorkerProcess(self.threads, log_path=data_dir / "worker.log")
        self._gpu: str | bool | None = False  # False: not looked up yet
        # Leader state.
        self.sched: Scheduler | None = None
        self.seq = 0
        self._batch_jobs: dict[int, tuple[str, str]] = {}  # batch -> (job, model)
        self._outputs_written: set[str] = set()
        self._standby_name: str | None = None
        self._standby_events: list[tuple[int, dict[str, Any]]] = []
        self._standby_wake = trio.Event()
        self._standby_needs_snapshot = True
        self._timer_wake = trio.Event()
        self._leadership_changed = trio.Event()
        self.timings_path = data_dir / "query_timings.csv"
        # Opened once, on the first result: the leader appends a row per query on
        # its event loop, so no open/close per batch.
        self._timings_file: TextIO | None = None
        self._timings: Any = None  # csv writer
        # Standby state: the leader's scheduler as of event copy_seq.
        self.copy: Scheduler | None = None
        self.copy_seq = 0
        self.copy_leader: str | None = None
        # Worker state.
        self._slot = trio.Lock()
        self._nursery: trio.Nursery | None = None

    # --- life cycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._leadership_loop)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._standby_loop)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.worker.aclose()
            if self._timings_file is not None:
                self._timings_file.close()

    def on_membership_event(self, event: MemberEvent, now: float) -> None:
        if self.sched is not None and self._nursery is not None:
            if event.kind in ("failed", "left"):
                self._apply(WorkerDown(event.name, time.time()))
            elif event.kind in ("joined", "rejoined") and event.name != self.me.name:
                self._nursery.start_soon(self._add_worker, event.name)
        self._leadership_changed.set()
        self._standby_wake.set()

    # --- helpers ---------------------------------------------------------------

    def capacity(self) -> dict[str, Any]:
        if self._gpu is False:
            self._gpu = _gpu_name()
        return {"threads": self.threads, "gpu": self._gpu or None, "slots": WORKER_SLOTS}

    # --- leadership ------------------------------------------------------------

    async def _leadership_loop(self) -> None:
        while True:
            leader = self.peers.leader()
            if leader == self.me.name and self.sched is None:
                await self._become_leader()
            elif leader != self.me.name and self.sched is not None:
                self.log.info(
                    "%s is no longer the scheduler (leader is now %s)", self.me.name, leader
                )
                self.sched = None
            with trio.move_on_after(1.0):
                await self._leadership_changed.wait()
            self._leadership_changed = trio.Event()

    async def _become_leader(self) -> None:
        now = time.time()
        live = self.peers.ring()
        if self.copy is not None and self.copy_leader not in (None, self.me.name):
            sched, self.seq = self.copy, self.copy_seq
            self.copy = None
            self.sched = sched
            jobs = len(sched.job_ids())
            self.log.warning(
                "%s takes over scheduling from %s at event %d (%d jobs)",
                self.me.name,
                self.copy_leader,
                self.seq,
                jobs,
            )
            self._apply(Takeover(tuple(live), now))
        else:
            self.sched = Scheduler(
                SchedulerConfig(
                    policy=self.config.inference.policy,
                    batch_size=self.config.inference.batch_size,
                )
            )
            self.seq = 0
            self.log.warning("%s is the scheduler (no standby copy to take over)", self.me.name)
        self._standby_needs_snapshot = True
        self._standby_wake.set()
        assert self._nursery is not None
        for name in live:
            self._nursery.start_soon(self._add_worker, name)
        # Jobs that finished under the old leader may not have their output yet.
        for job_id in self.sched.job_ids():
            if self.sched.status(job_id)["state"] in ("done", "failed"):
                self._nursery.start_soon(self._write_output, job_id, True)

    async def _add_worker(self, name: str) -> None:
        try:
            reply = await self.peers.call(name, CapacityRequest(), timeout=2.0)
            capacity = reply.capacity if isinstance(reply, Capacity) else {}
        except RpcError:
            return  # not reachable: membership will tell us if it is gone
        if self.sched is not None and name in self.peers.ring():
            self._apply(WorkerUp(name, capacity or {"threads": 1, "slots": 1}, time.time()))

    # --- applying events (leader) ----------------------------------------------

    def _apply(self, event: Event) -> list[Any]:
        """Apply one scheduler event, replicate it, log timings, carry out actions."""
        if self.sched is None:
            return []
        if isinstance(event, BatchDone):
            self._log_timings(event)
        actions = self.sched.handle(event)
        self.seq += 1
        self._standby_events.append((self.seq, event_to_plain(event)))
        self._standby_wake.set()
        self._timer_wake.set()
        self._execute(actions)
        return actions

    def _execute(self, actions: list[Any]) -> None:
        assert self._nursery is not None
        for a in actions:
            if isinstance(a, Assign):
                self._batch_jobs[a.batch_id] = (a.job_id, a.model)
                self._nursery.start_soon(self._send_batch, a)
            elif isinstance(a, JobFinished):
                self.log.warning("%s %s", a.job_id, a.state)
                self._nursery.start_soon(self._write_output, a.job_id, False)
            elif isinstance(a, JobStarted):
                self.log.info(
                    "%s (%s) started %.2f s after submission", a.job_id, a.model, a.waited
                )
            elif isinstance(a, JobAccepted):
                self.log.info("%s accepted: %s over %d inputs", a.job_id, a.model, a.total)
            elif isinstance(a, BatchLost):
                self.log.warning(
                    "batch %d of %s on %s lost (%s); %d queries requeued",
                    a.batch_id,
                    a.job_id,
                    a.worker,
                    a.reason,
                    a.requeued,
                )
            elif isinstance(a, QueryGaveUp):
                self.log.warning(
                    "%s query %d (%s) gave up: %s", a.job_id, a.index, a.input, a.error
                )

    async def _send_batch(self, a: Assign) -> None:
        request = AssignBatch(a.batch_id, a.job_id, a.model, tuple(a.queries))
        try:
            reply = await self.peers.call(a.worker, request)
        except RpcError as e:
            self._apply(
                BatchFailed(a.worker, a.batch_id, f"cannot reach {a.worker}: {e}", time.time())
            )
            return
        if not (isinstance(reply, StoreAck) and reply.ok):
            why = reply.error if isinstance(reply, (StoreAck, ErrorReply)) else str(reply)
            self._apply(BatchFailed(a.worker, a.batch_id, why, time.time()))

    def _log_timings(self, event: BatchDone) -> None:
        job_id, model = self._batch_jobs.get(event.batch_id, ("?", "?"))
        if self._timings_file is None:
            new = not self.timings_path.exists()
            self.timings_path.parent.mkdir(parents=True, exist_ok=True)
            self._timings_file = self.timings_path.open("a", newline="")
            self._timings = csv.writer(self._timings_file)
            if new:
                self._timings.writerow(
                    [
                        "finished_at",
                        "job_id",
                        "model",
                        "query",
                        "input",
                        "worker",
                        "batch_id",
                        "seconds",
                    ]
                )
        for (index, row), seconds in zip(event.results, event.timings, strict=False):
            self._timings.writerow(
                [
                    f"{event.now:.3f}",
                    job_id,
                    model,
                    index,
                    row.get("input", ""),
                    event.worker,
                    event.batch_id,
                    repr(float(seconds)),  # full precision: C2 is computed from these
                ]
            )
        # Flushed per batch: the CSV is read while jobs run (tests, people).
        self._timings_file.flush()

    async def _write_output(self, job_id: str, only_if_missing: bool) -> None:
        """Write outputs/JOB_ID.jsonl to SDFS (one line per query, in query order)."""
        if self.sched is None or job_id in self._outputs_written:
            return
        name = f"outputs/{job_id}.jsonl"
        if only_if_missing:
            with contextlib.suppress(ClusterError):
                await self.sdfs.client.ls(name)
                self._outputs_written.add(job_id)
                return
        rows = self.sched.results(job_id)
        tmp = self.data_dir / "outputs" / f"{job_id}-{uuid.uuid4().hex[:6]}.jsonl"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w") as f:
            for row in rows:
                out = {"input": row.get("input"), "top5": row.get("top5", [])}
                if row.get("error"):
                    out["error"] = row["error"]
                f.write(json.dumps(out) + "\n")
        try:
            for attempt in range(5):
                try:
                    await self.sdfs.client.put(tmp, name)
                    self._outputs_written.add(job_id)
                    self.log.warning("%s: %d results written to %s", job_id, len(rows), name)
                    return
                except ClusterError as e:
                    self.log.warning(
                        "%s: writing %s failed (attempt %d): %s", job_id, name, attempt + 1, e
                    )
                    await trio.sleep(1.0 + attempt)
        finally:
            tmp.unlink(missing_ok=True)

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.sched.next_deadline() if self.sched is not None else float("inf")
            wait = min(max(deadline - time.time(), 0.0), 1.0)
            with trio.move_on_after(wait):
                await self._timer_wake.wait()
            self._timer_wake = trio.Event()
            if self.sched is not None and time.time() >= self.sched.next_deadline():
                self._apply(Tick(time.time()))

    # --- hot standby -----------------------------------------------------------

    async def _standby_loop(self) -> None:
        """On the leader: keep the next live member's copy of the scheduler current."""
        while True:
            await self._standby_wake.wait()
            self._standby_wake = trio.Event()
            while self.sched is not None:
                ring = self.peers.ring()
                standby = ring[1] if len(ring) > 1 and ring[0] == self.me.name else None
                if standby != self._standby_name:
                    self._standby_name = standby
                    self._standby_needs_snapshot = True
                if standby is None:
                    self._standby_events.clear()
                    break
                try:
                    if self._standby_needs_snapshot:
                        seq, snap = self.seq, self.sched.snapshot()
                        self._standby_events = [e for e in self._standby_events if e[0] > seq]
                        reply = await self.peers.call(
                            standby, StandbySnapshot(self.me.name, seq, snap)
                        )
                        if isinstance(reply, StoreAck) and reply.ok:
                            self._standby_needs_snapshot = False
                        else:
                            await trio.sleep(0.5)
                        continue
                    if not self._standby_events:
                        break
                    # Everything queued goes in one request: under load that is many
                    # events per round trip, so replication never limits dispatch.
                    batch = self._standby_events[:STANDBY_BATCH]
                    events = tuple(plain for _, plain in batch)
                    reply = await self.peers.call(
                        standby, StandbyEvent(self.me.name, batch[0][0], events)
                    )
                    if isinstance(reply, StoreAck) and reply.ok:
                        del self._standby_events[: len(batch)]
                    else:
                        self._standby_needs_snapshot = True
                except RpcError as e:
                    self.log.debug("standby %s unreachable: %s", standby, e)
                    self._standby_needs_snapshot = True
                    await trio.sleep(0.5)

    def _standby_snapshot(self, msg: StandbySnapshot) -> StoreAck:
        self.copy = Scheduler.restore(msg.snapshot)
        self.copy_seq = msg.seq
        self.copy_leader = msg.leader
        self.log.info("standby copy of %s's scheduler at event %d", msg.leader, msg.seq)
        return StoreAck(True)

    def _standby_event(self, msg: StandbyEvent) -> StoreAck:
        if self.copy is None or msg.leader != self.copy_leader or msg.seq != self.copy_seq + 1:
            return StoreAck(False, "standby copy is behind; send a snapshot")
        for plain in msg.events:
            self.copy.handle(event_from_plain(plain))
            self.copy_seq += 1
        return StoreAck(True)

    # --- requests ----------------------------------------------------------------

    async def handle(self, request: Any, addr: Address) -> Any:
        if isinstance(request, AssignBatch):
            assert self._nursery is not None
            self._nursery.start_soon(self._run_batch, request)
            return StoreAck(True)
        if isinstance(request, BatchResult):
            if self.sched is None:
                return ErrorReply("not ready: this node is not the scheduler")
            now = time.time()
            if request.error:
                self._apply(BatchFailed(request.worker, request.batch_id, request.error, now))
            else:
                self._apply(
                    BatchDone(
                        request.worker,
                        request.batch_id,
                        tuple(request.results),
                        tuple(request.timings),
                        now,
                    )
                )
            return StoreAck(True)
        if isinstance(request, StandbySnapshot):
            return self._standby_snapshot(request)
        if isinstance(request, StandbyEvent):
            return self._standby_event(request)
        if isinstance(request, CapacityRequest):
            return Capacity(self.me.name, self.capacity())
        if isinstance(request, LeaderCommand):
            try:
                data = await self.leader_command(request.command, list(request.args))
            except CommandError as e:
                return ConsoleReply(False, {}, str(e))
            return ConsoleReply(True, data)
        return ErrorReply(f"unexpected request {type(request).__name__}")

    # --- console commands ----------------------------------------------------------

    async def command(self, command: str, args: list[str]) -> dict[str, Any]:
        """C1..C5 from any node: forwarded to the leader, but get-output runs here."""
        if command == "C4" and args[0] == "get-output":
            if len(args) != 3:
                raise CommandError("usage: C4 get-output JOB_ID LOCAL")
            return await self._get_output(args[1], Path(args[2]).expanduser())
        return await self._ask_leader(command, args)

    async def _ask_leader(self, command: str, args: list[str]) -> dict[str, Any]:
        if not self.membership.active:
            raise CommandError(f"{self.me.name} is not in the cluster; use 'join' first")
        deadline = trio.current_time() + REPORT_RETRY_WINDOW / 2
        last = "no leader known"
        while True:
            leader = self.peers.leader()
            if leader == self.me.name and self.sched is not None:
                return await self.leader_command(command, args)
            if leader is not None and leader != self.me.name:
                try:
                    reply = await self.peers.call(
                        leader, LeaderCommand(command, tuple(args)), timeout=30
                    )
                except RpcError as e:
                    last = f"leader {leader}: {e}"
                else:
                    if isinstance(reply, ConsoleReply):
                        if reply.ok:
                            return dict(reply.data)
                        if not reply.error.startswith("not ready"):
                            raise CommandError(reply.error)
                        last = reply.error
                    else:
                        last = f"leader {leader} answered {type(reply).__name__}"
            if trio.current_time() > deadline:
                raise CommandError(f"no scheduler answered ({last})")
            await trio.sleep(0.25)

    async def leader_command(self, command: str, args: list[str]) -> dict[str, Any]:
        sched = self.sched
        if sched is None:
            raise CommandError(f"not ready: {self.me.name} is not the scheduler")
        if command == "C1":
            return sched.c1(time.time())
        if command == "C2":
            return sched.c2()
        if command == "C3":
            model = _model_name(args[0])
            if not args[1].isdigit() or int(args[1]) < 1:
                raise CommandError(f"BATCH must be a whole number of at least 1, got {args[1]!r}")
            self._apply(SetBatchSize(model, int(args[1])))
            return {"model": model, "batch_size": sched.batch_size(model)}
        if command == "C5":
            return {"jobs": sched.assignments()}
        if command == "C4":
            action = args[0]
            if action == "status":
                if len(args) != 2:
                    raise CommandError("usage: C4 status JOB_ID")
                try:
                    status = sched.status(args[1])
                except KeyError:
                    raise CommandError(f"no such job: {args[1]}") from None
                return status
            if action == "submit-job":
                return await self._submit(sched, args[1], args[2] if len(args) > 2 else None)
            raise CommandError(f"unknown C4 action {action!r}: submit-job, status or get-output")
        raise CommandError(f"{command} is not an inference command")

    async def _submit(self, sched: Scheduler, model_arg: str, which: str | None) -> dict[str, Any]:
        model = _model_name(model_arg)
        if which is not None and which.isdigit():
            pool = await self.sdfs.client.ls_all("images/*")
            count = int(which)
            if count < 1 or count > len(pool):
                raise CommandError(
                    f"COUNT must be 1..{len(pool)} (the files in images/*), got {count}"
                )
            inputs = sorted(random.sample(pool, count))
        else:
            pattern = which or "images/*"
            inputs = await self.sdfs.client.ls_all(pattern)
            if not inputs:
                raise CommandError(f"no SDFS files match {pattern}; put some images first")
        if self.sched is not sched:
            raise CommandError("not ready: leadership moved while submitting")
        actions = self._apply(Submit(None, model, tuple(inputs), time.time()))
        accepted = next(a for a in actions if isinstance(a, JobAccepted))
        return {"job_id": accepted.job_id, "model": accepted.model, "queries": accepted.total}

    async def _get_output(self, job_id: str, local: Path) -> dict[str, Any]:
        status = await self._ask_leader("C4", ["status", job_id])
        if status["state"] not in ("done", "failed"):
            raise CommandError(
                f"{job_id} is {status['state']} ({status['done']} of {status['total']} queries "
                "done); get its output when it is done"
            )
        name = f"outputs/{job_id}.jsonl"
        deadline = trio.current_time() + OUTPUT_WAIT
        while True:
            try:
                await self.sdfs.client.get(name, local)
                break
            except NotFound:
                if trio.current_time() > deadline:
                    raise
                await trio.sleep(0.5)
        with local.open() as f:
            results = sum(1 for line in f if line.strip())
        return {"job_id": job_id, "results": results, "state": status["state"]}

    # --- worker ------------------------------------------------------------------

    async def _run_batch(self, req: AssignBatch) -> None:
        started = time.perf_counter()
        try:
            results, timings = await self._execute_batch(req)
            reply = BatchResult(self.me.name, req.batch_id, results, timings, "")
        except Exception as e:  # any failure goes back to the scheduler, not up
            why = str(e) if isinstance(e, CommandError) else f"{type(e).__name__}: {e}"
            self.log.warning("batch %d of %s failed: %s", req.batch_id, req.job_id, why)
            reply = BatchResult(self.me.name, req.batch_id, (), (), f"{self.me.name}: {why}")
        self.log.debug(
            "batch %d of %s: %d queries in %.3f s",
            req.batch_id,
            req.job_id,
            len(req.queries),
            time.perf_counter() - started,
        )
        await self._report(reply)

    async def _execute_batch(
        self, req: AssignBatch
    ) -> tuple[tuple[tuple[int, dict[str, Any]], ...], tuple[float, ...]]:
        names = [name for _, name in req.queries]
        if req.model == NOOP_MODEL:
            rows = tuple((i, {"input": name, "top5": []}) for i, name in req.queries)
            return rows, tuple(0.0 for _ in rows)
        # Fetching overlaps the batch before this one; running does not.
        weights = await self._weights(req.model)
        paths = await self._inputs(names)
        async with self._slot:
            reply = await self.worker.run(
                req.model,
                weights,
                [str(p) for p in paths],
                names,
                allow_download=self.config.inference.allow_download,
            )
        rows = reply["results"]
        timings = tuple(float(r.pop("seconds", 0.0)) for r in rows)
        return tuple((i, row) for (i, _), row in zip(req.queries, rows, strict=True)), timings

    async def _weights(self, model: str) -> Path | None:
        """The model's weights from SDFS, cached by version; None if SDFS has none."""
        name = weights_sdfs_name(model)
        try:
            info = await self.sdfs.client.ls(name)
        except NotFound:
            return None
        path = self.cache / "weights" / f"{model}-v{info.versions[0]}.pth"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            await self.sdfs.client.get(name, path)
        return path

    async def _inputs(self, names: list[str]) -> list[Path]:
        """Local paths for the inputs: our own replicas when we hold one, else a fetched copy."""
        paths: list[Path | None] = [None] * len(names)
        limiter = trio.CapacityLimiter(FETCH_PARALLELISM)
        fetch_dir = self.cache / "inputs"
        fetch_dir.mkdir(parents=True, exist_ok=True)

        async def one(i: int, name: str) -> None:
            held = self.sdfs.store.committed(name)
            if held and held[0].state == VersionState.COMMITTED:
                paths[i] = self.sdfs.store.data_path(name, held[0].version)
                return
            async with limiter:
                target = fetch_dir / f"{disk_name(name)}"
                await self.sdfs.client.get(name, target)
                paths[i] = target

        async with trio.open_nursery() as n:
            for i, name in enumerate(names):
                n.start_soon(one, i, name)
        return [p for p in paths if p is not None]

    async def _report(self, result: BatchResult) -> None:
        """Hand a batch's result to the leader, whoever that is by now."""
        deadline = trio.current_time() + REPORT_RETRY_WINDOW
        while True:
            leader = self.peers.leader()
            if leader is not None:
                try:
                    reply = await self.peers.call(leader, result, timeout=RPC_TIMEOUT)
                    if isinstance(reply, StoreAck) and reply.ok:
                        return
                except RpcError:
                    pass
            if trio.current_time() > deadline:
                self.log.warning("batch %d: no scheduler took its result", result.batch_id)
                return
            await trio.sleep(0.25)
