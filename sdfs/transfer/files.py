"""Name rules and atomic writes: what every sender checks and every receiver relies on.

Both ends of every transport use this module: a sender checks a name before it moves
a byte, and a receiver (sdfs.transfer.server, a pull's destination) checks it again
and writes through :class:`AtomicWriter`.

Invariants:

1. A name accepted by :func:`name_problem` is one plain path component: it cannot
   climb out of the flat incoming directory, and it never looks like a temporary.
2. A file written through :class:`AtomicWriter` appears whole or not at all: the bytes
   go to a hidden sibling (:func:`temp_sibling`), are fsynced, and are renamed over
   the target.  A crash can leave only a temporary behind, recognisable with
   :func:`is_temp_name` (the store sweeps them on start).
3. :func:`resolve_inside` answers "is this path inside that root" after symlinks and
   ``..`` are resolved, so a path that only looks inside is refused.

Everything here is blocking; call it from worker threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
from pathlib import Path
from typing import IO

from sdfs.durable import fsync_dir, start_writeback

log = logging.getLogger(__name__)

NAME_MAX = 255  # bytes in one path component on every filesystem we care about
# Longest path a GetStream may name (Linux's PATH_MAX); a store's paths are far shorter.
PATH_MAX = 4096

_TEMP_RE = re.compile(r"^\..*\.[0-9a-f]{12}\.part$", re.DOTALL)


def quoted(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error message, shortened: a peer may send megabytes."""
    r = repr(text)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name in an incoming directory, or None if it can."""
    if not name:
        return "the name is empty"
    if name in (".", ".."):
        return f"{quoted(name)} is not a file name"
    if "/" in name:
        return f"{quoted(name)} contains '/'"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{quoted(name)} contains a NUL or control character"
    try:
        encoded = name.encode()
    except UnicodeEncodeError:
        return f"{quoted(name)} is not valid Unicode"
    if len(encoded) > NAME_MAX:
        return f"the name is {len(encoded)} bytes long (limit {NAME_MAX})"
    if is_temp_name(name):
        return f"{quoted(name)} looks like a transfer's temporary file"
    return None


def path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a file to send, or None (whether it is inside the store is
    :func:`resolve_inside`'s question)."""
    if not path:
        return "the path is empty"
    if len(path) > PATH_MAX:
        # Resolving a path of a million '..' parts takes a worker thread for seconds.
        return f"the path is {len(path)} characters long (limit {PATH_MAX})"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return f"{quoted(path)} contains a NUL or control character"
    return None


def is_temp_name(name: str) -> bool:
    """True for the temporaries of :func:`temp_sibling` (what a crash may leave)."""
    return bool(_TEMP_RE.match(name))


def temp_sibling(target: Path | str) -> str:
    """A fresh hidden name beside ``target``: ``.NAME.<12 hex>.part``, at most NAME_MAX bytes."""
    head, tail = os.path.split(os.fspath(target))
    room = NAME_MAX - len(".." + "0" * 12 + ".part")
    stem = tail.encode()[:room].decode(errors="ignore")
    return os.path.join(head, f".{stem}.{secrets.token_hex(6)}.part")


def resolve_inside(path: str, root: Path | str) -> Path:
    """``path`` (absolute, or relative to ``root``) resolved through symlinks and ``..``,
    if it lies strictly inside ``root``; ValueError otherwise."""
    real_root = Path(root).resolve()
    real = (real_root / path).resolve()
    if real == real_root or not real.is_relative_to(real_root):
        raise ValueError(f"{path} is not inside {root}")
    return real


WRITEBACK_STEP = 8 * 1024 * 1024
"""Bytes an AtomicWriter writes between two starts of write-back."""


class AtomicWriter:
    """Writes ``target`` through a hidden sibling temporary; blocking, for worker threads.

    ``commit`` fsyncs, renames over ``target`` and fsyncs the directory;
    ``discard`` removes the temporary.  Exactly one of them must end its life.
    """

    def __init__(self, target: Path, *, sha256: bool = True) -> None:
        self.target = target
        self.temp = Path(temp_sibling(target))
        # O_EXCL: a temporary we did not create is never ours to overwrite or remove.
        self._file: IO[bytes] | None = open(self.temp, "xb")  # noqa: SIM115
        # Off for a receiver that checks a cheaper checksum (sdfs.transfer.rawstream).
        self._hash = hashlib.sha256() if sha256 else None
        self.size = 0
        self._written_back = 0  # bytes whose write-back to disk has been started

    def write(self, data: bytes | memoryview) -> None:
        assert self._file is not None, "write after commit or discard"
        self._file.write(data)
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        if self.size - self._written_back >= WRITEBACK_STEP:
            # Start the disk writing now, without waiting for it, so that commit's
            # fsync finds little left: a big file's fsync otherwise comes after the
            # last byte, in series with the transfer (sdfs.durable.start_writeback).
            self._file.flush()
            start_writeback(self._file.fileno(), self._written_back, self.size - self._written_back)
            self._written_back = self.size

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of what was written; "" for a writer made with sha256=False."""
        return self._hash.hexdigest() if self._hash is not None else ""

    def commit(self) -> None:
        assert self._file is not None, "commit after commit or discard"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            os.replace(self.temp, self.target)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.target.parent)

    def discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        try:
            self.temp.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove temporary %s: %s", self.temp, e.strerror)
