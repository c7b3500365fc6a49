"""SDFS file transfers, both transports, against real servers on 127.0.0.1.

``tcp`` runs a real TransferServer behind a real RpcServer; ``scp`` logs in to a
private sshd (tests/helpers/sshd.py), which fails rather than skips when sshd is
missing.  The "remote" node lives on this machine, so its directories are
checked directly.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import threading
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from config.topology import ClusterConfig, Node
from net.messages import ErrorReply, GetStream, PutStream, StreamEnd, StreamStart
from net.rpc import Connection, RpcServer, frame_codec, open_connection
from sdfs.transfer import (
    LocalTransfer,
    Peer,
    ScpTransfer,
    TcpTransfer,
    Transfer,
    TransferError,
    is_temp_name,
    make_transfer,
    name_problem,
    temp_sibling,
)
from sdfs.transfer_server import TransferServer, human_bytes
from tests.helpers.sshd import PrivateSshd, private_sshd

pytestmark = pytest.mark.timeout(60)

SECRET = b"transfer-test-secret"
BIG = 50 * 1024 * 1024
BAD_NAMES = ["../x", "a/b", "x\0y", "x\ny", "tab\there", "del\x7f", "", ".", ".."]


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSshd]:
    with private_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    with path.open("wb") as f:
        for _ in range(BIG // (1024 * 1024)):
            f.write(os.urandom(1024 * 1024))
    return path


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
        streams=(PutStream, GetStream),
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


@pytest.fixture(params=["tcp", "scp"])
async def env(request: pytest.FixtureRequest, tmp_path: Path, sshd: PrivateSshd) -> Any:
    async with make_env(request.param, tmp_path, sshd) as e:
        yield e


@pytest.fixture(params=["tcp", "scp", "local"])
async def any_env(request: pytest.FixtureRequest, tmp_path: Path, sshd: PrivateSshd) -> Any:
    async with make_env(request.param, tmp_path, sshd) as e:
        yield e


class Recorder:
    """A progress callback that remembers its calls and the thread they came on."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.threads: set[int] = set()

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        self.threads.add(threading.get_ident())

    def check(self, size: int) -> None:
        assert self.calls, "progress was never reported"
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones), f"progress went backwards: {self.calls[:10]}"
        assert self.calls[-1] == (size, size)
        assert all(d <= size and t in (size, -1) for d, t in self.calls), self.calls[:10]
        assert self.threads == {threading.get_ident()}, "progress called off the trio thread"


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


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, BIG], ids=["empty", "1B", "1kB", "50MB"])
async def test_push_then_pull_round_trip(
    env: Env, size: int, big_file: Path, tmp_path: Path
) -> None:
    src = big_file if size == BIG else write(tmp_path / "src.bin", os.urandom(size))
    digest = sha256(src)

    pushed = Recorder()
    result = await env.transfer.push(src, env.peer, "v1-abc", pushed)
    arrived = env.incoming / "v1-abc"
    assert arrived.read_bytes() == src.read_bytes()
    assert (result.size, result.sha256) == (size, digest)
    assert result.seconds > 0
    pushed.check(size)

    stored = env.store / "files" / "f.data"
    shutil.move(arrived, stored)
    out = env.work / "out.bin"
    pulled = Recorder()
    result = await env.transfer.pull(env.peer, str(stored), out, pulled)
    assert (result.size, result.sha256) == (size, digest)
    assert sha256(out) == digest
    pulled.check(size)
    assert leftovers(env.incoming, env.work) == []


async def test_pull_with_expected_size_reports_total_from_the_start(env: Env) -> None:
    write(env.store / "files" / "f.data", b"x" * 3_000_000)
    rec = Recorder()
    await env.transfer.pull(
        env.peer, str(env.store / "files" / "f.data"), env.work / "o", rec, expected_size=3_000_000
    )
    rec.check(3_000_000)
    assert {t for _, t in rec.calls} == {3_000_000}


async def test_push_replaces_an_existing_incoming_file(env: Env, tmp_path: Path) -> None:
    write(env.incoming / "n", b"old contents")
    await env.transfer.push(write(tmp_path / "s", b"new"), env.peer, "n")
    assert (env.incoming / "n").read_bytes() == b"new"


async def test_local_transfer_round_trip(tmp_path: Path, big_file: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    peer = Peer("H1", "127.0.0.1", 1, None, str(incoming), str(store))
    t = LocalTransfer()
    rec = Recorder()
    r = await t.push(big_file, peer, "n", rec)
    rec.check(BIG)
    assert r.sha256 == sha256(big_file) == sha256(incoming / "n")
    shutil.move(incoming / "n", store / "files" / "n")
    r2 = await t.pull(peer, str(store / "files" / "n"), tmp_path / "out")
    assert r2.sha256 == r.sha256 == sha256(tmp_path / "out")


# --- atomicity ---------------------------------------------------------------------------


async def test_failed_pull_leaves_no_local_and_no_temp(any_env: Env) -> None:
    env = any_env
    out = env.work / "out.bin"
    with pytest.raises(TransferError, match=r"No such file|no such file"):
        await env.transfer.pull(env.peer, str(env.store / "files" / "missing"), out)
    assert not out.exists()
    assert leftovers(env.work) == []


async def test_failed_pull_keeps_the_old_local_file(any_env: Env) -> None:
    env = any_env
    write(env.store / "files" / "f", b"new contents")
    out = write(env.work / "out.bin", b"old")
    with pytest.raises(TransferError, match="checksum mismatch"):
        await env.transfer.pull(
            env.peer, str(env.store / "files" / "f"), out, expected_sha256="0" * 64
        )
    with pytest.raises(TransferError, match="expected 5"):
        await env.transfer.pull(env.peer, str(env.store / "files" / "f"), out, expected_size=5)
    assert out.read_bytes() == b"old"
    assert leftovers(env.work) == []


async def test_cancelled_pull_midway_leaves_nothing(any_env: Env, big_file: Path) -> None:
    env = any_env
    shutil.copy(big_file, env.store / "files" / "big")
    out = env.work / "out.bin"
    with trio.CancelScope() as scope:

        def cancel_on_progress(done: int, total: int) -> None:
            if done > 0:
                scope.cancel()

        await env.transfer.pull(env.peer, str(env.store / "files" / "big"), out, cancel_on_progress)
    assert scope.cancelled_caught
    assert not out.exists()
    assert leftovers(env.work) == []
    # ... and the transport still works afterwards.
    r = await env.transfer.pull(env.peer, str(env.store / "files" / "big"), out)
    assert r.size == BIG


async def test_cancelled_push_midway_leaves_no_incoming_file(any_env: Env, big_file: Path) -> None:
    env = any_env
    with trio.CancelScope() as scope:

        def cancel_on_progress(done: int, total: int) -> None:
            if done > 0:
                scope.cancel()

        await env.transfer.push(big_file, env.peer, "n", cancel_on_progress)
    assert scope.cancelled_caught
    # The receiving side notices the hang-up on its own time (tcp) or is told to
    # clean up (scp); either way, no incoming/n and no temporaries remain.
    for _ in range(500):
        if not list(env.incoming.iterdir()):
            break
        await trio.sleep(0.02)
    assert list(env.incoming.iterdir()) == []


async def test_pull_into_a_missing_directory_fails_cleanly(any_env: Env) -> None:
    env = any_env
    write(env.store / "files" / "f", b"data")
    with pytest.raises(TransferError, match="No such file"):
        await env.transfer.pull(env.peer, str(env.store / "files" / "f"), env.work / "no" / "o")


# --- validation -----------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
async def test_bad_names_are_refused(any_env: Env, name: str, tmp_path: Path) -> None:
    env = any_env
    src = write(tmp_path / "s", b"data")
    with pytest.raises(TransferError, match="refused") as info:
        await env.transfer.push(src, env.peer, name)
    assert "\n" not in str(info.value)
    assert list(env.incoming.iterdir()) == []
    assert not (env.store / "x").exists()


def test_name_rules() -> None:
    assert name_problem("v3-1a2b") is None
    assert name_problem("ünïcode name.jpg") is None
    for bad in BAD_NAMES:
        assert name_problem(bad)
    assert name_problem("x" * 256)
    assert name_problem(Path(temp_sibling("/a/b")).name)  # our own temporaries are reserved


async def test_tcp_server_refuses_bad_names_itself(tmp_path: Path) -> None:
    """The server does not trust the client's check."""
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")
    async with raw_client(server) as conn:
        await conn.send(PutStream("../escape", 4))
        reply = await conn.receive()
    assert "refused" in reply.error and "'/'" in reply.error
    assert not (incoming.parent / "escape").exists()


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "{store}/../outside", "{store}/files/../../outside", "{store}", "../outside"],
)
async def test_download_outside_the_store_is_refused(any_env: Env, path: str) -> None:
    env = any_env
    write(env.store.parent / "outside", b"secret")
    out = env.work / "out"
    with pytest.raises(TransferError, match="not inside the store"):
        await env.transfer.pull(env.peer, path.format(store=env.store), out)
    assert not out.exists()


async def test_tcp_download_through_a_symlink_out_of_the_store_is_refused(tmp_path: Path) -> None:
    async with make_env("tcp", tmp_path) as env:
        write(env.store.parent / "outside", b"secret")
        (env.store / "files" / "link").symlink_to(env.store.parent / "outside")
        with pytest.raises(TransferError, match=r"H2: refused to send .*not inside the store"):
            await env.transfer.pull(env.peer, str(env.store / "files" / "link"), env.work / "o")
        # A symlink that stays inside the store is fine.
        write(env.store / "files" / "real", b"ok")
        (env.store / "files" / "alias").symlink_to(env.store / "files" / "real")
        await env.transfer.pull(env.peer, str(env.store / "files" / "alias"), env.work / "o")
        assert (env.work / "o").read_bytes() == b"ok"


async def test_download_of_a_directory_is_refused(any_env: Env) -> None:
    env = any_env
    with pytest.raises(TransferError, match=r"not a regular file|directory"):
        await env.transfer.pull(env.peer, str(env.store / "files"), env.work / "o")
    assert not (env.work / "o").exists()


# --- tcp specifics --------------------------------------------------------------------------


async def test_tcp_disk_full_is_refused_with_the_reason(tmp_path: Path, big_file: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    free = shutil.disk_usage(incoming).free
    # Leave 10 MB usable: the 50 MB upload must be refused before a byte is written,
    # while the client is already streaming.
    server = TransferServer(incoming, store, node_name="H2", reserve_bytes=free - 10_000_000)
    async with tcp_server(server) as port:
        peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
        with pytest.raises(TransferError, match=r"not enough disk space on H2: need 52.4 MB, have"):
            await TcpTransfer(frame_codec(SECRET)).push(big_file, peer, "n")
        # A small file still fits.
        await TcpTransfer(frame_codec(SECRET)).push(write(tmp_path / "s", b"tiny"), peer, "m")
    assert sorted(p.name for p in incoming.iterdir()) == ["m"]
    assert server.refused == 1 and server.uploads == 1


async def test_tcp_checksum_mismatch_is_detected(tmp_path: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")

    async def lying(request: Any, conn: Connection) -> Any:
        reply = await server.handle(request, conn)
        return StreamEnd(reply.size, reply.crc32 ^ 1) if isinstance(reply, StreamEnd) else reply

    async with tcp_server(server, lying) as port:
        peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
        with pytest.raises(TransferError, match=r"upload to H2 .*checksum mismatch"):
            await TcpTransfer(frame_codec(SECRET)).push(write(tmp_path / "s", b"abc"), peer, "n")
        write(store / "files" / "f", b"abc")
        with pytest.raises(TransferError, match="checksum mismatch"):
            await TcpTransfer(frame_codec(SECRET)).pull(
                peer, str(store / "files" / "f"), tmp_path / "o"
            )
    assert not (tmp_path / "o").exists()


async def test_tcp_wrong_secret_is_a_clear_error(tmp_path: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    async with tcp_server(TransferServer(incoming, store)) as port:
        peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
        write(store / "files" / "f", b"abc")
        with pytest.raises(TransferError, match=r"download of .* from H2 .* failed"):
            await TcpTransfer(frame_codec(b"other")).pull(
                peer, str(store / "files" / "f"), tmp_path / "o"
            )
        with pytest.raises(TransferError, match=r"upload to H2 .* failed"):
            await TcpTransfer(frame_codec(b"other")).push(store / "files" / "f", peer, "n")
    assert list(incoming.iterdir()) == []


async def test_unreachable_peer(tmp_path: Path, sshd: PrivateSshd) -> None:
    incoming, store = node_dirs(tmp_path)
    src = write(tmp_path / "s", b"x")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    peer = Peer("H9", "127.0.0.1", closed, closed, str(incoming), str(store))
    with pytest.raises(TransferError, match=r"upload to H9 \(127.0.0.1:\d+\) failed: cannot reach"):
        await TcpTransfer(frame_codec(SECRET)).push(src, peer, "n")
    with pytest.raises(
        TransferError,
        match=r"scp to H9 \(127.0.0.1:\d+\) failed: cannot connect: Connection refused",
    ):
        await ScpTransfer(sshd.ssh_config()).push(src, peer, "n")


# --- scp: host keys, user keys, connections ------------------------------------------------


def scp_peer(sshd: PrivateSshd, tmp_path: Path) -> Peer:
    incoming, store = node_dirs(tmp_path)
    return Peer("H3", "127.0.0.1", 1, sshd.port, str(incoming), str(store))


async def test_scp_unknown_host_key_is_refused(sshd: PrivateSshd, tmp_path: Path) -> None:
    known = write(tmp_path / "known_hosts", b"")
    transfer = ScpTransfer(sshd.ssh_config(known_hosts=str(known)))
    with pytest.raises(TransferError) as info:
        await transfer.push(write(tmp_path / "s", b"x"), scp_peer(sshd, tmp_path), "n")
    assert str(info.value) == (
        f"scp to H3 (127.0.0.1:{sshd.port}) failed: host key not in known_hosts ({known}); "
        "set accept_new_host_keys = true to accept on first use"
    )
    assert known.read_text() == ""


@pytest.mark.parametrize("exists", [True, False], ids=["empty-file", "no-file"])
async def test_scp_new_host_key_is_accepted_and_saved(
    sshd: PrivateSshd, tmp_path: Path, exists: bool
) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    if exists:
        known.parent.mkdir()
        known.write_text("# my comment stays\n")
    transfer = ScpTransfer(sshd.ssh_config(known_hosts=str(known), accept_new_host_keys=True))
    peer = scp_peer(sshd, tmp_path)
    await transfer.push(write(tmp_path / "s", b"x"), peer, "n")
    await transfer.aclose()
    lines = known.read_text().splitlines()
    assert lines[-1].split() == sshd.known_hosts_line.split()
    if exists:
        assert lines[0] == "# my comment stays"
    # Now known: a strict client accepts it.
    strict = ScpTransfer(sshd.ssh_config(known_hosts=str(known)))
    await strict.push(write(tmp_path / "s", b"x"), peer, "m")
    await strict.aclose()


async def test_scp_changed_host_key_is_refused_even_with_accept_new(
    sshd: PrivateSshd, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    impostor = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    known = write(tmp_path / "known_hosts", f"[127.0.0.1]:{sshd.port} {impostor}\n".encode())
    for accept in (False, True):
        transfer = ScpTransfer(sshd.ssh_config(known_hosts=str(known), accept_new_host_keys=accept))
        with pytest.raises(
            TransferError, match=r"scp to H3 .* failed: host key changed: .*refusing"
        ):
            await transfer.push(
                write(tmp_path / "s", b"x"), scp_peer(sshd, tmp_path / str(accept)), "n"
            )
    assert known.read_text() == f"[127.0.0.1]:{sshd.port} {impostor}\n"


async def test_scp_wrong_user_key_is_refused(sshd: PrivateSshd, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    transfer = ScpTransfer(sshd.ssh_config(key_file=str(stranger)))
    with pytest.raises(TransferError) as info:
        await transfer.push(write(tmp_path / "s", b"x"), scp_peer(sshd, tmp_path), "n")
    assert str(info.value) == (
        f"scp to H3 (127.0.0.1:{sshd.port}) failed: "
        f"the server refused key {stranger} for user {sshd.user}"
    )


async def test_scp_missing_or_locked_user_key(sshd: PrivateSshd, tmp_path: Path) -> None:
    missing = ScpTransfer(sshd.ssh_config(key_file=str(tmp_path / "nope")))
    with pytest.raises(TransferError, match=r"cannot use SSH key .*nope: No such file"):
        await missing.push(write(tmp_path / "s", b"x"), scp_peer(sshd, tmp_path), "n")
    locked = tmp_path / "id_locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "pw", "-f", str(locked)], check=True)
    with pytest.raises(TransferError, match="protected by a passphrase"):
        await ScpTransfer(sshd.ssh_config(key_file=str(locked))).push(
            tmp_path / "s", scp_peer(sshd, tmp_path / "b"), "n"
        )


async def test_scp_reuses_one_connection_and_reconnects_once(
    sshd: PrivateSshd, tmp_path: Path
) -> None:
    transfer = ScpTransfer(sshd.ssh_config())
    peer = scp_peer(sshd, tmp_path)
    src = write(tmp_path / "s", b"x" * 1000)
    try:
        await transfer.push(src, peer, "a")
        first = transfer._links[("127.0.0.1", sshd.port)].client
        await transfer.push(src, peer, "b")
        assert transfer._links[("127.0.0.1", sshd.port)].client is first
        # The connection dies under the cache (sshd restarted, a NAT forgot us...).
        first.get_transport().sock.close()
        await trio.sleep(0.1)
        await transfer.push(src, peer, "c")
        assert transfer._links[("127.0.0.1", sshd.port)].client is not first
        assert sorted(p.name for p in Path(peer.incoming_dir).iterdir()) == ["a", "b", "c"]
    finally:
        await transfer.aclose()


async def test_scp_verify_remote_checks_the_arrived_hash(sshd: PrivateSshd, tmp_path: Path) -> None:
    transfer = ScpTransfer(sshd.ssh_config(), verify_remote=True)
    peer = scp_peer(sshd, tmp_path)
    src = write(tmp_path / "s", os.urandom(3_000_000))
    try:
        r = await transfer.push(src, peer, "v")
        assert r.sha256 == sha256(Path(peer.incoming_dir) / "v") == sha256(src)
    finally:
        await transfer.aclose()


async def test_scp_concurrent_transfers_share_the_connection(
    sshd: PrivateSshd, tmp_path: Path
) -> None:
    transfer = ScpTransfer(sshd.ssh_config(), max_sessions=3)
    peer = scp_peer(sshd, tmp_path)
    src = write(tmp_path / "s", os.urandom(2_000_000))
    try:
        async with trio.open_nursery() as nursery:
            for i in range(12):  # more than OpenSSH's 10 sessions per connection
                nursery.start_soon(transfer.push, src, peer, f"n{i}")
        assert len(transfer._links) == 1
    finally:
        await transfer.aclose()
    assert len(list(Path(peer.incoming_dir).iterdir())) == 12


# --- choosing -------------------------------------------------------------------------------


def test_make_transfer_follows_the_cluster_file() -> None:
    nodes = (Node("H1", "127.0.0.1", 8001),)
    codec = frame_codec(SECRET)
    assert isinstance(make_transfer(ClusterConfig(nodes=nodes, transfer="tcp"), codec), TcpTransfer)
    scp = make_transfer(ClusterConfig(nodes=nodes, transfer="scp"), codec)
    assert isinstance(scp, ScpTransfer)
    assert scp.key_file == os.path.expanduser("~/.ssh/id_ed25519")


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(52_428_800) == "52.4 MB"
    assert human_bytes(3e12) == "3.0 TB"


async def test_scp_to_something_that_is_not_an_ssh_server(
    tmp_path: Path, sshd: PrivateSshd
) -> None:
    async def hang_up(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hang_up, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        incoming, store = node_dirs(tmp_path)
        peer = Peer("H4", "127.0.0.1", 1, port, str(incoming), str(store))
        with pytest.raises(TransferError, match=r"scp to H4 .* failed: not an SSH server"):
            await ScpTransfer(sshd.ssh_config()).push(write(tmp_path / "s", b"x"), peer, "n")
        nursery.cancel_scope.cancel()


# --- tcp: one read, several receivers -------------------------------------------------------


async def test_tcp_push_many_reaches_every_healthy_receiver(tmp_path: Path, big_file: Path) -> None:
    """One read of the file feeds every receiver; a refusing one and one that hangs up
    mid-stream fail alone, with their reasons, and the others get a whole copy."""
    servers: list[TransferServer] = []
    for i in range(4):
        incoming, store = node_dirs(tmp_path / f"n{i}")
        free = shutil.disk_usage(incoming).free
        reserve = free - 10_000_000 if i == 1 else 64 * 1024 * 1024  # n1: no room
        servers.append(TransferServer(incoming, store, node_name=f"H{i}", reserve_bytes=reserve))

    async def hang_up_midway(request: Any, conn: Connection) -> Any:
        assert isinstance(request, PutStream)
        await conn.stream.receive_some(1024 * 1024)
        await conn.aclose()
        return ErrorReply("gone")

    async with (
        tcp_server(servers[0]) as p0,
        tcp_server(servers[1]) as p1,
        tcp_server(servers[2], hang_up_midway) as p2,
        tcp_server(servers[3]) as p3,
    ):
        peers = [
            Peer(f"H{i}", "127.0.0.1", port, None, str(s.incoming_dir), str(s.store_dir))
            for i, (port, s) in enumerate(zip([p0, p1, p2, p3], servers, strict=True))
        ]
        progress = Recorder()
        results = await TcpTransfer(frame_codec(SECRET)).push_many(
            big_file, [(p, "v1-x") for p in peers], progress
        )
    digest = sha256(big_file)
    for i in (0, 3):
        result = results[i]
        assert not isinstance(result, TransferError), result
        assert result.size == BIG and result.sha256 == digest and result.crc32 is not None
        arrived = servers[i].incoming_dir / "v1-x"
        assert sha256(arrived) == digest
        assert servers[i].arrivals.take(arrived), "a checked arrival is noted for ingest"
    assert isinstance(results[1], TransferError)
    assert "not enough disk space on H1" in str(results[1])
    assert isinstance(results[2], TransferError) and "upload to H2" in str(results[2])
    assert [list(s.incoming_dir.iterdir()) for s in servers[1:3]] == [[], []]
    progress.check(BIG)


async def test_tcp_receiver_refuses_bytes_that_do_not_match_the_senders_checksum(
    tmp_path: Path,
) -> None:
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")
    async with raw_client(server) as conn:
        await conn.send(PutStream("n", 3))
        await conn.stream.send_all(b"abc")
        await conn.send(StreamEnd(3, zlib.crc32(b"abd")))  # what the sender meant to send
        reply = await conn.receive()
    assert isinstance(reply, ErrorReply) and "arrived damaged" in reply.error
    assert list(incoming.iterdir()) == []
    assert not server.arrivals.take(incoming / "n")


async def test_tcp_pull_of_a_file_that_changed_size_midway_fails(tmp_path: Path) -> None:
    """The server announces a size; a file cut short under it ends the stream early and
    the client keeps nothing."""
    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H2")

    async def short(request: Any, conn: Connection) -> Any:
        assert isinstance(request, GetStream)
        await conn.send(StreamStart(10))
        await conn.stream.send_all(b"12345")
        await conn.aclose()
        return ErrorReply("cut")

    async with tcp_server(server, short) as port:
        peer = Peer("H2", "127.0.0.1", port, None, str(incoming), str(store))
        with pytest.raises(TransferError, match=r"hung up after 5 of 10 bytes"):
            await TcpTransfer(frame_codec(SECRET)).pull(peer, "files/x", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    assert leftovers(tmp_path) == []
