"""Test helpers for SDFS transfers (tests/sdfs/transfer/): a node's directories, a real
TransferServer behind a real RpcServer on 127.0.0.1, one Env per transport, and a
progress recorder that checks the progress contract.

``tcp`` runs a real TransferServer behind a real RpcServer; ``scp`` logs in to a
private sshd (tests/helpers/sshd.py), which fails rather than skips when sshd is
missing.  The "remote" node lives on this machine, so its directories are checked
directly.
"""

from __future__ import annotations

import hashlib
import threading
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from net.messages import ChainStream, GetStream, PutStream, StreamEnd
from net.rpc import Connection, RpcServer, frame_codec, open_connection
from sdfs.transfer import (
    LocalTransfer,
    Peer,
    ScpTransfer,
    TcpTransfer,
    Transfer,
    TransferServer,
    is_temp_name,
    rawstream,
)
from tests.helpers.sshd import PrivateSshd

SECRET = b"transfer-test-secret"
BIG = 50 * 1024 * 1024
BAD_NAMES = ["../x", "a/b", "x\0y", "x\ny", "tab\there", "del\x7f", "", ".", ".."]


@dataclass
class Env:
    kind: str
    transfer: Transfer
    peer: Peer
    incoming: Path
    store: Path
    work: Path  # the local side's directory
    server: TransferServer | None = None


def node_dirs(tmp_path: Path) -> tuple[Path, Path]:
    store = tmp_path / "node" / "store"
    incoming = store / "incoming"
    incoming.mkdir(parents=True)
    (store / "files").mkdir()
    return incoming, store


async def no_request(request: Any, addr: Any) -> Any:
    raise AssertionError(f"unexpected plain request {request!r}")


@asynccontextmanager
async def tcp_server(server: TransferServer, stream_handler: Any = None) -> AsyncIterator[int]:
    """A real RpcServer on 127.0.0.1 serving ``server``; yields its port."""
    rpc = RpcServer(
        frame_codec(SECRET),
        no_request,
        stream_handler=stream_handler or server.handle,
        streams=(PutStream, ChainStream, GetStream),
    )
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(rpc.serve, "127.0.0.1", 0)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def raw_client(server: TransferServer) -> AsyncIterator[Connection]:
    """``server`` on a real RpcServer, and one connection to it that speaks frames by hand."""
    async with (
        tcp_server(server) as port,
        open_connection(("127.0.0.1", port), frame_codec(SECRET)) as conn,
    ):
        yield conn


@asynccontextmanager
async def make_env(
    kind: str, tmp_path: Path, sshd: PrivateSshd | None = None
) -> AsyncIterator[Env]:
    incoming, store = node_dirs(tmp_path)
    work = tmp_path / "local"
    work.mkdir()
    transfer: Transfer
    if kind == "tcp":
        server = TransferServer(incoming, store, node_name="H2")
        async with tcp_server(server) as port:
            transfer = TcpTransfer(frame_codec(SECRET))
            peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
            yield Env(kind, transfer, peer, incoming, store, work, server)
            await transfer.aclose()
    elif kind == "scp":
        assert sshd is not None
        transfer = ScpTransfer(sshd.ssh_config())
        # port 1: nothing listens there; scp must use ssh_port, never the RPC port.
        peer = Peer("H2", "127.0.0.1", 1, sshd.port, str(incoming), str(store))
        try:
            yield Env(kind, transfer, peer, incoming, store, work)
        finally:
            await transfer.aclose()
    else:
        transfer = LocalTransfer()
        peer = Peer("H1", "127.0.0.1", 1, None, str(incoming), str(store))
        yield Env(kind, transfer, peer, incoming, store, work)


class Recorder:
    """A progress callback (net.progress.Progress) that remembers its calls, their labels
    and the thread they came on."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.labels: set[str] = set()
        self.threads: set[int] = set()

    def __call__(self, done: int, total: int, label: str) -> None:
        self.calls.append((done, total))
        self.labels.add(label)
        self.threads.add(threading.get_ident())

    def check(self, size: int, label: str | None = None) -> None:
        """The progress contract (sdfs.transfer.base, invariant 3) for a ``size``-byte
        transfer; with ``label``, every call carried exactly that label."""
        assert self.calls, "progress was never reported"
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones), f"progress went backwards: {self.calls[:10]}"
        assert self.calls[-1] == (size, size)
        assert all(d <= size and t in (size, -1) for d, t in self.calls), self.calls[:10]
        assert self.threads == {threading.get_ident()}, "progress called off the trio thread"
        assert len(self.labels) == 1, f"one transfer, one label: {self.labels}"
        if label is not None:
            assert self.labels == {label}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(1 << 20):
            h.update(data)
    return h.hexdigest()


def leftovers(*dirs: Path) -> list[str]:
    return [p.name for d in dirs for p in d.iterdir() if is_temp_name(p.name)]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def scp_peer(sshd: PrivateSshd, tmp_path: Path) -> Peer:
    incoming, store = node_dirs(tmp_path)
    return Peer("H3", "127.0.0.1", 1, sshd.port, str(incoming), str(store))


# The nonce of the uploads these tests send by hand (PutStream(name, size, NONCE)).
NONCE = bytes(range(16))


def upload_end(conn: Connection, sent: bytes, meant: bytes | None = None) -> StreamEnd:
    """The trailer an honest sender puts after ``meant`` (default ``sent``) on ``conn``,
    just after its PutStream (nonce NONCE): size, CRC-32, SHA-256 and the tag under the
    upload's key."""
    meant = sent if meant is None else meant
    mac = rawstream.stream_mac(conn.session.codec.upload_key(NONCE))
    mac.update(meant)
    return StreamEnd(
        len(meant), zlib.crc32(meant), hashlib.sha256(meant).hexdigest(), mac.finalize()
    )
