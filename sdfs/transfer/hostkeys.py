"""Which SSH hosts the scp transport trusts: known_hosts and the policy for new keys.

Invariants:

1. A host is trusted only if its key is in ``known_hosts`` (``ssh.known_hosts``).  An
   unknown host is refused, unless ``accept_new_host_keys`` is set: then its key is
   appended to known_hosts (trust on first use) and the next change is refused.
2. A host whose key changed is always refused, with both fingerprints in the message.
3. known_hosts is only ever appended to, one line per new host, in a single
   ``O_APPEND`` write: comments and entries paramiko does not understand survive,
   and concurrent first connections cannot interleave.

paramiko is imported late (inside the functions): a node that uses tcp never loads it.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

from sdfs.transfer.base import TransferError, reason

log = logging.getLogger(__name__)


def fingerprint(key: Any) -> str:
    """A host key as ``ssh-keygen -l`` shows it: ``SHA256:<base64>``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyProblem(Exception):
    """Raised from a missing-host-key policy inside paramiko's connect."""


def _policies() -> tuple[type[Any], type[Any]]:
    """(reject unknown, accept and save unknown) policy classes; paramiko is imported late."""
    import paramiko
    from paramiko.hostkeys import HostKeyEntry

    class RejectUnknown(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
        def __init__(self, known_hosts: str) -> None:
            self.known_hosts = known_hosts

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise HostKeyProblem(
                f"host key not in known_hosts ({self.known_hosts}); "
                "set accept_new_host_keys = true to accept on first use"
            )

    class AcceptAndSave(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
        """Trust on first use, and remember: the next change of key is refused.

        Appends one line instead of paramiko's save_host_keys, which rewrites the
        whole file and drops what it does not understand (comments, markers)."""

        def __init__(self, known_hosts: str) -> None:
            self.known_hosts = known_hosts

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            line = HostKeyEntry([hostname], key).to_line()
            try:
                path = Path(self.known_hosts)
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # One write with O_APPEND: concurrent first connections cannot interleave.
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode())
                finally:
                    os.close(fd)
            except OSError as e:
                raise HostKeyProblem(
                    f"cannot save the new host key to {self.known_hosts}: {reason(e)}"
                ) from None
            client.get_host_keys().add(hostname, key.get_name(), key)
            log.warning(
                "accepted new host key of %s (%s %s) and saved it to %s",
                hostname,
                key.get_name(),
                fingerprint(key),
                self.known_hosts,
            )

    return RejectUnknown, AcceptAndSave


def trust_known_hosts(client: Any, known_hosts: str, accept_new: bool) -> None:
    """Load ``known_hosts`` into paramiko ``client`` and set the policy for unknown hosts
    (refuse, or with ``accept_new`` accept and save); TransferError if it is unreadable."""
    import paramiko

    try:
        client.get_host_keys().load(known_hosts)
    except FileNotFoundError:
        pass  # nothing known yet: every host is unknown
    except (OSError, paramiko.SSHException) as e:
        raise TransferError(f"cannot read known_hosts {known_hosts}: {reason(e)}") from e
    reject, accept = _policies()
    policy = accept if accept_new else reject
    client.set_missing_host_key_policy(policy(known_hosts))


def load_private_key(key_file: str) -> Any:
    """The private key in ``key_file`` (paramiko); TransferError in one line if it cannot
    be used, a key with a passphrase included (cluster logins are unattended)."""
    import paramiko

    try:
        return paramiko.PKey.from_path(key_file)
    except (paramiko.PasswordRequiredException, TypeError) as e:
        # cryptography says "password-protected" with a TypeError.
        if isinstance(e, TypeError) and "password" not in str(e):
            raise TransferError(f"cannot use SSH key {key_file}: {e}") from None
        raise TransferError(
            f"SSH key {key_file} is protected by a passphrase; "
            "use a key without one for cluster transfers"
        ) from None
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise TransferError(f"cannot use SSH key {key_file}: {reason(e)}") from None


def host_key_refusal(e: BaseException, known_hosts: str) -> str | None:
    """Why a connection failed, if it failed on the host key; None otherwise."""
    import paramiko

    if isinstance(e, HostKeyProblem):
        return str(e)
    if isinstance(e, paramiko.BadHostKeyException):
        return (
            f"host key changed: known_hosts ({known_hosts}) has "
            f"{e.expected_key.get_name()} {fingerprint(e.expected_key)}, the server "
            f"offered {e.key.get_name()} {fingerprint(e.key)}; refusing (if the host was "
            "reinstalled, remove its old line)"
        )
    return None
