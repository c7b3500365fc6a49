"""IDunno on one node: the roles composed, and the one object the node wires up.

Every node runs one :class:`InferenceService`, which holds four roles and routes
requests to them:

* leader (:mod:`inference.leader`): while this node is the first live member in ring
  order AND holds the majority lease, it owns the scheduler and answers the leader
  requests;
* hot standby (:mod:`inference.standby`): every node keeps the copy of the scheduler
  its leader sends it, and a leader's :class:`~inference.standby.Replicator` per
  standby keeps those copies current.  When the leader fails, the next one takes over
  from the freshest copy (below): batches on live workers stay where they are (their
  results come to it), those on dead workers go back to their jobs' queues.  Nothing
  done is lost, nothing is counted twice (the scheduler keeps exactly one result per
  query);
* worker (:mod:`inference.worker`): every live member, the leader included, runs the
  batches it is given and reports to whoever is leader by then.

Partitions: only a majority schedules
-------------------------------------
The node that is first in ring order may schedule only while it holds a lease of a
majority of the configured nodes (``lease``: the term it holds, or None).  The lease
is the SDFS leader's (``SdfsLeader.lease_term()``): its terms only grow, two nodes
never hold one term, and a term is granted only after every earlier lease expired.
A service built without one (tests of inference alone) uses :func:`majority_in_view`
(see its caveats).

* The leader replicates every event to ``majority - 1`` standbys plus
  ``SPARE_STANDBYS`` (the members after it in ring order), and acknowledges a worker's
  result or a client's submission only once ``majority - 1`` of them hold it and it
  still holds its lease (within ``REPLICATION_WAIT``; else the answer is a refusal:
  workers offer the result again, clients hear "no majority").  So every acknowledged
  event is on a majority of the configured nodes, tagged with the term it was made in.
* A leader that loses its lease (a minority side) or its place in the ring stops:
  it sends no batch, takes no result, answers clients NO_QUORUM "no majority: ...",
  and keeps its state as this node's copy, tagged with its term.
* A node that becomes first in ring order and holds lease term T asks every live
  member which state it holds (:class:`~net.messages.CopyStateRequest`: its copy's
  leader, term and event number); with answers from a majority of the configured
  nodes (itself included) it takes the freshest, highest (term, seq), its own on a
  tie, fetching it part by part (:class:`~net.messages.CopyPartRequest`) when
  another node holds it, and applies ``Takeover`` under term T.  Any majority
  intersects the majority that holds an acknowledged event, and copies never go back
  to an older term, so the freshest state holds every acknowledged event: after a
  heal the ring-first node continues the majority's history, not its own stale one.
* Each leadership gives out batch ids from its term's range (``T x TERM_BATCHES``), and
  an answer from another worker than the batch's is a stray: a late answer to a batch
  of another leadership never counts for this one's.  Results are kept per query
  index, first one wins: every query of every job appears once in its output.

What it does not promise: the copies are in memory, so a majority that crashes (not
cut off) loses the state; a submission refused with "may run anyway" may still run on
the side that made it, and its job id may later be reused by the majority's history.

The leadership loop here decides which role is active: it follows membership (woken
by :meth:`InferenceService.on_membership_event`, and once a second regardless) and the
lease.  Clients (the console commands) talk to the leader through
:mod:`inference.client`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trio

from config.topology import ClusterConfig, Node
from inference import kinds
from inference.events import Event
from inference.files import FileStore
from inference.leader import LEADER_REQUESTS, Leader, Lease
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
    CopyPartRequest,
    CopyState,
    CopyStateRequest,
    ErrorReply,
    StandbyEvent,
    StandbySnapshot,
    StandbySnapshotPart,
)
from net.rpc import RpcError
from net.transport import Address

# Every request an inference service answers (the node routes these to handle()).
INFERENCE_REQUESTS = (
    AssignBatch,
    StandbyEvent,
    StandbySnapshot,
    StandbySnapshotPart,
    CapacityRequest,
    CopyStateRequest,
    CopyPartRequest,
    *LEADER_REQUESTS,
)
# The leadership loop looks again at least this often, even without a membership event.
LEADERSHIP_POLL = 1.0
# How long the leader holds a worker's result or a submission's answer at most while
# its standby catches up to it (see Leader.wait_replicated); under the workers' and
# clients' RPC timeout (5 s), so a slow standby costs time, not retries.
REPLICATION_WAIT = 3.0
# Standbys beyond the majority - 1 that an acknowledgement waits for: with one spare,
# one standby down (until membership replaces it) does not hold acknowledgements up.
SPARE_STANDBYS = 1
# How long a node taking over waits for each member's answer (its copy's term and
# event number, then each part of the freshest copy).
TAKEOVER_CALL_TIMEOUT = 2.0


def majority(n: int) -> int:
    """The fewest of ``n`` configured nodes that are a majority."""
    return n // 2 + 1


def majority_in_view(view: ClusterView, configured: Iterable[str]) -> Lease:
    """The lease of an InferenceService built without one (tests of inference alone; a
    node passes its SDFS leader's ``lease_term``, see node/app.py): term 1 while a
    majority of the configured nodes are live members in this node's own view, else
    None.

    It stops a minority side from scheduling once its membership has removed the
    other side (a few seconds after the split), but it is no lease: both sides may
    hold "term 1" for those seconds, and with one term for every leadership a takeover
    after a heal tells states apart by event number alone (the longer history wins,
    not necessarily the majority's).  The real lease's terms grow, and a new term is
    granted only after every earlier lease expired: the guarantees in this module's
    docstring are stated for it."""
    names = frozenset(configured)
    need = majority(len(names))

    def lease() -> int | None:
        return 1 if len(names.intersection(view.ring())) >= need else None

    return lease


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
        lease: Lease | None = None,
    ) -> None:
        """``clock`` gives the scheduler's times: wall-clock seconds by default, since
        they must mean the same on a new leader.  ``view`` defaults to this node's own
        membership (:class:`~membership.peers.Peers`); tests pass an in-memory one.
        ``lease`` says which majority-lease term this node holds now (None: none); the
        default is the fallback :func:`majority_in_view`."""
        self.me = me
        self.log = logger or logging.getLogger(f"inference.{me.name}")
        self.view: ClusterView = view or Peers(membership, config, frames, self.handle)
        self.configured = tuple(n.name for n in config.nodes)
        self.lease: Lease = lease or majority_in_view(self.view, self.configured)
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
            self.lease,
        )
        # Without the lease but with a majority in view, the lease is being taken (after
        # a heal, or a change of leader): clients then retry instead of hearing "no
        # majority".
        in_view = majority_in_view(self.view, self.configured)
        self.leader.majority_in_view = lambda: in_view() is not None
        # One replicator per standby: the majority - 1 members after this one in ring
        # order and SPARE_STANDBYS more (one at least, idle in a cluster of one); an
        # acknowledgement waits for majority - 1 of them.
        n = len(self.configured)
        self.copies_needed = majority(n) - 1
        standbys = max(1, min(self.copies_needed + SPARE_STANDBYS, n - 1))
        self.replicators = [
            Replicator(me.name, self.view, self.leader.state, self.log, rank)
            for rank in range(1, standbys + 1)
        ]
        self._acked = trio.Event()  # set (and replaced) whenever a standby acknowledges
        for r in self.replicators:
            r.on_acked = self._on_acked
        self.leader.wait_replicated = self._replicated
        self._leadership_changed = trio.Event()

    @property
    def replicator(self) -> Replicator:
        """The first standby's replicator (the next member in ring order)."""
        return self.replicators[0]

    def replication_report(self) -> str:
        return "; ".join(f"standby {r.rank}: {r.report()}" for r in self.replicators)

    def _applied(self, seq: int, event: Event) -> None:
        for r in self.replicators:
            r.push(seq, event)

    async def _replicated(self, seq: int) -> bool:
        """Wait until ``copies_needed`` standbys hold event ``seq``: with this node, a
        majority of the configured nodes.  False after REPLICATION_WAIT: the leader then
        refuses to acknowledge (see Leader._replicated), so whatever was acknowledged
        is on a majority, and so on at least one node of any majority that a later
        leader hears from when it takes over."""
        with trio.move_on_after(REPLICATION_WAIT):
            while sum(r.acked >= seq for r in self.replicators) < self.copies_needed:
                await self._acked.wait()
            return True
        return False

    def _on_acked(self) -> None:
        self._acked.set()
        self._acked = trio.Event()

    # --- life cycle ------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.worker.run)
            await nursery.start(self.leader.run)
            for r in self.replicators:
                nursery.start_soon(r.run)
            nursery.start_soon(self._leadership_loop)
            task_status.started()

    def on_membership_event(self, event: MemberEvent, now: float) -> None:
        if self.leader.active:
            if event.kind in ("failed", "left"):
                self.leader.worker_down(event.name)
            elif event.kind in ("joined", "rejoined") and event.name != self.me.name:
                self.leader.worker_joined(event.name)
        self._leadership_changed.set()
        for r in self.replicators:
            r.wake()  # the standbys may be other members now

    async def _leadership_loop(self) -> None:
        while True:
            leader = self.view.leader()
            term = self.lease() if leader == self.me.name else None
            if self.leader.active and (leader != self.me.name or term != self.leader.term):
                if leader != self.me.name:
                    why = f"the leader is now {leader}"
                elif term is None:
                    why = "lost its majority lease"
                else:
                    why = f"its lease is now term {term}"
                self._step_down(why)
            if term is not None and not self.leader.active:
                await self._take_over(term)
            with trio.move_on_after(LEADERSHIP_POLL):
                await self._leadership_changed.wait()
            self._leadership_changed = trio.Event()

    def _step_down(self, why: str) -> None:
        state = self.leader.step_down(why)
        if state is not None:
            sched, seq, term = state
            self.copy.keep(sched, self.me.name, term, seq)

    async def _take_over(self, term: int) -> bool:
        """Become the scheduler under lease ``term``, from the freshest state a majority
        of the configured nodes holds (this node's own if none is fresher); False when
        fewer than a majority answered or the copy could not be fetched (the loop tries
        again)."""
        live = self.view.ring()
        answers: dict[str, CopyState] = {self.me.name: self.copy.state(self.me.name)}

        async def ask(name: str) -> None:
            try:
                reply = await self.view.call(
                    name, CopyStateRequest(term), timeout=TAKEOVER_CALL_TIMEOUT
                )
            except RpcError as e:
                self.log.info("takeover: %s did not say what it holds: %s", name, e)
                return
            if isinstance(reply, CopyState) and reply.node == name:
                answers[name] = reply

        async with trio.open_nursery() as nursery:
            for name in live:
                if name != self.me.name:
                    nursery.start_soon(ask, name)
        need = majority(len(self.configured))
        heard = [n for n in answers if n in self.configured]
        if len(heard) < need:
            self.log.warning(
                "takeover under term %d: %d of %d configured nodes answered (%d needed); "
                "trying again",
                term,
                len(heard),
                len(self.configured),
                need,
            )
            return False
        if self.lease() != term or self.view.leader() != self.me.name:
            return False  # it moved while we asked
        # The freshest state: highest (term, event number); this node's own on a tie.
        best = max(
            (a for a in answers.values() if a.leader),
            key=lambda a: (a.term, a.seq, a.node == self.me.name),
            default=None,
        )
        if best is not None and best.node != self.me.name and not await self._fetch(best):
            return False
        for r in self.replicators:
            r.clear()  # events of an earlier leadership are not the copies'
        self.leader.become(self.copy.take(), self.view.ring(), term)
        for r in self.replicators:
            r.restart()
        return True

    async def _fetch(self, best: CopyState) -> bool:
        """Fetch ``best``'s state, part by part, into this node's copy."""
        part, parts = 0, 1
        while part < parts:
            try:
                reply = await self.view.call(
                    best.node,
                    CopyPartRequest(best.term, best.seq, part),
                    timeout=TAKEOVER_CALL_TIMEOUT,
                )
            except RpcError as e:
                self.log.warning("takeover: cannot fetch %s's copy: %s", best.node, e)
                return False
            if not isinstance(reply, StandbySnapshotPart):
                why = reply.error if isinstance(reply, ErrorReply) else type(reply).__name__
                self.log.warning("takeover: %s's copy: %s", best.node, why)
                return False
            ack = self.copy.part(reply)
            if not ack.ok:
                self.log.warning("takeover: %s's copy refused here: %s", best.node, ack.error)
                return False
            part, parts = part + 1, reply.parts
        self.log.warning(
            "takeover: fetched %s's copy of %s's scheduler (term %d event %d)",
            best.node,
            best.leader,
            best.term,
            best.seq,
        )
        return True

    def _copy_state(self, request: CopyStateRequest) -> CopyState:
        if self.leader.active and request.term > self.leader.term:
            # Someone holds a newer lease: this node's lease is over, whether or not
            # its loop has seen it yet.  Its state becomes its copy, to be fetched.
            self._step_down(f"{request.term} is a newer term than its {self.leader.term}")
            self._leadership_changed.set()
        if self.leader.active:
            state = self.leader.state()
            assert state is not None
            return CopyState(self.me.name, self.me.name, state[2], state[1])
        return self.copy.state(self.me.name)

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
        if isinstance(request, CopyStateRequest):
            return self._copy_state(request)
        if isinstance(request, CopyPartRequest):
            if self.leader.active:
                return ErrorReply(f"{self.me.name} is scheduling; its copy is not to take")
            return self.copy.fetch(request)
        if isinstance(request, LEADER_REQUESTS):
            return await self.leader.handle(request)
        return ErrorReply(f"unexpected request {type(request).__name__}")
