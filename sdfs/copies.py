"""Moving one version's bytes to replicas and having them take it: shared by puts and repairs.

A copy has two steps.  :func:`push` moves the bytes into each target's incoming
directory under a fresh random name: a file of at least ``pipeline_min_bytes`` in a
chain through the targets (each forwards while it receives, sdfs.transfer.chain, so
the writer's link carries one copy), a smaller one by fan-out, reading the file once
per transport (over tcp, one read feeds every target).  If a chain leaves fewer than
the caller's quorum with a copy, the writer sends the ones it missed theirs by
fan-out.  It returns the SHA-256 of what each target received, or why not.
:func:`ingest` then asks each target to store that arrival as a given record (the
target checks the size, and the SHA-256 unless its transfer server verified the
arrival already).  The put coordinator (``sdfs.putcoord``) and the leader's repair
orders (``sdfs.replica``) both build on these.

:class:`PeerDirectory` learns, once per member, where it keeps incoming files and its
store (``PeerInfoRequest``), which both transports need.
"""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from config.topology import ClusterConfig
from membership.peers import ClusterView
from net.errors import ErrorKind, error_kind
from net.messages import (
    ErrorReply,
    Failure,
    Ingest,
    PeerInfo,
    PeerInfoRequest,
    StoreAck,
    VersionRecord,
)
from net.progress import Progress
from net.rpc import RPC_TIMEOUT, RpcError
from sdfs.putcoord import NodeError
from sdfs.transfer import Peer, Transfer, TransferError, TransferResult

# A request that hashes or copies a file gets RPC_TIMEOUT plus this much time per
# byte: a pessimistic disk or link speed, so a large file is not given up on early.
BYTES_PER_SECOND_FLOOR = 20e6

# Which transport moves bytes to (or from) a member: the node's own transfer, a local
# copy for itself, or tcp for everyone from a console outside the cluster.
Transfers = Callable[[str], Transfer]


def io_timeout(size: int) -> float:
    return RPC_TIMEOUT + size / BYTES_PER_SECOND_FLOOR


def reply_error(reply: Any) -> NodeError:
    """A refusal as a NodeError (typed when the replica said what kind it was)."""
    if isinstance(reply, Failure):
        return NodeError(error_kind(reply.kind), reply.error)
    if isinstance(reply, (StoreAck, ErrorReply)):
        return NodeError(ErrorKind.FAILED, reply.error)
    return NodeError(ErrorKind.FAILED, f"unexpected {type(reply).__name__}")


class PeerDirectory:
    """Where each member keeps files, asked once per member and forgotten when it changes.

    ``ask=False`` is for a client whose every copy goes over tcp (a console): the
    transfer server resolves names inside its own directories, so the peer's paths
    are not needed and nothing is asked (relative paths stand for them)."""

    def __init__(self, view: ClusterView, config: ClusterConfig, *, ask: bool = True) -> None:
        self.view = view
        self.config = config
        self.ask = ask
        self._peers: dict[str, Peer] = {}

    def forget(self, name: str) -> None:
        self._peers.pop(name, None)

    async def peer(self, name: str) -> Peer:
        peer = self._peers.get(name)
        if peer is None:
            incoming_dir = store_dir = ""
            if self.ask:
                reply = await self.view.call(name, PeerInfoRequest())
                if not isinstance(reply, PeerInfo):
                    raise TransferError(f"{name} did not say where it keeps files")
                incoming_dir, store_dir = reply.incoming_dir, reply.store_dir
            host, port = self.view.address(name)
            node = self.config.node_named(name)
            peer = Peer(
                name=name,
                host=host,
                port=port,
                ssh_port=node.ssh_port if node else None,
                incoming_dir=incoming_dir,
                store_dir=store_dir,
            )
            self._peers[name] = peer
        return peer


def is_local(host: str) -> bool:
    """Whether ``host`` is an address of this machine (or network namespace): one we
    can bind to.  Only literal addresses count (a name would need a lookup here)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
        return True
    except OSError:
        return False


async def push(
    peers: PeerDirectory,
    transfers: Transfers,
    path: Path,
    targets: Sequence[str],
    progress: Progress | None = None,
    *,
    quorum: int | None = None,
) -> tuple[dict[str, str], dict[str, str], dict[str, NodeError]]:
    """Copy ``path`` into each target's incoming directory.

    A file of at least ``peers.config.pipeline_min_bytes`` goes to the targets that
    share a transport in a chain (sdfs.transfer.chain); if that leaves fewer than
    ``quorum`` targets (all of them by default) with a copy, the writer sends the ones
    the chain missed theirs by fan-out.  Smaller files fan out from the start.

    Returns (the incoming name of each target that received it, the SHA-256 each of
    those received, why each other target did not)."""
    label = f"{path.name} -> {', '.join(targets)}"
    incoming = {t: uuid.uuid4().hex for t in targets}
    errors: dict[str, NodeError] = {}
    found: dict[str, Peer] = {}

    async def look_up(node: str) -> None:
        try:
            found[node] = await peers.peer(node)
        except (TransferError, RpcError) as e:
            errors[node] = NodeError(ErrorKind.FAILED, str(e))

    async with trio.open_nursery() as nursery:
        for node in targets:
            nursery.start_soon(look_up, node)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # the transfer reports why it cannot read it
    threshold = peers.config.pipeline_min_bytes
    chained = threshold > 0 and size >= threshold
    # One group per transport, so each reads the file once for all of its targets.
    groups: dict[int, tuple[Transfer, list[str]]] = {}
    for node in targets:
        if node in found:
            transfer = transfers(node)
            groups.setdefault(id(transfer), (transfer, []))[1].append(node)
    biggest = max(groups.values(), key=lambda g: len(g[1]), default=None)
    digests: dict[str, str] = {}
    missed: dict[str, Transfer] = {}  # targets a chain did not reach, and their transport

    async def one(transfer: Transfer, members: list[str], chain: bool) -> None:
        report = progress if biggest and members is biggest[1] else None
        pairs = [(found[node], incoming[node]) for node in members]
        push_chain = getattr(transfer, "push_chain", None)
        if chain and push_chain is not None and len(members) > 1:
            # A replica on this very host first: the chain then leaves this host's link
            # once (behind it, it would come back in and go out again).
            order = sorted(range(len(pairs)), key=lambda k: not is_local(pairs[k][0].host))
            chained = await push_chain(path, [pairs[k] for k in order], report, label=label)
            done = [chained[order.index(k)] for k in range(len(pairs))]
        else:
            chain = False
            done = await transfer.push_many(path, pairs, report, label=label)
        for node, result in zip(members, done, strict=True):
            if isinstance(result, TransferResult):
                digests[node] = result.sha256
            else:
                errors[node] = NodeError(ErrorKind.FAILED, str(result))
                if chain:
                    missed[node] = transfer

    async with trio.open_nursery() as nursery:
        for transfer, members in groups.values():
            nursery.start_soon(one, transfer, members, chained)
    if missed and len(digests) < (len(targets) if quorum is None else quorum):
        # Route around the break: the writer sends the missed ones their copies itself.
        again: dict[int, tuple[Transfer, list[str]]] = {}
        for node, transfer in missed.items():
            incoming[node] = uuid.uuid4().hex  # the failed hop may have kept the old name
            again.setdefault(id(transfer), (transfer, []))[1].append(node)
        biggest = None
        async with trio.open_nursery() as nursery:
            for transfer, members in again.values():
                nursery.start_soon(one, transfer, members, False)
        for node in digests:
            errors.pop(node, None)
    return {t: incoming[t] for t in digests}, digests, errors


async def ingest(
    view: ClusterView, record: VersionRecord, incoming: Mapping[str, str]
) -> tuple[list[str], dict[str, NodeError]]:
    """Have each node in ``incoming`` store its arrival as ``record``.

    Returns (the nodes that stored it, why each other did not)."""
    stored: list[str] = []
    errors: dict[str, NodeError] = {}

    async def one(node: str) -> None:
        try:
            reply = await view.call(node, Ingest(record, incoming[node]), io_timeout(record.size))
        except RpcError as e:
            errors[node] = NodeError(ErrorKind.FAILED, str(e))
            return
        if isinstance(reply, StoreAck) and reply.ok:
            stored.append(node)
        else:
            why = reply_error(reply)
            errors[node] = NodeError(
                why.kind, f"refused {record.name} v{record.version}: {why.text}"
            )

    async with trio.open_nursery() as nursery:
        for node in incoming:
            nursery.start_soon(one, node)
    return sorted(stored), errors
