"""A real, tiny, fillable file system for tests of what a full disk does (root only).

:func:`tiny_disk` mounts a 2 MiB tmpfs on a directory and unmounts it afterwards;
:func:`fill` uses up every byte left on it, so the next write that needs a page
fails with ENOSPC, as on a real full disk.  Where mounting is not allowed (not
root), the test is skipped.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = "filler"


@contextlib.contextmanager
def tiny_disk(where: Path, size: str = "2m") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "none", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def fill(disk: Path) -> None:
    """Use up every byte left on ``disk`` (appending to its filler file)."""
    with (disk / FILLER).open("ab", buffering=0) as f:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


def free(disk: Path) -> None:
    """Give back what :func:`fill` took."""
    (disk / FILLER).unlink()
