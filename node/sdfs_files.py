"""Inference's file store (:class:`inference.files.FileStore`) over today's SDFS service.

A temporary bridge, and the one place that knows it: :class:`~sdfs.service.SdfsService`
answers console-shaped dicts and raises the console's ``CommandError``, so this adapter
picks the values out of the dicts and turns the errors into :mod:`net.errors` types
(by their text, which nothing else may do).  It goes away when SDFS offers a typed
client; inference does not change then.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from console.commands import CommandError
from net.errors import ClusterError, NotFound, NotReady
from net.messages import VersionState
from net.progress import Progress
from sdfs.service import SdfsService


@contextmanager
def _typed() -> Iterator[None]:
    try:
        yield
    except CommandError as e:
        text = str(e)
        if text.startswith("no such SDFS file"):
            raise NotFound(text) from None
        if text.startswith("no SDFS leader answered") or "is not in the cluster" in text:
            raise NotReady(text) from None
        raise ClusterError(text) from None


class SdfsFiles:
    def __init__(self, sdfs: SdfsService) -> None:
        self.sdfs = sdfs

    async def list(self, pattern: str) -> list[str]:
        with _typed():
            return list((await self.sdfs.ls_all(pattern))["files"])

    async def newest_version(self, name: str) -> int:
        with _typed():
            return int((await self.sdfs.ls(name))["versions"][0])

    async def get(self, name: str, local: Path, progress: Progress | None = None) -> None:
        with _typed():
            await self.sdfs.get(name, local, progress)

    async def put(self, local: Path, name: str) -> None:
        with _typed():
            await self.sdfs.put(local, name)

    def local_replica(self, name: str) -> Path | None:
        held = self.sdfs.store.committed(name)
        if held and held[0].state == VersionState.COMMITTED:
            return self.sdfs.store.data_path(name, held[0].version)
        return None
