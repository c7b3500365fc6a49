"""The Transfer contract (sdfs.transfer.base), checked against every transport at once.

Each test runs on ``env`` (tcp, scp) or ``any_env`` (tcp, scp, local) against real
servers on 127.0.0.1: round trips with the progress contract, whole-or-nothing
destinations under failure and cancellation, refused names and paths, unreachable
peers; and make_transfer's choice among the transports (sdfs.transfer).
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import trio

from config.topology import ClusterConfig, Node
from net.rpc import frame_codec
from sdfs.transfer import Peer, ScpTransfer, TcpTransfer, TransferError, make_transfer
from tests.helpers.sshd import PrivateSshd
from tests.helpers.transfers import (
    BAD_NAMES,
    BIG,
    SECRET,
    Env,
    Recorder,
    leftovers,
    node_dirs,
    sha256,
    write,
)

pytestmark = pytest.mark.timeout(60)


# --- round trips --------------------------------------------------------------------


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
    pushed.check(size, label=f"{src.name} -> H2")

    stored = env.store / "files" / "f.data"
    shutil.move(arrived, stored)
    out = env.work / "out.bin"
    pulled = Recorder()
    result = await env.transfer.pull(env.peer, str(stored), out, pulled)
    assert (result.size, result.sha256) == (size, digest)
    assert sha256(out) == digest
    pulled.check(size, label="f.data <- H2")
    assert leftovers(env.incoming, env.work) == []


async def test_pull_with_expected_size_reports_total_from_the_start(env: Env) -> None:
    write(env.store / "files" / "f.data", b"x" * 3_000_000)
    rec = Recorder()
    await env.transfer.pull(
        env.peer,
        str(env.store / "files" / "f.data"),
        env.work / "o",
        rec,
        label="f <- H2",
        expected_size=3_000_000,
    )
    rec.check(3_000_000, label="f <- H2")
    assert {t for _, t in rec.calls} == {3_000_000}


async def test_push_many_reports_once_under_one_label(any_env: Env, tmp_path: Path) -> None:
    """One progress for the whole fan-out, under the label given (or the default that
    names every target), whichever transport runs it."""
    env = any_env
    src = write(tmp_path / "s.bin", os.urandom(100_000))
    name = env.peer.name
    for label, expected in ((None, f"s.bin -> {name}, {name}"), ("mine", "mine")):
        rec = Recorder()
        results = await env.transfer.push_many(
            src, [(env.peer, "a"), (env.peer, "b")], rec, label=label
        )
        assert [getattr(r, "sha256", r) for r in results] == [sha256(src)] * 2
        rec.check(100_000, label=expected)
    assert sorted(p.name for p in env.incoming.iterdir()) == ["a", "b"]


async def test_push_replaces_an_existing_incoming_file(env: Env, tmp_path: Path) -> None:
    write(env.incoming / "n", b"old contents")
    await env.transfer.push(write(tmp_path / "s", b"new"), env.peer, "n")
    assert (env.incoming / "n").read_bytes() == b"new"


# --- atomicity ----------------------------------------------------------------------


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

        def cancel_on_progress(done: int, total: int, label: str) -> None:
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

        def cancel_on_progress(done: int, total: int, label: str) -> None:
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


# --- validation ---------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
async def test_bad_names_are_refused(any_env: Env, name: str, tmp_path: Path) -> None:
    env = any_env
    src = write(tmp_path / "s", b"data")
    with pytest.raises(TransferError, match="refused") as info:
        await env.transfer.push(src, env.peer, name)
    assert "\n" not in str(info.value)
    assert list(env.incoming.iterdir()) == []
    assert not (env.store / "x").exists()


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


async def test_download_of_a_directory_is_refused(any_env: Env) -> None:
    env = any_env
    with pytest.raises(TransferError, match=r"not a regular file|directory"):
        await env.transfer.pull(env.peer, str(env.store / "files"), env.work / "o")
    assert not (env.work / "o").exists()


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


# --- choosing -----------------------------------------------------------------------


def test_make_transfer_follows_the_cluster_file() -> None:
    nodes = (Node("H1", "127.0.0.1", 8001),)
    codec = frame_codec(SECRET)
    assert isinstance(make_transfer(ClusterConfig(nodes=nodes, transfer="tcp"), codec), TcpTransfer)
    scp = make_transfer(ClusterConfig(nodes=nodes, transfer="scp"), codec)
    assert isinstance(scp, ScpTransfer)
    assert scp.key_file == os.path.expanduser("~/.ssh/id_ed25519")
