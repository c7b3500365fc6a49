"""sdfs.transfer.scp: user keys, the connection cache and remote checks, against a
private sshd (and something that is not one)."""

from __future__ import annotations

import os
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from sdfs.transfer import Peer, ScpTransfer, TransferError
from tests.helpers.sshd import PrivateSshd
from tests.helpers.transfers import node_dirs, scp_peer, sha256, write

pytestmark = pytest.mark.timeout(60)


# --- user keys ----------------------------------------------------------------------


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


# --- connections --------------------------------------------------------------------


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


# --- remote checks ------------------------------------------------------------------


async def test_scp_verify_remote_checks_the_arrived_hash(sshd: PrivateSshd, tmp_path: Path) -> None:
    transfer = ScpTransfer(sshd.ssh_config(), verify_remote=True)
    peer = scp_peer(sshd, tmp_path)
    src = write(tmp_path / "s", os.urandom(3_000_000))
    try:
        r = await transfer.push(src, peer, "v")
        assert r.sha256 == sha256(Path(peer.incoming_dir) / "v") == sha256(src)
    finally:
        await transfer.aclose()
