"""sdfs.transfer.hostkeys: which hosts the scp transport trusts, against a private sshd."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sdfs.transfer import ScpTransfer, TransferError
from tests.helpers.sshd import PrivateSshd
from tests.helpers.transfers import scp_peer, write

pytestmark = pytest.mark.timeout(60)


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
