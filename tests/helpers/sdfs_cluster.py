"""Whole SDFS nodes in one trio process, on virtual time: an SdfsService on every RpcCluster node.

Each node runs what ``node/app.py`` runs for SDFS, unchanged: a real
:class:`~sdfs.service.SdfsService` (replica, leader and client roles) over its own
membership, with a real :class:`~sdfs.store.ReplicaStore` in a directory of its
own.  Only the seams differ:

* requests go over the node's :class:`~net.memrpc.MemoryRpc` caller (``caller=``),
  and the node serves ``service.handle`` there;
* disk work runs inline on the trio thread (``blocking=``, see :mod:`net.blocking`);
* bytes move through a :class:`~tests.helpers.memtransfer.CopyNet`, at
  ``bytes_per_second`` of virtual time, copies to the node itself included;
* membership events reach ``service.on_membership_event`` as in ``node/app.py``,
  and ``service.run`` runs in the node's own nursery, so :meth:`SdfsCluster.crash`
  (kill -9) stops its loops, its RPC handlers and its copies at once.

Run it under ``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock``)::

    cluster = SdfsCluster(nursery, tmp_path, 5, delay=0.25)
    await cluster.start()
    result = await cluster.put("H3", "a.txt", b"hello")
    assert await cluster.read("H4", "a.txt") == b"hello"

Every log line of every node's service is kept with the virtual time it was
written (:meth:`SdfsCluster.log`), so a test can assert when a leader finished
its rebuild or a repair finished, to the exact virtual second.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trio

from config.topology import MembershipConfig
from net.messages import VersionRecord, VersionState
from sdfs.client import PutResult, SdfsClient
from sdfs.leader import LeaderState, SdfsLeader
from sdfs.service import SdfsService
from tests.helpers.memrpc_cluster import RpcCluster, RpcNode
from tests.helpers.memtransfer import CopyNet

# A link speed that makes sizes in MiB read as seconds of copying.
MIB_PER_SECOND = 1024 * 1024


@dataclass(frozen=True)
class LogLine:
    time: float  # virtual seconds
    node: str
    level: int
    message: str


class _Keep(logging.Handler):
    """Keeps every record of one node's service with the virtual time it was logged."""

    def __init__(self, node: str, lines: list[LogLine]) -> None:
        super().__init__(logging.DEBUG)
        self.node = node
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            now = trio.current_time()
        except RuntimeError:  # logged outside trio.run (not expected)
            now = math.nan
        self.lines.append(LogLine(now, self.node, record.levelno, record.getMessage()))


class SdfsCluster:
    """Nodes H1..Hn, each with membership, RPC, a store under ``root/Hi`` and an SdfsService."""

    def __init__(
        self,
        nursery: trio.Nursery,
        root: Path,
        n: int,
        *,
        replication: int = 4,
        versions_kept: int = 5,
        delay: float = 0.0,
        bytes_per_second: float = MIB_PER_SECOND,
        membership: MembershipConfig | None = None,
        seed: int = 1,
    ) -> None:
        self.root = root
        self.nodes = RpcCluster(nursery, n, membership, delay=delay, seed=seed)
        self.nodes.config = dataclasses.replace(
            self.nodes.config, replication=replication, versions_kept=versions_kept
        )
        self.config = self.nodes.config
        self.copies = CopyNet(bytes_per_second)
        self.services: dict[str, SdfsService] = {}
        self.lines: list[LogLine] = []
        self._files = itertools.count()  # names local files apart

    # --- building -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every node, wait until membership converges, then start SDFS everywhere."""
        await self.nodes.start_all()
        await self.nodes.wait_until(self.nodes.converged, timeout=60)
        # Every node serves before any starts its loops, so the first leader's rebuild
        # hears from all of them (a node that has not started yet refuses, and a
        # rebuild does not ask twice).
        built = [self._build_service(node) for node in self.nodes.live()]
        for node, service in built:
            await node.nursery.start(service.run)
        await self.wait_until(self.settled, timeout=60)
        # Tests measure from here: a whole virtual second keeps their sums exact.
        await trio.sleep_until(math.ceil(trio.current_time()))

    def settled(self) -> bool:
        """Every live node sees the same leader, and that leader is READY and holds the
        write lease (sdfs.lease)."""
        leaders = {s.peers.leader() for s in self.services.values()}
        if len(leaders) != 1:
            return False
        leader = leaders.pop()
        role = self.leader(leader) if leader in self.services else None
        if role is None or role.state is not LeaderState.READY:
            return False
        return role.lease_term() is not None

    def leader(self, name: str) -> SdfsLeader:
        """``name``'s leader role (READY only while it is the leader)."""
        return self.services[name].leader

    def _build_service(self, node: RpcNode) -> tuple[RpcNode, SdfsService]:
        transfer = self.copies.transfer(node.name)
        service = SdfsService(
            self.config,
            node.member.node,
            self.root / node.name / "sdfs",
            node.core,
            node.frames,
            transfer,
            self._logger(node.name),
            caller=node.caller,
            blocking=self.nodes.blocking,
            # Copies to itself go through the CopyNet too (not a LocalTransfer's worker
            # threads, which make virtual time race): they take time like any other.
            local=transfer,
        )
        node.serve(service.handle)
        node.member.service.listeners.append(service.on_membership_event)
        self.services[node.name] = service
        return node, service

    def _logger(self, name: str) -> logging.Logger:
        # Not registered with logging's manager (nothing global outlives the test);
        # records still propagate to "sdfs", so pytest shows them with a failure.
        log = logging.Logger(f"sdfs.{name}", logging.DEBUG)
        log.parent = logging.getLogger("sdfs")
        log.addHandler(_Keep(name, self.lines))
        return log

    # --- faults ---------------------------------------------------------------------------

    def crash(self, *names: str) -> None:
        """kill -9 each node, all at the same virtual instant: membership, RPC,
        SDFS's loops and handlers, and every copy from or to it."""
        for name in names:
            self.copies.down(name)
            self.nodes.crash(name)
            del self.services[name]

    async def restart(self, name: str, via: str) -> SdfsService:
        """A fresh process for crashed ``name`` on the same disk: it joins through
        ``via``'s view and opens its store where the crashed one left it."""
        node = await self.nodes.restart(name, via)
        self.copies.up(name)
        node, service = self._build_service(node)
        await node.nursery.start(service.run)
        return service

    # --- looking --------------------------------------------------------------------------

    def service(self, name: str) -> SdfsService:
        return self.services[name]

    def client(self, name: str) -> SdfsClient:
        return self.services[name].client

    def live(self) -> list[str]:
        return [node.name for node in self.nodes.live()]

    def records(self, node: str, name: str) -> list[VersionRecord]:
        """What ``node``'s store holds of ``name`` (every state), oldest first."""
        return self.services[node].store.records(name)

    def holders(self, name: str, version: int) -> list[str]:
        """Live nodes whose store holds ``version`` of ``name`` committed."""
        return sorted(
            node
            for node, service in self.services.items()
            if any(
                r.version == version and r.state == VersionState.COMMITTED
                for r in service.store.records(name)
            )
        )

    def incoming(self, node: str) -> list[str]:
        """What lies in ``node``'s incoming directory (arrivals not yet ingested, temporaries)."""
        return sorted(p.name for p in self.services[node].store.incoming.iterdir())

    def log(self, contains: str, node: str | None = None) -> list[LogLine]:
        """Log lines of the services (of ``node``) that contain ``contains``, in order."""
        return [
            line for line in self.lines if contains in line.message and node in (None, line.node)
        ]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> float:
        """The virtual time ``predicate`` became true (polled every 0.05 s)."""
        return await self.nodes.wait_until(predicate, timeout)

    # --- files ----------------------------------------------------------------------------

    def local_file(self, node: str, data: bytes, label: str = "file") -> Path:
        """A file on ``node``'s own disk, outside its store, holding ``data``."""
        d = self.root / node / "local"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"{label}-{next(self._files)}"
        path.write_bytes(data)
        return path

    async def put(self, node: str, name: str, data: bytes) -> PutResult:
        """``put`` of ``data`` as ``name`` by ``node``'s client."""
        return await self.client(node).put(self.local_file(node, data, "put"), name)

    async def read(self, node: str, name: str) -> bytes:
        """``get`` of ``name`` by ``node``'s client; the bytes it wrote."""
        d = self.root / node / "local"
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"got-{next(self._files)}"
        await self.client(node).get(name, path)
        return path.read_bytes()
