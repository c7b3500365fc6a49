"""``python -m config.secret new PATH``: write a fresh cluster secret file
(and ``dashboard-token``: print the token a dashboard beyond loopback asks for).

The file holds 32 random bytes (256 bits, from :mod:`secrets`) as 64 hex digits and
a newline, with mode 0600, as :func:`config.topology.read_secret_file` requires.
Name it in the cluster file (``secret_file = "PATH"`` under ``[cluster]``) and copy
it to every machine of the cluster, and to wherever consoles run, over a channel
you trust (scp, a configuration manager).

An existing file is never overwritten without ``--force``: replacing the secret
cuts off every process still using the old one.  With ``--force`` the new file is
written beside the old one and renamed over it, so a reader sees one or the other.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path

from config.topology import SECRET_ENV

# 32 bytes: twice the 16 that check_secret demands, and the HMAC-SHA256 block's
# worth of key material that is useful (longer keys are hashed down anyway).
SECRET_BYTES = 32

EXIT_OK = 0
EXIT_FAILED = 1  # the file exists (without --force) or cannot be written


def new_secret() -> str:
    """A fresh secret: SECRET_BYTES random bytes, hex-encoded."""
    return secrets.token_hex(SECRET_BYTES)


def write_secret_file(path: Path, force: bool = False) -> None:
    """Write a fresh secret to ``path`` with mode 0600.

    FileExistsError if ``path`` exists and not ``force``; OSError for the rest.
    """
    text = new_secret() + "\n"
    if not force:
        # O_EXCL: no window in which another writer's file could be replaced.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        _fill(fd, text)
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        _fill(fd, text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fill(fd: int, text: str) -> None:
    try:
        # The umask may only take bits away; set 0600 exactly all the same.
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def dashboard_token(secret: bytes) -> str:
    """The token a dashboard served beyond loopback asks for (``[http] bind``).

    Derived from the cluster secret, so every node of a cluster accepts the same one and
    an operator can compute it anywhere the secret is (``python -m config.secret
    dashboard-token``); one-way, so the token never reveals the secret that signs the
    cluster's messages.
    """
    return hmac.new(secret, b"idunno dashboard token v1", hashlib.sha256).hexdigest()[:32]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m config.secret",
        description="Manage the cluster secret (the key of the HMAC on every message).",
        epilog=f"The secret can also come from the environment: {SECRET_ENV} overrides "
        "the cluster file's secret and secret_file.",
    )
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    new = sub.add_parser(
        "new",
        help="write a fresh random secret to a new file (mode 0600)",
        description="Write 32 random bytes, hex-encoded, to PATH with mode 0600.",
    )
    new.add_argument("path", metavar="PATH", help="the secret file to create")
    new.add_argument("--force", action="store_true", help="replace PATH if it exists")
    token = sub.add_parser(
        "dashboard-token",
        help="print the token the dashboard and /metrics ask for beyond loopback",
        description="Print the dashboard token of a cluster (derived from its secret). "
        "Open http://HOST:HTTP_PORT/?token=TOKEN once (the browser keeps it), or send "
        "'Authorization: Bearer TOKEN' (Prometheus: bearer_token in the scrape config).",
    )
    token.add_argument("--config", metavar="FILE", help="TOML cluster file (for the secret)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "dashboard-token":
        from config.topology import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_FAILED
        print(dashboard_token(config.secret_bytes))
        return EXIT_OK
    path = Path(args.path)
    try:
        write_secret_file(path, force=args.force)
    except FileExistsError:
        print(f"error: {path} exists; pass --force to replace it", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(f"error: cannot write {path}: {e.strerror}", file=sys.stderr)
        return EXIT_FAILED
    # A relative secret_file is read from the cluster file's directory, not from
    # here, so the hint names the file absolutely.
    print(
        f"wrote a new cluster secret to {path} (mode 0600); put "
        f'secret_file = "{path.resolve()}" under [cluster] in the cluster file '
        "and copy the file to every host"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
