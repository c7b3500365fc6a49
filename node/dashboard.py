"""The dashboard's data: built on the leader, fetched by whichever node serves the page.

The page (``web/static``) polls its own node's ``/api/dashboard`` every second.  That
node asks the leader with a typed :class:`~net.messages.DashboardRequest` through
:func:`membership.peers.call_leader` (retried while leadership moves, for
:data:`FETCH_WINDOW` seconds), so the data always comes from the current leader and a
killed leader's successor shows up by itself.  Several pages polling one node share
one request per :data:`FETCH_TTL`.

On the leader, :func:`build` turns the scheduler, the busy record
(:mod:`inference.busy`) and the SDFS leader's metadata into the reply.  Everything is
bounded so that the reply fits a frame and costs little to build whatever the
cluster's size (:data:`LIMITS`, also sent to the page, which says so):

* jobs: the :data:`MAX_JOBS` most recently submitted the leader still knows (running,
  queued, finished and not yet forgotten, and finished ones seen by an earlier poll);
* rates over time: C1's 10-second rate sampled every :data:`RATE_STEP` seconds over
  the last :data:`RATE_SPAN` seconds (each sample's window lies within the last
  minute); latency: C2's percentiles as they are;
* busy spans: those that ended in the last :data:`BUSY_HORIZON` seconds, at most
  :data:`MAX_SPANS` (the newest);
* SDFS: files and bytes per live node (every version each holds), and per file
  (replicas of the newest version, the versions kept) for the ``files`` most recently
  changed files (at most :data:`MAX_FILES`).  Summing every file is O(files), so the
  summary is counted at most once per :data:`SDFS_TTL` seconds (less often when that
  would take more than :data:`SDFS_SHARE` of the leader's time), in slices of
  :data:`SDFS_CHUNK` files with the event loop running between them, and a stale one
  is answered while the next is counted.

:func:`build` and :func:`sdfs_summary` are pure (times are arguments); the
:class:`DashboardSource` shell holds the caches and does the requests.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import trio
import trio.lowlevel

from inference.busy import BusyRecord
from membership.peers import Peers
from net.errors import ClusterError, NotReady, expect, to_failure
from net.messages import Dashboard, DashboardRequest, Failure, VersionRecord, VersionState
from sdfs.leader import LeaderState

if TYPE_CHECKING:
    from inference.scheduler import Scheduler
    from node.app import NodeApp
    from sdfs.metadata import Metadata

RATE_SPAN = 50.0
RATE_STEP = 2.0
BUSY_HORIZON = 60.0
MAX_SPANS = 1000
MAX_JOBS = 20
MAX_FILES = 200
DEFAULT_FILES = 50
SDFS_TTL = 5.0
# Files summed per slice (a few milliseconds), and the share of the leader's time the
# summary may take: with many files it is recomputed less often than SDFS_TTL.
SDFS_CHUNK = 1000
SDFS_SHARE = 0.01
# The serving node: a reply is reused this long, and the leader asked for this long
# (each attempt at most FETCH_TIMEOUT) before the page hears why not.
FETCH_TTL = 0.5
FETCH_WINDOW = 4.0
FETCH_TIMEOUT = 2.0

COMMITTED = int(VersionState.COMMITTED)

LIMITS: dict[str, Any] = {
    "jobs": MAX_JOBS,
    "rate_span_s": RATE_SPAN,
    "rate_step_s": RATE_STEP,
    "busy_horizon_s": BUSY_HORIZON,
    "busy_spans": MAX_SPANS,
    "files": MAX_FILES,
    "sdfs_refresh_s": SDFS_TTL,
}


def rate_series(sched: Scheduler, model: str, now: float) -> list[list[float]]:
    """``[[t, rate], ...]``: C1's rate of ``model`` at times ``t`` over the last
    RATE_SPAN seconds, oldest first, ``t`` on the leader's clock."""
    steps = int(RATE_SPAN / RATE_STEP)
    times = [now - RATE_STEP * k for k in range(steps, -1, -1)]
    return [[t, sched.stats.rate(model, t)] for t in times]


def jobs_view(sched: Scheduler, known: Iterable[str]) -> list[dict[str, Any]]:
    """C4 status of the MAX_JOBS most recently submitted jobs among ``known`` and the
    scheduler's own, newest first, each with the workers running its batches (C5)."""
    running = sched.assignments()
    out = []
    for job_id in dict.fromkeys([*known, *sched.job_ids()]):
        try:
            status = dict(sched.status(job_id))
        except KeyError:
            continue  # forgotten long ago, or a job of another leadership's history
        status["workers"] = running.get(job_id, {}).get("workers", [])
        out.append(status)
    # Newest first; among jobs submitted at once, job-10 after job-9 (ids count up).
    out.sort(
        key=lambda s: (s.get("submitted_at") or 0.0, len(s["job_id"]), s["job_id"]),
        reverse=True,
    )
    return out[:MAX_JOBS]


def workers_view(sched: Scheduler) -> dict[str, Any]:
    """Per worker: batches in flight, the jobs they belong to, stalled or not."""
    out: dict[str, Any] = {}
    for name, w in sched.workers().items():
        jobs = {j[0] for j in (sched.batch_job(b) for b in w["batches"]) if j is not None}
        out[name] = {
            "batches": len(w["batches"]),
            "slots": w["slots"],
            "stalled": w["stalled"],
            "jobs": sorted(jobs),
        }
    return out


def models_view(sched: Scheduler, now: float) -> dict[str, Any]:
    """Per model: C1 (rate now, count), the rate over time, and C2 (latency)."""
    c1 = sched.c1(now)["models"]
    c2 = sched.c2()["models"]
    return {
        model: {
            **c1.get(model, {}),
            "latency": c2.get(model, {}),
            "rates": rate_series(sched, model, now),
        }
        for model in sorted(set(c1) | set(c2))
    }


def sdfs_summary_steps(
    metadata: Metadata, live: Sequence[str], files: int, chunk: int = SDFS_CHUNK
) -> Generator[None, None, dict[str, Any]]:
    """:func:`sdfs_summary` in slices: it yields after every ``chunk`` files, so that
    the leader's event loop runs between them (the caller awaits there), and returns
    the summary.  Files created meanwhile are not counted; files deleted meanwhile are
    skipped (the names are taken once, at the start)."""
    alive = set(live)
    nodes = {n: {"files": 0, "bytes": 0} for n in live}
    total_files = 0
    total_bytes = 0
    newest: list[tuple[float, str]] = []  # a heap of the `files` latest changes
    names = list(metadata.files)
    for i, name in enumerate(names):
        if i and i % chunk == 0:
            yield
        f = metadata.files.get(name)
        if f is None:
            continue
        top: VersionRecord | None = None
        held: dict[str, int] = {}
        for v in f.versions.values():
            r = v.record
            if r.state != COMMITTED or r.version <= f.tombstone:
                continue
            if top is None or r.version > top.version:
                top = r
            for h in v.holders:
                if h in alive:
                    held[h] = held.get(h, 0) + r.size
        if top is None:
            continue
        total_files += 1
        total_bytes += top.size
        for h, size in held.items():
            counts = nodes[h]
            counts["files"] += 1
            counts["bytes"] += size
        key = (f.touched, name)
        if len(newest) < files:
            heapq.heappush(newest, key)
        elif files > 0 and key > newest[0]:
            heapq.heapreplace(newest, key)
    table = []
    for touched, name in sorted(newest, reverse=True):
        f = metadata.files.get(name)
        versions = f.committed() if f is not None else []
        if not versions:
            continue  # deleted meanwhile
        table.append(
            {
                "name": name,
                "replicas": sorted(versions[0].holders & alive),
                "versions": [v.record.version for v in versions],
                "bytes": versions[0].record.size,
                "changed_at": touched,
            }
        )
    return {
        "nodes": nodes,
        "files": table,
        "total_files": total_files,
        "total_bytes": total_bytes,
        "replication": metadata.replication,
    }


def sdfs_summary(metadata: Metadata, live: Sequence[str], files: int) -> dict[str, Any]:
    """Files and bytes per live node (each version it holds counts), and the ``files``
    most recently changed files with their newest version's replicas and the versions
    kept.  O(files x versions): the leader computes it in slices
    (:func:`sdfs_summary_steps`) and reuses it (SDFS_TTL)."""
    steps = sdfs_summary_steps(metadata, live, files)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            summary: dict[str, Any] = done.value
            return summary


def build(
    me: str,
    sched: Scheduler,
    busy: BusyRecord,
    now: float,
    sdfs: dict[str, Any],
    known_jobs: Iterable[str] = (),
) -> Dashboard:
    """The leader's reply to a DashboardRequest (see the module docstring)."""
    spans = busy.spans(now, BUSY_HORIZON, MAX_SPANS)
    return Dashboard(
        leader=me,
        now=now,
        jobs=tuple(jobs_view(sched, [*known_jobs, *(s.job_id for s in spans)])),
        workers=workers_view(sched),
        models=models_view(sched, now),
        busy=tuple(spans),
        sdfs=sdfs,
        limits=LIMITS,
    )


def to_json(reply: Dashboard, served_by: str) -> dict[str, Any]:
    """What ``/api/dashboard`` answers: the reply as JSON, spans as arrays."""
    return {
        "served_by": served_by,
        "leader": reply.leader,
        "now": reply.now,
        "jobs": list(reply.jobs),
        "workers": reply.workers,
        "models": reply.models,
        "busy": [[s.worker, s.job_id, s.model, s.start, s.end, s.queries] for s in reply.busy],
        "sdfs": reply.sdfs,
        "limits": reply.limits,
    }


class DashboardSource:
    """The node's side: answers DashboardRequest while it leads, and fetches the
    leader's answer for its own pages."""

    def __init__(self, node: NodeApp) -> None:
        self.node = node
        # Requests to this node itself are answered in-process by the node's handler.
        self.peers = Peers(node.core, node.config, node.frames, node.handle_request)
        self._sdfs: tuple[float, int, dict[str, Any]] | None = None
        self._sdfs_due = 0.0
        self._counting = False
        self._known: list[str] = []  # the jobs the last answer listed
        self._fetched: tuple[float, int, dict[str, Any]] | None = None
        self._lock = trio.Lock()

    # --- on the leader ---------------------------------------------------------

    async def answer(self, request: DashboardRequest) -> Dashboard | Failure:
        leader = self.node.inference.leader
        sched = leader.sched
        not_ready = to_failure(NotReady(f"not ready: {self.node.me.name} is not the scheduler"))
        if sched is None or not leader.holds_lease():
            return not_ready
        files = max(0, min(int(request.files), MAX_FILES))
        sdfs = await self._sdfs_summary(files)
        if leader.sched is not sched:  # stopped leading while the files were counted
            return not_ready
        reply = build(self.node.me.name, sched, leader.busy, leader.clock(), sdfs, self._known)
        # Jobs listed now stay listed (while the scheduler still answers their status,
        # and until newer ones push them out) after the scheduler forgets them, so a
        # finished job does not vanish from the page.
        self._known = [j["job_id"] for j in reply.jobs]
        return reply

    async def _sdfs_summary(self, files: int) -> dict[str, Any]:
        """The cached summary; a stale one is refreshed in the background (the first
        one, or one for another ``files``, is awaited)."""
        cached = self._sdfs
        fresh = cached is not None and trio.current_time() < self._sdfs_due
        if cached is not None and cached[1] == files and (fresh or self._counting):
            return cached[2]
        nursery = self.node._nursery  # the node's own tasks (node/ is one package)
        if cached is not None and cached[1] == files and nursery is not None:
            nursery.start_soon(self._count, files)
            return cached[2]
        return await self._count(files)

    async def _count(self, files: int) -> dict[str, Any]:
        leader = self.node.sdfs.leader
        metadata = leader.metadata
        if metadata is None or leader.state is not LeaderState.READY:
            return {"error": f"{self.node.me.name} is rebuilding the file metadata"}
        self._counting = True
        try:
            started = trio.current_time()
            busy = 0.0
            steps = sdfs_summary_steps(metadata, self.node.sdfs.peers.ring(), files)
            while True:
                t = time.perf_counter()
                try:
                    next(steps)
                except StopIteration as done:
                    summary: dict[str, Any] = done.value
                    busy += time.perf_counter() - t
                    break
                busy += time.perf_counter() - t
                await trio.lowlevel.checkpoint()  # the event loop runs between slices
            summary["at"] = self.node.inference.leader.clock()
            self._sdfs = (started, files, summary)
            # At most SDFS_SHARE of the leader's time goes to counting files.
            self._sdfs_due = trio.current_time() + max(SDFS_TTL, busy / SDFS_SHARE)
            return summary
        finally:
            self._counting = False

    # --- on the node that serves the page -----------------------------------------

    async def fetch(self, files: int = DEFAULT_FILES) -> dict[str, Any]:
        """The leader's dashboard data as JSON; ClusterError (one line) if no leader
        answered within FETCH_WINDOW."""
        files = max(0, min(files, MAX_FILES))
        async with self._lock:  # concurrent polls wait for one request, then share it
            cached = self._fetched
            now = trio.current_time()
            if cached is not None and cached[1] == files and now - cached[0] < FETCH_TTL:
                return cached[2]
            try:
                reply = await self.peers.call_leader(
                    DashboardRequest(files), FETCH_TIMEOUT, FETCH_WINDOW
                )
                data = to_json(expect(reply, Dashboard, "dashboard"), self.node.me.name)
            except ClusterError:
                self._fetched = None
                raise
            self._fetched = (trio.current_time(), files, data)
            return data
