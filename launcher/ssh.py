"""The launcher's SSH shell: log in to one host, upload files, run the remote script.

Logins are as the scp transfer's (sdfs.transfer.scp): key authentication only (the
operator's key, no agent, no password, no default keys), and the host key must be in
known_hosts; an unknown or changed host key is refused (no AutoAddPolicy, and no
first-use acceptance either: the operator checks fingerprints once, see the README).
Every failure is a :class:`LaunchError` with one line that says what to do.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
import secrets
import shlex
import socket
from pathlib import Path
from typing import Any

from launcher.plan import Login, Upload
from sdfs.transfer.base import TransferError, reason
from sdfs.transfer.hostkeys import host_key_refusal, load_private_key, trust_known_hosts

REMOTE_SCRIPT = Path(__file__).with_name("remote.py")

# Exit statuses of the shell prelude that checks the host before the script runs.
NO_PYTHON = 90
NO_REPO = 91
OLD_PYTHON = 92


class LaunchError(RuntimeError):
    """One host could not be used; the message is one line."""


def load_key(identity: str) -> Any:
    try:
        return load_private_key(identity)
    except TransferError as e:
        raise LaunchError(str(e)) from None


def explain(e: BaseException, login: Login, user: str, identity: str, known_hosts: str) -> str:
    """A failed login, in words that say what to do."""
    import paramiko

    refusal = host_key_refusal(e, known_hosts)
    if refusal is not None:
        if "not in known_hosts" in refusal:
            return (
                f"host key of {login.host} not in known_hosts ({known_hosts}); add it with "
                f"ssh-keyscan -p {login.port} {login.host} and check its fingerprint"
            )
        return refusal
    if isinstance(e, paramiko.AuthenticationException):
        return f"the server refused key {identity} for user {user}"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        errors = list(e.errors.values())
        return f"cannot connect to port {login.port}: {reason(errors[0]) if errors else reason(e)}"
    if isinstance(e, socket.gaierror):
        return f"unknown host name {login.host}"
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "no answer in time (host down or unreachable?)"
    if isinstance(e, paramiko.SSHException) and "banner" in str(e):
        return f"not an SSH server, or it hung up ({reason(e)})"
    return reason(e)


class Host:
    """One logged-in SSH connection to one host."""

    def __init__(
        self,
        login: Login,
        *,
        user: str,
        pkey: Any,
        identity: str,
        known_hosts: str,
        repo: str,
        python: str,
        connect_timeout: float = 10.0,
    ) -> None:
        self.login = login
        self.user = user
        self.identity = identity
        self.known_hosts = known_hosts
        self.repo = repo
        self.python = python
        self.home = ""
        import paramiko

        self.client = paramiko.SSHClient()
        try:
            trust_known_hosts(self.client, known_hosts, accept_new=False)
        except TransferError as e:
            raise LaunchError(str(e)) from None
        try:
            self.client.connect(
                login.host,
                login.port,
                username=user,
                pkey=pkey,
                allow_agent=False,
                look_for_keys=False,
                timeout=connect_timeout,
                banner_timeout=connect_timeout,
                auth_timeout=connect_timeout,
            )
        except Exception as e:
            self.client.close()
            raise LaunchError(explain(e, login, user, identity, known_hosts)) from None

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the remote script ------------------------------------------------------------

    def run(self, spec: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Run :mod:`launcher.remote` with ``spec`` on this host; its JSON answer."""
        py, repo = shlex.quote(self.python), shlex.quote(self.repo)
        prelude = (
            f"command -v {py} >/dev/null 2>&1 || exit {NO_PYTHON}; "
            f"test -f {repo}/main.py || exit {NO_REPO}; "
            f"{py} -c 'import sys; sys.exit(sys.version_info < (3, 11))' || exit {OLD_PYTHON}; "
            f"cd {repo} && exec {py} - {shlex.quote(json.dumps(spec))}"
        )
        try:
            stdin, stdout, stderr = self.client.exec_command(
                f"sh -c {shlex.quote(prelude)}", timeout=timeout
            )
            with contextlib.suppress(OSError, EOFError):  # it may have exited already
                stdin.write(REMOTE_SCRIPT.read_bytes())
                stdin.channel.shutdown_write()
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            code = stdout.channel.recv_exit_status()
        except Exception as e:
            raise LaunchError(f"lost the connection: {reason(e)}") from None
        if code == NO_PYTHON:
            raise LaunchError(f"no Python at {self.python} on this host (--python)")
        if code == NO_REPO:
            raise LaunchError(
                f"no repository at {self.repo} on this host (main.py missing; --repo)"
            )
        if code == OLD_PYTHON:
            raise LaunchError(f"{self.python} on this host is older than Python 3.11")
        lines = out.strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            last = (err.strip().splitlines() or ["no output"])[-1]
            raise LaunchError(f"the launcher's script failed here (exit {code}): {last}")
        if "error" in answer:
            raise LaunchError(f"the launcher's script failed here: {answer['error']}")
        if "home" in answer:
            self.home = str(answer["home"])
        return answer

    # --- files ----------------------------------------------------------------------

    def _sftp_path(self, path: str) -> str:
        if path == "~" or path.startswith("~/"):
            return posixpath.join(self.home or ".", path[2:])
        return path

    def upload(self, item: Upload) -> bool:
        """Put ``item`` in place (mode 0600) unless the same bytes are there; True if written."""
        try:
            data = Path(item.local).read_bytes()
        except OSError as e:
            raise LaunchError(f"cannot read {item.local}: {reason(e)}") from None
        remote = self._sftp_path(item.remote)
        try:
            sftp = self.client.open_sftp()
        except Exception as e:
            raise LaunchError(f"cannot open SFTP: {reason(e)}") from None
        try:
            try:
                with sftp.open(remote, "rb") as f:
                    if f.read(len(data) + 1) == data:
                        sftp.chmod(remote, item.mode)
                        return False
            except OSError:
                pass  # not there yet (or unreadable): write it
            tmp = f"{remote}.tmp-{secrets.token_hex(4)}"
            try:
                with sftp.open(tmp, "wb") as f:
                    sftp.chmod(tmp, item.mode)  # before the bytes go in
                    f.write(data)
                try:
                    sftp.posix_rename(tmp, remote)
                except OSError:  # a server without OpenSSH's posix-rename extension
                    with contextlib.suppress(OSError):
                        sftp.remove(remote)
                    sftp.rename(tmp, remote)
            except OSError as e:
                with contextlib.suppress(OSError):
                    sftp.remove(tmp)
                raise LaunchError(f"cannot write {item.remote}: {reason(e)}") from None
            return True
        finally:
            sftp.close()
