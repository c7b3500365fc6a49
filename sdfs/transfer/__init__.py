"""Moving file contents between SDFS nodes: scp over SSH, the nodes' own TCP stream, or a
local copy; and the server that receives the TCP stream.

sdfs.transfer.base states the contract every transport keeps (the :class:`Transfer`
protocol and its invariants: whole-or-nothing destinations, checksums of the bytes
that moved, progress on the trio thread, no thread left behind a cancelled caller).
One concept per module:

- ``base``: Transfer, Peer, TransferResult, TransferError, the contract's invariants
- ``files``: name rules (name_problem, path_problem, temp names) and AtomicWriter
- ``progress``: the progress reporter and the bridge from worker threads to trio
- ``landing``: where a copy's bytes land here: write, check, commit or clean up
- ``local``: LocalTransfer, copies within this machine
- ``tcp``: TcpTransfer, the nodes' own authenticated stream (sender side)
- ``rawstream``: the raw byte pumps under tcp, and its integrity argument
- ``server``: TransferServer, tcp's receiving end on the node's RPC port
- ``hostkeys``: which SSH hosts scp trusts (known_hosts, new keys)
- ``scp``: ScpTransfer, scp over cached paramiko connections

Callers import from here: ``from sdfs.transfer import TcpTransfer, Peer, ...``.  The
transports and the server are loaded on first use: a console that only streams over
tcp (``python -m console put``, run in loops by scripts) does not pay for scp's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from config.topology import ClusterConfig
from net.codec import Codec
from net.progress import Progress
from sdfs.durable import fsync_dir
from sdfs.transfer.base import (
    CHUNK_SIZE,
    Peer,
    Transfer,
    TransferError,
    TransferResult,
    pull_label,
    push_label,
)
from sdfs.transfer.files import (
    NAME_MAX,
    AtomicWriter,
    is_temp_name,
    name_problem,
    path_problem,
    resolve_inside,
    temp_sibling,
)

if TYPE_CHECKING:
    from sdfs.transfer.local import LocalTransfer
    from sdfs.transfer.scp import ScpTransfer
    from sdfs.transfer.server import TransferServer
    from sdfs.transfer.tcp import TcpTransfer

_LAZY = {
    "LocalTransfer": "local",
    "ScpTransfer": "scp",
    "TransferServer": "server",
    "TcpTransfer": "tcp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sdfs.transfer' has no attribute {name!r}")
    return getattr(importlib.import_module(f"sdfs.transfer.{module}"), name)


def make_transfer(config: ClusterConfig, codec: Codec) -> Transfer:
    """The transfer the cluster file asks for (``transfer = "scp" | "tcp"``)."""
    if config.transfer == "tcp":
        from sdfs.transfer.tcp import TcpTransfer

        return TcpTransfer(codec)
    if config.transfer == "scp":
        from sdfs.transfer.scp import ScpTransfer

        return ScpTransfer(config.ssh)
    raise ValueError(f"cluster.transfer: expected 'scp' or 'tcp', got {config.transfer!r}")


__all__ = [
    "CHUNK_SIZE",
    "NAME_MAX",
    "AtomicWriter",
    "LocalTransfer",
    "Peer",
    "Progress",
    "ScpTransfer",
    "TcpTransfer",
    "Transfer",
    "TransferError",
    "TransferResult",
    "TransferServer",
    "fsync_dir",
    "is_temp_name",
    "make_transfer",
    "name_problem",
    "path_problem",
    "pull_label",
    "push_label",
    "resolve_inside",
    "temp_sibling",
]
