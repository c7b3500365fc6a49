"""Local replicas as workers read them: checked against their SHA-256 before use.

A worker reads an input it holds a replica of in place rather than over the network.
The file on disk is trusted only once its SHA-256 matches the version's record (the
digest the leader granted and ingest checked), and then only while it is the same
file (inode, size, modification time): a replica altered or damaged on disk since is
hashed again, and one that no longer matches is not handed out (the caller fetches a
copy from another holder, which ``get`` checks end to end).  Each file version is
hashed at most once while it stays the same file; the cache is bounded.

Hashing blocks: call :meth:`VerifiedReplicas.path` in a worker thread.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
from pathlib import Path

from sdfs.durable import sha256_file
from sdfs.store import ReplicaStore

log = logging.getLogger(__name__)

Identity = tuple[int, int, int]


class VerifiedReplicas:
    LIMIT = 4096

    def __init__(self, store: ReplicaStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        # (name, version) -> identity of the file whose SHA-256 matched its record
        self._checked: collections.OrderedDict[tuple[str, int], Identity] = (
            collections.OrderedDict()
        )
        self.hashed = 0  # files hashed (cache misses)
        self.mismatched = 0  # replicas refused: their bytes are not the version's

    def path(self, name: str) -> Path | None:
        """This node's newest readable replica of ``name``, if it holds one whose bytes
        match the version's SHA-256; None otherwise (blocking)."""
        held = self.store.committed(name)
        if not held:
            return None
        record = held[0]
        path = self.store.data_path(name, record.version)
        key = (name, record.version)
        try:
            st = os.stat(path)
            identity = (st.st_ino, st.st_size, st.st_mtime_ns)
            with self._lock:
                if self._checked.get(key) == identity:
                    self._checked.move_to_end(key)
                    return path
            self.hashed += 1
            if st.st_size != record.size or sha256_file(path) != record.sha256:
                self.mismatched += 1
                log.warning("replica of %s v%d does not match its SHA-256", name, record.version)
                return None
        except OSError:
            return None
        with self._lock:
            self._checked[key] = identity
            self._checked.move_to_end(key)
            while len(self._checked) > self.LIMIT:
                self._checked.popitem(last=False)
        return path
