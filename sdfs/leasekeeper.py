"""The leader's side of the majority lease (sdfs.lease): rounds, renewals, the write term.

:class:`LeaseKeeper` is the thin shell around :class:`~sdfs.lease.Follower`: it
answers other leaders' rounds for this member, and, while this member leads, asks the
configured live members for promises (a *round*: LeaseRenew to each, done as soon as
a majority said yes, the rest cancelled), renews every ``RENEW_INTERVAL``, records
granted numbers (:meth:`LeaseKeeper.journal`), and reads the floors of the members
that promised it.  :class:`~sdfs.leader.SdfsLeader` decides when to take the lease
and rebuilds its metadata under a new term; it may write only while
:meth:`LeaseKeeper.held` names a term.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from config.topology import ClusterConfig
from membership.peers import ClusterView
from net.errors import ClusterError, NoQuorum, NotReady
from net.messages import Floor, FloorsPage, FloorsRequest, LeaseRenew, LeaseReply
from net.rpc import RpcError
from sdfs.lease import LEASE, LEASE_SAFETY, RENEW_INTERVAL, ROUND_TIMEOUT, Follower, majority

# Every member answers these, leader or not.
LEASE_REQUESTS = (LeaseRenew, FloorsRequest)


class LeaseKeeper:
    def __init__(
        self,
        config: ClusterConfig,
        name: str,
        view: ClusterView,
        log: logging.Logger,
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.name = name
        self.view = view
        self.log = log
        self.clock = clock
        self.follower: Follower | None = None  # made when the node starts (its boot time)
        self.term = 0  # the last term this member held (or tried to)
        self.outbid = 0  # the highest term a member said it promised to another
        self.until = -1.0  # the lease is ours until then (our clock)
        self.written = 0  # the term the leader's metadata was rebuilt under
        self.voters: list[str] = []  # who promised in the last round that succeeded

    def start(self) -> None:
        self.follower = Follower(self.clock())

    # --- state -------------------------------------------------------------------------

    def valid(self) -> bool:
        return self.clock() < self.until

    def held(self) -> int | None:
        """The term to write under: the lease is ours and the metadata was rebuilt
        under it; None otherwise."""
        if self.written and self.written == self.term and self.valid():
            return self.term
        return None

    def drop(self) -> None:
        """We stopped leading: forget the lease (its promises run out by themselves)."""
        self.until, self.written = -1.0, 0

    def configured(self) -> tuple[int, list[str]]:
        """(configured nodes, those of them live in our view)."""
        names = [n.name for n in self.config.nodes]
        live = set(self.view.ring())
        return len(names), [n for n in names if n in live]

    def majority_in_view(self) -> bool:
        total, live = self.configured()
        return len(live) >= majority(total)

    def no_majority(self) -> NoQuorum:
        total, live = self.configured()
        return NoQuorum(
            f"no majority: {self.name} reaches {len(live)} of {total} configured nodes; "
            f"writes need {majority(total)}"
        )

    def writable(self) -> int:
        """The term to write under; NoQuorum (minority) or NotReady (taking the lease)."""
        term = self.held()
        if term is not None:
            return term
        if not self.majority_in_view():
            raise self.no_majority()
        raise NotReady(f"{self.name} is taking the write lease (term {self.term + 1})")

    # --- rounds --------------------------------------------------------------------------

    async def round(self, term: int, floors: Sequence[Floor] = ()) -> bool:
        """Ask the configured live members to promise ``term`` (and record ``floors``);
        True, with the lease extended, once a majority did."""
        assert self.follower is not None
        asked = self.clock()
        total, voters = self.configured()
        need = majority(total)
        if len(voters) < need:
            return False
        yes: list[str] = []
        finished = 0
        enough = trio.Event()

        def count(node: str, reply: object) -> None:
            if isinstance(reply, LeaseReply):
                if reply.ok:
                    yes.append(node)
                else:
                    self.outbid = max(self.outbid, reply.term)

        async def ask(node: str) -> None:
            nonlocal finished
            try:
                if node == self.name:
                    assert self.follower is not None
                    count(node, self.follower.renew(self.name, term, floors, self.clock()))
                else:
                    msg = LeaseRenew(term, self.name, tuple(floors))
                    with contextlib.suppress(RpcError):
                        count(node, await self.view.call(node, msg, ROUND_TIMEOUT))
            except ClusterError:
                pass  # our own follower refused bad floors: counted as a no
            finally:
                finished += 1
                if len(yes) >= need or finished == len(voters):
                    enough.set()

        async with trio.open_nursery() as n:
            for node in voters:
                n.start_soon(ask, node)
            await enough.wait()
            n.cancel_scope.cancel()
        if len(yes) < need:
            return False
        self.until = max(self.until, asked + LEASE * LEASE_SAFETY)
        self.voters = yes
        return True

    async def take(self) -> bool:
        """One round for the lease in a new term."""
        assert self.follower is not None
        self.written = 0
        term = max(self.term, self.outbid, self.follower.promise.term) + 1
        if not await self.round(term):
            return False
        self.term = term
        return True

    async def renew_loop(self, leading: Callable[[], bool]) -> None:
        """While ``leading()`` and the lease holds, renew it (also during a rebuild)."""
        while True:
            await trio.sleep(RENEW_INTERVAL)
            if leading() and self.valid():
                await self.round(self.term)

    async def journal(self, floors: Sequence[Floor]) -> None:
        """Record granted numbers on a majority (renewing the lease) before they are used."""
        term = self.writable()
        if not await self.round(term, floors):
            if not self.majority_in_view():
                raise self.no_majority()
            raise NotReady(f"{self.name} could not renew the write lease; retry")

    async def floors(self, node: str) -> list[FloorsPage]:
        """Every floor ``node`` recorded, page by page; RpcError if it does not answer."""
        assert self.follower is not None
        pages: list[FloorsPage] = []
        after = ""
        while True:
            if node == self.name:
                page = self.follower.page(after)
            else:
                reply = await self.view.call(node, FloorsRequest(self.term, after))
                if not isinstance(reply, FloorsPage):
                    raise RpcError(f"{node} answered the floors with {type(reply).__name__}")
                page = reply
            pages.append(page)
            if not page.next_after:
                return pages
            if page.next_after <= after:
                raise RpcError(f"{node}'s floor pages went backwards")
            after = page.next_after

    # --- as a member -----------------------------------------------------------------------

    def answer(self, request: Any) -> Any:
        """A LeaseRenew or a FloorsRequest from a leader."""
        assert self.follower is not None
        if isinstance(request, LeaseRenew):
            return self.follower.renew(request.leader, request.term, request.floors, self.clock())
        return self.follower.page(request.after)
