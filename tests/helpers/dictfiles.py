"""A :class:`~inference.files.FileStore` held in a dict, for services on virtual time."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from net.errors import NotFound
from net.progress import Progress


class DictFiles:
    """A :class:`~inference.files.FileStore` in a dict (name -> bytes, one version)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def list(self, pattern: str) -> list[str]:
        return sorted(n for n in self.data if fnmatch.fnmatchcase(n, pattern))

    async def newest_version(self, name: str) -> int:
        if name not in self.data:
            raise NotFound(f"no such file: {name}")
        return 1

    async def get_bytes(self, name: str) -> bytes:
        if name not in self.data:
            raise NotFound(f"no such file: {name}")
        return self.data[name]

    async def get(self, name: str, local: Path, progress: Progress | None = None) -> None:
        local.write_bytes(await self.get_bytes(name))

    async def put(self, local: Path, name: str) -> None:
        self.data[name] = local.read_bytes()

    def local_replica(self, name: str) -> Path | None:
        return None
