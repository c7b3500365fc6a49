"""Workers read local replicas in place only after their SHA-256 matched the version's
record, once per file version while it stays the same file (node.sdfs_files over
sdfs.verified)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import pytest

import sdfs.durable
from node.sdfs_files import SdfsFiles
from sdfs.store import ReplicaStore
from tests.sdfs.test_store import put

NAME = "inputs/cat.jpg"


@pytest.fixture
def store(tmp_path: Path) -> ReplicaStore:
    return ReplicaStore(tmp_path / "sdfs", keep=3)


def files(store: ReplicaStore) -> SdfsFiles:
    return SdfsFiles(cast(Any, None), store)  # local_replica needs no client


def count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    real = sdfs.durable.sha256_file

    def counting(path: Any) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr("sdfs.verified.sha256_file", counting)
    return hashed


def test_a_sound_replica_is_read_in_place_and_hashed_once(
    store: ReplicaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(store, NAME, 1, b"meow")
    hashed = count_hashes(monkeypatch)
    adapter = files(store)
    for _ in range(3):
        assert adapter.local_replica(NAME) == store.data_path(NAME, 1)
    assert len(hashed) == 1
    put(store, NAME, 2, b"purr")  # a new version is checked on its own
    assert adapter.local_replica(NAME) == store.data_path(NAME, 2)
    assert len(hashed) == 2


def test_a_replica_altered_on_disk_is_not_handed_to_workers(store: ReplicaStore) -> None:
    put(store, NAME, 1, b"meow")
    adapter = files(store)
    path = store.data_path(NAME, 1)
    assert adapter.local_replica(NAME) == path
    st = os.stat(path)
    path.write_bytes(b"woof")  # same size, other bytes
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert adapter.local_replica(NAME) is None  # the worker fetches a checked copy instead
    assert adapter.replicas is not None and adapter.replicas.mismatched == 1


def test_a_replica_damaged_before_its_first_read_is_refused(store: ReplicaStore) -> None:
    put(store, NAME, 1, b"meow")
    store.data_path(NAME, 1).write_bytes(b"m\x00ow")
    assert files(store).local_replica(NAME) is None


def test_no_replica_no_path(store: ReplicaStore) -> None:
    assert files(store).local_replica(NAME) is None
    assert SdfsFiles(cast(Any, None)).local_replica(NAME) is None
