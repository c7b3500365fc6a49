"""The file store as inference sees it: a narrow, typed interface.

Inference reads its inputs and model weights from the cluster's file store and writes
job outputs back to it.  It needs five things, and :class:`FileStore` is exactly those,
with typed results and typed errors (:mod:`net.errors`): a missing file is
:class:`~net.errors.NotFound`, a store that cannot answer yet is
:class:`~net.errors.NotReady`, anything else :class:`~net.errors.ClusterError`.
Nothing here knows how the store is built; the node hands the inference service an
implementation (today an adapter over SDFS, ``node/sdfs_files.py``), and tests hand
it a dictionary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from net.progress import Progress


class FileStore(Protocol):
    async def list(self, pattern: str) -> list[str]:
        """Names of the files that exist and match the glob ``pattern``, sorted."""
        ...

    async def newest_version(self, name: str) -> int:
        """The newest readable version of ``name``; NotFound if there is none."""
        ...

    async def get(self, name: str, local: Path, progress: Progress | None = None) -> None:
        """Copy the newest version of ``name`` to ``local``; NotFound if there is none."""
        ...

    async def put(self, local: Path, name: str) -> None:
        """Store the file ``local`` as a new version of ``name``."""
        ...

    def local_replica(self, name: str) -> Path | None:
        """This node's own readable copy of ``name`` (the newest it holds), if any,
        once its bytes have been checked against the version's SHA-256.

        Workers read such inputs in place instead of copying them over the network.
        It may block (it hashes a file version the first time): call it in a thread.
        """
        ...
