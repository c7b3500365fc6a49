"""The store's group commit (sdfs.storebatch): many versions, one barrier, same invariants."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

import sdfs.storebatch
from net.errors import ErrorKind
from net.messages import VersionRecord, VersionState
from sdfs.names import disk_name
from sdfs.store import ReplicaStore
from sdfs.storebatch import commit_batch, ingest_batch

PENDING = int(VersionState.PENDING)
COMMITTED = int(VersionState.COMMITTED)


def rec(name: str, data: bytes, version: int = 1, put_id: str = "p") -> VersionRecord:
    sha = hashlib.sha256(data).hexdigest()
    return VersionRecord(name, version, f"{put_id}-{name}", len(data), sha, PENDING)


@pytest.fixture
def store(tmp_path: Path) -> ReplicaStore:
    return ReplicaStore(tmp_path)


@pytest.fixture
def barriers(store: ReplicaStore, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Counts the barriers (and still makes them); once ``store`` is open, a batch may
    fsync nothing one by one."""
    seen: list[Path] = []
    real = sdfs.storebatch.barrier

    def counted(root: Path) -> None:
        seen.append(root)
        real(root)

    def no_fsync(fd: int) -> None:
        raise AssertionError("a batch fsyncs nothing one by one")

    monkeypatch.setattr(sdfs.storebatch, "barrier", counted)
    monkeypatch.setattr(os, "fsync", no_fsync)
    return seen


def test_a_batch_is_stored_and_committed_with_one_barrier_each(
    tmp_path: Path, store: ReplicaStore, barriers: list[Path]
) -> None:
    files = {f"d/f{i}": os.urandom(100 + i) for i in range(20)}
    items = [(rec(n, b), "", b) for n, b in files.items()]
    assert ingest_batch(store, items) == [None] * 20
    assert len(barriers) == 1
    assert [r.state for r in store.records()] == [PENDING] * 20
    assert store.names() == []  # pending: not readable yet
    assert commit_batch(store, [(r.name, 1, r.put_id) for r, _, _ in items]) == [None] * 20
    assert len(barriers) == 2
    assert store.names() == sorted(files)
    for name, data in files.items():
        assert store.data_path(name, 1).read_bytes() == data
    # What is on disk is what the index says.
    reopened = ReplicaStore(tmp_path)
    assert set(reopened.records()) == set(store.records())
    assert all(r.state == COMMITTED for r in reopened.records())


def test_a_bad_item_is_refused_alone(
    tmp_path: Path, store: ReplicaStore, barriers: list[Path]
) -> None:
    good = b"good"
    ingest_batch(store, [(rec("taken", b"first", put_id="a"), "", b"first")])
    out = ingest_batch(
        store,
        [
            (rec("ok", good), "", good),
            (rec("liar", good), "", b"evil"),  # not the bytes the record describes
            (rec("taken", b"second", put_id="b"), "", b"second"),  # v1 is another put's
            (rec("lost", good), "no-such-arrival", b""),
            (rec("ok", good), "", good),  # the same put twice in one batch
        ],
    )
    assert out[0] is None
    assert out[1] is not None and "checksum mismatch" in str(out[1])
    assert out[2] is not None and out[2].kind == ErrorKind.CONFLICT
    assert out[3] is not None and "nothing arrived" in str(out[3])
    assert out[4] is not None and "being stored" in str(out[4])
    assert sorted(r.name for r in store.records()) == ["ok", "taken"]
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == sorted(
        disk_name(n) for n in ("ok", "taken")
    )
    # A retry of a put already stored is done, and commits of what is not here are not.
    assert ingest_batch(store, [(rec("ok", good), "", good)]) == [None]
    out = commit_batch(store, [("ok", 1, "p-ok"), ("ok", 1, "other"), ("nope", 1, "p")])
    assert out[0] is None and out[1] is not None and out[2] is not None


def test_an_arrival_streamed_to_incoming_is_taken_from_there(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path)
    data = os.urandom(5000)
    (store.incoming / "xfer").write_bytes(data)
    assert ingest_batch(store, [(rec("big", data), "xfer", b"")]) == [None]
    assert store.data_path("big", 1).read_bytes() == data
    assert list(store.incoming.iterdir()) == []


def test_a_pending_version_whose_data_did_not_survive_a_crash_is_dropped_on_open(
    tmp_path: Path,
) -> None:
    # A batch writes data and PENDING meta before one barrier: a crash may keep the
    # meta and lose (some of) the data.  Such a version was never acknowledged.
    store = ReplicaStore(tmp_path)
    whole, torn, missing = b"whole", b"torn-data", b"missing"
    for name, data in (("whole", whole), ("torn", torn), ("missing", missing)):
        ingest_batch(store, [(rec(name, data), "", data)])
    store.data_path("torn", 1).write_bytes(b"torn")  # short: the rest never landed
    store.data_path("missing", 1).unlink()
    committed = rec("done", b"x")
    ingest_batch(store, [(committed, "", b"x")])
    commit_batch(store, [("done", 1, committed.put_id)])

    reopened = ReplicaStore(tmp_path)
    assert sorted(r.name for r in reopened.records()) == ["done", "whole"]
    for name in ("torn", "missing"):
        assert list((tmp_path / "files" / disk_name(name)).iterdir()) == []


def test_a_torn_meta_loses_only_its_unacknowledged_version(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path)
    ingest_batch(store, [(rec("a", b"a"), "", b"a")])
    meta = tmp_path / "files" / disk_name("a") / "1.meta"
    meta.write_text(json.dumps(asdict(rec("a", b"a")))[:20])  # a crash mid-write
    assert ReplicaStore(tmp_path).records() == []
