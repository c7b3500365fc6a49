"""Inference's file store (:class:`inference.files.FileStore`) over the SDFS client.

Inference names the five things it needs from a file store; SDFS's typed client
(:class:`~sdfs.client.SdfsClient`) offers them under its own names and result types.
This adapter is the whole translation, and the node (or a console, which has no
replicas of its own) is where the two are wired together, so neither part imports
the other's vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from net.progress import Progress

if TYPE_CHECKING:  # a console imports this adapter too: it needs neither at run time
    from sdfs.client import SdfsClient
    from sdfs.store import ReplicaStore
    from sdfs.verified import VerifiedReplicas


class SdfsFiles:
    def __init__(self, client: SdfsClient, store: ReplicaStore | None = None) -> None:
        self.client = client
        # This node's replicas, read in place by workers once their SHA-256 has been
        # checked (sdfs.verified); None in a console.
        self.store = store
        self.replicas: VerifiedReplicas | None = None
        if store is not None:
            from sdfs.verified import VerifiedReplicas

            self.replicas = VerifiedReplicas(store)

    async def list(self, pattern: str) -> list[str]:
        return await self.client.ls_all(pattern)

    async def newest_version(self, name: str) -> int:
        return (await self.client.ls(name)).versions[0]

    async def get(self, name: str, local: Path, progress: Progress | None = None) -> None:
        await self.client.get(name, local, progress)

    async def put(self, local: Path, name: str) -> None:
        await self.client.put(local, name)

    def local_replica(self, name: str) -> Path | None:
        return None if self.replicas is None else self.replicas.path(name)
