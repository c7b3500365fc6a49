"""A private OpenSSH server on 127.0.0.1 for tests of SDFS's scp transfer.

``private_sshd()`` generates a host key and a user key in a temporary directory,
writes an sshd_config that allows exactly that user key, starts ``sshd -D`` on a
free loopback port and waits until it greets.  Nothing is configured or started
system-wide: the server, its keys and its logs live and die with the context.

The helper fails (never skips) when ``sshd`` is missing: tests that claim to test
scp must not pass without it.  ``make sshd-deps`` installs it.

Use it directly or through a fixture::

    @pytest.fixture(scope="session")
    def sshd(tmp_path_factory):
        with private_sshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server
"""

from __future__ import annotations

import contextlib
import getpass
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.topology import SSHConfig
from scripts.sshd import SshdError, find_sshd, keygen, write_sshd_config

HOST = "127.0.0.1"
# Generous: a cold CI machine may take a second or two to fork sshd and load keys.
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class PrivateSshd:
    """A running private sshd and what a client needs to log in to it."""

    port: int
    user: str
    user_key: Path  # private key (ed25519, no passphrase) that authorized_keys allows
    known_hosts: Path  # holds exactly "[127.0.0.1]:PORT ssh-ed25519 ..." for this server
    host_pubkey: str  # "ssh-ed25519 AAAA..." (no comment)
    workdir: Path
    log: Path  # sshd's own stderr (-e): the first place to look when a login fails

    @property
    def host(self) -> str:
        return HOST

    @property
    def known_hosts_line(self) -> str:
        return f"[{HOST}]:{self.port} {self.host_pubkey}"

    def ssh_dict(self, **overrides: Any) -> dict[str, Any]:
        """The ``[ssh]`` table of a cluster file that reaches this server."""
        table: dict[str, Any] = {
            "user": self.user,
            "port": self.port,
            "key_file": str(self.user_key),
            "known_hosts": str(self.known_hosts),
            "accept_new_host_keys": False,
        }
        table.update(overrides)
        return table

    def ssh_config(self, **overrides: Any) -> SSHConfig:
        return SSHConfig(**self.ssh_dict(**overrides))

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _greets(port: int) -> bool:
    """True once the server at ``port`` sends its SSH banner (not just accepts)."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as s:
            return s.recv(64).startswith(b"SSH-")
    except OSError:
        return False


@contextmanager
def private_sshd(workdir: Path | None = None) -> Iterator[PrivateSshd]:
    """Run a private sshd on 127.0.0.1 for the duration of the ``with`` block."""
    sshd = find_sshd()
    with tempfile.TemporaryDirectory(prefix="sshd-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        base = base.resolve()
        host_key = base / "ssh_host_ed25519_key"
        user_key = base / "id_ed25519"
        host_pub = keygen(host_key, "private-sshd host key")
        user_pub = keygen(user_key, "private-sshd user key")
        authorized = base / "authorized_keys"
        authorized.write_text(user_pub + "\n")
        authorized.chmod(0o600)
        # Privilege separation needs this directory when sshd runs as root.
        # (Not root: sshd runs unprivileged and does not need it.)
        with contextlib.suppress(OSError):
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = base / "sshd.log"

        # A free port can be taken between our probe and sshd's bind; try a few.
        for _attempt in range(3):
            port = _free_port()
            config = write_sshd_config(base, HOST, port, host_key, authorized)
            known_hosts = base / "known_hosts"
            known_hosts.write_text(f"[{HOST}]:{port} {host_pub}\n")
            with log.open("wb") as log_file:
                proc = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                )
            try:
                deadline = time.monotonic() + START_TIMEOUT
                while proc.poll() is None and not _greets(port):
                    if time.monotonic() > deadline:
                        raise SshdError(
                            f"sshd on {HOST}:{port} did not greet within {START_TIMEOUT:g} s; "
                            f"see {log}"
                        )
                    time.sleep(0.02)
                if proc.poll() is not None:
                    text = log.read_text(errors="replace").strip()
                    if "Address already in use" in text:
                        continue
                    last = text.splitlines()[-1] if text else "no output"
                    raise SshdError(f"sshd exited with status {proc.returncode}: {last}")
                yield PrivateSshd(
                    port=port,
                    user=getpass.getuser(),
                    user_key=user_key,
                    known_hosts=known_hosts,
                    host_pubkey=host_pub,
                    workdir=base,
                    log=log,
                )
                return
            finally:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        raise SshdError(f"sshd could not find a free port on {HOST} in 3 attempts")
