"""IDunno on one node: the roles composed, and the one object the node wires up.

Every node runs one :class:`InferenceService`, which holds four roles and routes
requests to them:

* leader (:mod:`inference.leader`): while this node is the first live member in ring
  order it owns the scheduler and answers the leader requests;
* hot standby (:mod:`inference.standby`): every node keeps the copy of the scheduler
  its leader sends it (the leader sends it to the next live member), and a leader's
  :class:`~inference.standby.Replicator` keeps its standby's copy current.  When the
  leader fails, the standby becomes the leader and takes over from its copy: batches
  on live workers stay where they are (their results come to it), those on dead
  workers go back to their jobs' queues.  Nothing done is lost, nothing is counted
  twice (the scheduler keeps exactly one result per query);
* worker (:mod:`inference.worker`): every live member, the leader included, runs the
  batches it is given and reports to whoever is leader by then.

The leadership loop here decides which of them is active: it follows membership (woken
by :meth:`InferenceService.on_membership_event`, and once a second regardless).
Clients (the console commands) talk to the leader through :mod:`inference.client`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from config.topology import ClusterConfig, Node
from inference import kinds
from inference.events import Event
from inference.files import FileStore
from inference.leader import LEADER_REQUESTS, Leader
from inference.standby import Replicator, StandbyCopy
from inference.worker import Worker
from inference.worker_client import default_threads
from membership.core import Event as MemberEvent
from membership.core import MembershipCore
from membership.peers import ClusterView, Peers
from net.codec import Codec
from net.messages import (
    AssignBatch,
    Capacity,
    CapacityRequest,
    ErrorReply,
    StandbyEvent,
    StandbySnapshot,
    StandbySnapshotPart,
)
from net.transport import Address

# Every request an inference service answers (the node routes these to handle()).
INFERENCE_REQUESTS = (
    AssignBatch,
    StandbyEvent,
    StandbySnapshot,
    StandbySnapshotPart,
    CapacityRequest,
    *LEADER_REQUESTS,
)
# The leadership loop looks again at least this often, even without a membership event.
LEADERSHIP_POLL = 1.0
# How long the leader holds a worker's result or a submission's answer at most while
# its standby catches up to it (see Leader.wait_replicated); under the workers' and
# clients' RPC timeout (5 s), so a slow standby costs time, not retries.
REPLICATION_WAIT = 3.0


class InferenceService:
    def __init__(
        self,
        config: ClusterConfig,
        me: Node,
        membership: MembershipCore,
        frames: Codec,
        files: FileStore,
        data_dir: Path,
        logger: logging.Logger | None = None,
        *,
        clock: Callable[[], float] = time.time,
        view: ClusterView | None = None,
    ) -> None:
        """``clock`` gives the scheduler's times: wall-clock seconds by default, since
        they must mean the same on a new leader.  ``view`` defaults to this node's own
        membership (:class:`~membership.peers.Peers`); tests pass an in-memory one."""
        self.me = me
        self.log = logger or logging.getLogger(f"inference.{me.name}")
        self.view: ClusterView = view or Peers(membership, config, frames, self.handle)
        nodes_here = sum(1 for n in config.nodes if n.host == me.host) or 1
        threads = config.inference.threads or default_threads(nodes_here)
        kinds.use_llms(config.llms)
        self.worker = Worker(
            me.name,
            self.view,
            files,
            config.inference,
            threads,
            data_dir,
            self.log,
            host=me.host,
            llms=config.llms,
        )
        self.copy = StandbyCopy(self.log)
        self.leader = Leader(
            me.name,
            self.view,
            files,
            config.inference,
            data_dir,
            clock,
            self.log,
            self._applied,
        )
        self.replicator = Replicator(me.name, self.view, self.leader.state, self.log)
        self.leader.wait_replicated = self._replicated
        self._leadership_changed = trio.Event()

    def _applied(self, seq: int, event: Event) -> None:
        self.replicator.push(seq, event)

    async def _replicated(self, seq: int) -> None:
        # Bounded: a slow or unreachable standby must not stop the cluster (the leader
        # then answers anyway; the replicator sends the standby a snapshot when it can).
        await self.replicator.replicated(seq, REPLICATION_WAIT)

    # --- life cycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.worker.run)
            await nursery.start(self.leader.run)
            nursery.start_soon(self.replicator.run)
            nursery.start_soon(self._leadership_loop)
            task_status.started()

    def on_membership_event(self, event: MemberEvent, now: float) -> None:
        if self.leader.active:
            if event.kind in ("failed", "left"):
                self.leader.worker_down(event.name)
            elif event.kind in ("joined", "rejoined") and event.name != self.me.name:
                self.leader.worker_joined(event.name)
        self._leadership_changed.set()
        self.replicator.wake()  # the standby may be another member now

    async def _leadership_loop(self) -> None:
        while True:
            leader = self.view.leader()
            if leader == self.me.name and not self.leader.active:
                self.replicator.clear()  # events of an earlier leadership are not the copy's
                self.leader.become(self.copy.take(self.me.name), self.view.ring())
                self.replicator.restart()
            elif leader != self.me.name and self.leader.active:
                self.leader.step_down(leader)
            with trio.move_on_after(LEADERSHIP_POLL):
                await self._leadership_changed.wait()
            self._leadership_changed = trio.Event()

    # --- requests ----------------------------------------------------------------

    async def handle(self, request: Any, addr: Address) -> Any:
        if isinstance(request, AssignBatch):
            return self.worker.assign(request)
        if isinstance(request, CapacityRequest):
            return Capacity(self.me.name, self.worker.capacity())
        if isinstance(request, StandbySnapshot):
            return self.copy.snapshot(request)
        if isinstance(request, StandbySnapshotPart):
            return self.copy.part(request)
        if isinstance(request, StandbyEvent):
            return self.copy.events(request)
        if isinstance(request, LEADER_REQUESTS):
            return await self.leader.handle(request)
        return ErrorReply(f"unexpected request {type(request).__name__}")
