"""OpenSSH servers of our own: keys, configuration, the binary.

Shared by the tests' private sshd on loopback (``tests/helpers/sshd.py``) and the
testbed's sshd on every simulated host (:mod:`scripts.testbed`).  Nothing here
starts a server or touches the system's own configuration.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class SshdError(RuntimeError):
    """The private sshd could not be started; the message says why, on one line."""


def find_sshd() -> str:
    """The absolute path of sshd (it refuses to re-exec itself from a relative one)."""
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    raise SshdError(
        "sshd not found (looked on PATH, /usr/sbin, /usr/local/sbin); the scp transfer "
        "tests need an OpenSSH server binary: run `make sshd-deps` "
        "(apt-get install openssh-server)"
    )


def keygen(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` / ``path.pub``; returns "ssh-ed25519 AAAA..."."""
    keygen = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
    try:
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
    except FileNotFoundError:
        raise SshdError("ssh-keygen not found; install openssh-client") from None
    except subprocess.CalledProcessError as e:
        raise SshdError(f"ssh-keygen failed: {e.stderr.decode(errors='replace').strip()}") from None
    kind, blob = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def write_sshd_config(
    workdir: Path, host: str, port: int, host_key: Path, authorized: Path
) -> Path:
    """An sshd_config in ``workdir`` for a private server on ``host``:``port`` that
    admits exactly the keys in ``authorized`` (no passwords)."""
    lines = [
        f"ListenAddress {host}",
        f"Port {port}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}",
        f"PidFile {workdir / 'sshd.pid'}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        # The keys live in a pytest tmp dir whose parents sshd would otherwise vet.
        "StrictModes no",
        "UsePAM no",
        "Subsystem sftp internal-sftp",
        # VERBOSE logs the key each login offered: what you want when one is refused.
        "LogLevel VERBOSE",
    ]
    config = workdir / "sshd_config"
    config.write_text("\n".join(lines) + "\n")
    return config
