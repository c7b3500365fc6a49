"""SDFS on one node: its three roles wired together.

* :class:`~sdfs.replica.Replica` keeps this node's copies and answers for them;
* :class:`~sdfs.leader.SdfsLeader` holds the file metadata while this node is the
  first live member in ring order (grants, lookups, deletes, repairs);
* :class:`~sdfs.client.SdfsClient` is the typed API for everything on this node that
  reads or writes files (the interactive console, inference), with this node's
  membership as its view of the cluster.

This module only routes: requests to the role that serves them, membership events
to the roles that care.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import trio

from config.topology import ClusterConfig, Node
from membership.core import Event, MembershipCore
from membership.peers import Caller, Peers
from net.blocking import Blocking, to_thread
from net.codec import Codec
from net.messages import AbortPut, ErrorReply, RelayFile
from net.rpc import call
from net.transport import Address
from sdfs.client import SdfsClient
from sdfs.copies import PeerDirectory
from sdfs.leader import LEADER_REQUESTS, SdfsLeader
from sdfs.leasekeeper import LEASE_REQUESTS
from sdfs.replica import REPLICA_REQUESTS, Replica
from sdfs.store import ReplicaStore
from sdfs.transfer import LocalTransfer, Peer, TcpTransfer, Transfer

SDFS_REQUESTS = REPLICA_REQUESTS + LEADER_REQUESTS + LEASE_REQUESTS + (RelayFile,)


class SdfsService:
    def __init__(
        self,
        config: ClusterConfig,
        me: Node,
        root: Path,
        membership: MembershipCore,
        frames: Codec,
        transfer: Transfer,
        logger: logging.Logger | None = None,
        *,
        caller: Caller = call,
        blocking: Blocking = to_thread,
        local: Transfer | None = None,
    ) -> None:
        self.me = me
        self.membership = membership
        self.transfer = transfer
        # Copies to and from ourselves.  Over tcp they go through our own port like
        # any other (one read of the file feeds every replica, and what arrives is
        # checked once); scp to ourselves would need our own sshd: a local copy then.
        # ``local`` replaces that choice (tests on virtual time, where threads race).
        if local is None:
            local = transfer if isinstance(transfer, TcpTransfer) else LocalTransfer()
        self.local = local
        self.log = logger or logging.getLogger(f"sdfs.{me.name}")
        self.store = ReplicaStore(root, keep=config.versions_kept, node=me.name)
        # caller and blocking are seams for tests on virtual time (net.memrpc,
        # net.blocking.inline); a node uses TCP and worker threads.
        self.peers = Peers(membership, config, frames, self.handle, caller)
        self.directory = PeerDirectory(self.peers, config)
        self.replica = Replica(
            me.name,
            self.store,
            self.peers,
            self.directory,
            self.transfer_for,
            self.log,
            blocking,
            grace=config.tombstone_grace,
        )
        self.leader = SdfsLeader(config, me.name, self.peers, self.log)
        self.client = SdfsClient(
            self.peers,
            self.directory,
            self.transfer_for,
            config.replication,
            client_name=me.name,
            prefer=me.name,
            log=self.log,
            blocking=blocking,
        )

        if config.transfer == "scp":
            from sdfs.transfer.scp import ScpTransfer

            if isinstance(transfer, ScpTransfer):
                transfer.relay = self._relay_call

    async def _relay_call(self, peer: Peer, request: RelayFile, timeout: float) -> Any:
        return await self.peers.call(peer.name, request, timeout)

    async def relay(self, request: RelayFile) -> Any:
        """Copy a file that is arriving by scp on down a chain (sdfs.transfer.chain)."""
        from sdfs.transfer.scp import ScpTransfer

        if not isinstance(self.transfer, ScpTransfer):
            return ErrorReply(f"{self.me.name}: relay refused: this node does not copy with scp")
        return await self.transfer.serve_relay(
            request, self.store.incoming, self.directory.peer, node=self.me.name, log=self.log
        )

    def transfer_for(self, node: str) -> Transfer:
        return self.local if node == self.me.name else self.transfer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.leader.run)
            await nursery.start(self.replica.run)
            task_status.started()

    def on_membership_event(self, event: Event, now: float) -> None:
        """Membership listener (called on the trio thread)."""
        if event.kind in ("failed", "left", "joined", "rejoined"):
            self.directory.forget(event.name)
        self.leader.on_membership_event(event)

    async def handle(self, request: Any, addr: Address) -> Any:
        if isinstance(request, AbortPut):
            # Sent to the replicas and to the leader: each drops its part.
            self.leader.aborted(request)
        if isinstance(request, RelayFile):
            return await self.relay(request)
        if isinstance(request, REPLICA_REQUESTS):
            return await self.replica.handle(request)
        return await self.leader.handle(request)
