"""ReplicaStore: ingest checks, states, pruning, tombstones, reopening and crash leftovers."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import pytest

import sdfs.durable
import sdfs.store
from net.blocking import InlineRunner
from net.errors import ErrorKind
from net.messages import Failure, Ingest, VersionRecord, VersionState
from sdfs.durable import sha256_file
from sdfs.names import BadName, disk_name
from sdfs.replica import Replica
from sdfs.store import ReplicaStore, StoreError, relative_data_path
from tests.helpers.tinydisk import fill, free, tiny_disk

PENDING = int(VersionState.PENDING)
COMMITTED = int(VersionState.COMMITTED)
DELETED = int(VersionState.DELETED)

NAME = "images/cat.jpg"


def rec(
    name: str, version: int, data: bytes, put_id: str | None = None, state: int = PENDING
) -> VersionRecord:
    return VersionRecord(
        name,
        version,
        put_id if put_id is not None else f"put-{name}-{version}",
        len(data),
        hashlib.sha256(data).hexdigest(),
        state,
    )


def arrive(store: ReplicaStore, data: bytes, incoming: str = "xfer-1") -> str:
    (store.incoming / incoming).write_bytes(data)
    return incoming


def put(
    store: ReplicaStore,
    name: str,
    version: int,
    data: bytes | None = None,
    *,
    put_id: str | None = None,
    state: int = COMMITTED,
) -> VersionRecord:
    data = data if data is not None else f"{name} v{version}".encode()
    r = rec(name, version, data, put_id, state)
    return store.ingest(r, arrive(store, data, f"in-{version}"))


def on_disk(store: ReplicaStore, name: str) -> list[str]:
    d = store.files / disk_name(name)
    return sorted(f.name for f in d.iterdir()) if d.exists() else []


def versions(records: list[VersionRecord]) -> list[int]:
    return [r.version for r in records]


def by_key(records: list[VersionRecord]) -> list[VersionRecord]:
    return sorted(records, key=lambda r: (r.name, r.version))


def store_error(fn: Callable[..., object], *args: object) -> str:
    with pytest.raises(StoreError) as info:
        fn(*args)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture
def store(tmp_path: Path) -> ReplicaStore:
    return ReplicaStore(tmp_path / "sdfs", keep=3)


# --- ingest ----------------------------------------------------------------------------


def test_open_creates_the_layout(tmp_path: Path) -> None:
    s = ReplicaStore(tmp_path / "a" / "b")
    assert s.incoming.is_dir() and s.files.is_dir()
    assert s.root == (tmp_path / "a" / "b").resolve()
    assert s.records() == [] and s.names() == []
    assert s.free_bytes() > 0


def test_ingest_pending_stores_bytes_and_meta(store: ReplicaStore) -> None:
    data = b"meow" * 1000
    r = rec(NAME, 1, data)
    assert store.ingest(r, arrive(store, data)) == r
    assert store.data_path(NAME, 1).read_bytes() == data
    assert on_disk(store, NAME) == ["1.data", "1.meta"]
    meta = json.loads((store.files / disk_name(NAME) / "1.meta").read_text())
    assert VersionRecord(**meta) == r
    assert list(store.incoming.iterdir()) == []
    assert store.records() == [r] and store.records(NAME) == [r]


def test_ingest_committed_is_readable_at_once(store: ReplicaStore) -> None:
    r = put(store, NAME, 2)
    assert store.committed(NAME) == [r]
    assert store.names() == [NAME]


def test_ingest_of_an_empty_file(store: ReplicaStore) -> None:
    r = put(store, "empty", 1, b"")
    assert store.committed("empty") == [r]
    assert store.data_path("empty", 1).read_bytes() == b""


def test_ingest_size_mismatch(store: ReplicaStore) -> None:
    r = rec(NAME, 1, b"12345")
    message = store_error(store.ingest, r, arrive(store, b"1234"))
    assert "4 bytes arrived" in message and "5 were sent" in message
    assert list(store.incoming.iterdir()) == []
    assert store.records() == [] and on_disk(store, NAME) == []


def test_ingest_checksum_mismatch(store: ReplicaStore) -> None:
    r = rec(NAME, 1, b"12345")
    message = store_error(store.ingest, r, arrive(store, b"12346"))
    assert "checksum" in message
    assert list(store.incoming.iterdir()) == []
    assert store.records() == [] and on_disk(store, NAME) == []


def test_ingest_of_a_file_that_never_arrived(store: ReplicaStore) -> None:
    message = store_error(store.ingest, rec(NAME, 1, b"x"), "missing")
    assert "nothing arrived" in message
    assert store.records() == []


def test_ingest_of_a_directory_in_incoming_is_refused(store: ReplicaStore) -> None:
    (store.incoming / "dir").mkdir()
    store_error(store.ingest, rec(NAME, 1, b"x"), "dir")
    assert store.records() == []


@pytest.mark.parametrize("incoming", ["", ".", "..", "../outside", "a/b", "/etc/passwd"])
def test_ingest_refuses_bad_incoming_names(store: ReplicaStore, incoming: str) -> None:
    outside = store.root / "outside"
    outside.write_bytes(b"x")
    message = store_error(store.ingest, rec(NAME, 1, b"x"), incoming)
    assert "bad incoming file name" in message
    assert outside.read_bytes() == b"x"  # nothing outside incoming/ is touched
    assert store.records() == []


def test_ingest_refuses_a_bad_sdfs_name_and_drops_the_file(store: ReplicaStore) -> None:
    data = b"x"
    with pytest.raises(BadName):
        store.ingest(rec("../escape", 1, data), arrive(store, data))
    assert list(store.incoming.iterdir()) == []
    assert list(store.files.iterdir()) == []


def test_reingest_with_the_same_put_id_is_a_no_op(store: ReplicaStore) -> None:
    data = b"first"
    first = store.ingest(rec(NAME, 1, data, "p1"), arrive(store, data))
    store.commit(NAME, 1, "p1")
    again = store.ingest(rec(NAME, 1, data, "p1"), arrive(store, data, "retry"))
    assert again == replace(first, state=COMMITTED)  # what is stored, not what was sent
    assert list(store.incoming.iterdir()) == []
    assert store.data_path(NAME, 1).read_bytes() == data
    assert on_disk(store, NAME) == ["1.data", "1.meta"]


def test_ingest_of_a_version_owned_by_another_put_is_refused(store: ReplicaStore) -> None:
    store.ingest(rec(NAME, 1, b"one", "p1"), arrive(store, b"one"))
    message = store_error(store.ingest, rec(NAME, 1, b"two", "p2"), arrive(store, b"two"))
    assert "another put" in message
    assert list(store.incoming.iterdir()) == []
    assert store.data_path(NAME, 1).read_bytes() == b"one"
    assert [r.put_id for r in store.records(NAME)] == ["p1"]


def test_concurrent_ingests_of_one_version_bind_it_to_one_put(store: ReplicaStore) -> None:
    results: list[str] = []

    def ingest(i: int) -> None:
        data = f"put {i}".encode()
        try:
            store.ingest(rec(NAME, 1, data, f"p{i}"), f"in-{i}")
            results.append(f"p{i}")
        except StoreError:
            results.append("refused")

    for i in range(8):
        (store.incoming / f"in-{i}").write_bytes(f"put {i}".encode())
    threads = [threading.Thread(target=ingest, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r != "refused"]
    assert len(winners) == 1
    (stored,) = store.records(NAME)
    assert stored.put_id == winners[0]
    assert store.data_path(NAME, 1).read_bytes() == f"put {winners[0][1:]}".encode()
    assert list(store.incoming.iterdir()) == []


# --- commit and abort -------------------------------------------------------------------


def test_pending_is_never_listed_as_readable(store: ReplicaStore) -> None:
    put(store, NAME, 1, state=PENDING)
    put(store, "other", 1, state=PENDING)
    assert store.committed(NAME) == [] and store.names() == []
    assert versions(store.records(NAME)) == [1]
    put(store, NAME, 2)
    assert versions(store.committed(NAME)) == [2]
    assert store.names() == [NAME]


def test_commit_makes_a_version_readable_and_durable(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path, keep=3)
    r = put(store, NAME, 1, put_id="p1", state=PENDING)
    committed = store.commit(NAME, 1, "p1")
    assert committed == replace(r, state=COMMITTED)
    assert store.committed(NAME) == [committed]
    assert store.commit(NAME, 1, "p1") == committed  # idempotent
    assert ReplicaStore(tmp_path, keep=3).committed(NAME) == [committed]


def test_commit_refusals(store: ReplicaStore) -> None:
    put(store, NAME, 1, put_id="p1", state=PENDING)
    assert "not here" in store_error(store.commit, NAME, 1, "p2")
    assert "not here" in store_error(store.commit, NAME, 2, "p1")
    assert "not here" in store_error(store.commit, "nothing", 1, "p1")
    store.delete(NAME, 3)
    assert "deleted" in store_error(store.commit, NAME, 3, "")
    assert "not here" in store_error(store.commit, NAME, 1, "p1")


def test_abort_drops_only_a_pending_version_of_that_put(store: ReplicaStore) -> None:
    put(store, NAME, 1, put_id="p1")
    put(store, NAME, 2, put_id="p2", state=PENDING)
    store.abort(NAME, 2, "wrong")
    store.abort(NAME, 9, "p2")
    store.abort("nothing", 1, "p1")
    assert versions(store.records(NAME)) == [1, 2]
    store.abort(NAME, 1, "p1")  # committed: stays
    store.abort(NAME, 2, "p2")
    assert versions(store.records(NAME)) == [1]
    assert on_disk(store, NAME) == ["1.data", "1.meta"]


def test_abort_of_the_only_version_removes_the_directory(store: ReplicaStore) -> None:
    put(store, NAME, 1, put_id="p1", state=PENDING)
    store.abort(NAME, 1, "p1")
    assert store.records() == []
    assert not (store.files / disk_name(NAME)).exists()


# --- keep --------------------------------------------------------------------------------


def test_only_the_newest_keep_committed_versions_stay(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path, keep=3)
    for v in range(1, 7):
        put(store, NAME, v)
    assert versions(store.committed(NAME)) == [6, 5, 4]
    assert on_disk(store, NAME) == [f"{v}.{s}" for v in (4, 5, 6) for s in ("data", "meta")]
    reopened = ReplicaStore(tmp_path, keep=3)
    assert versions(reopened.committed(NAME)) == [6, 5, 4]


def test_commit_prunes_too(store: ReplicaStore) -> None:
    for v in (1, 2, 3):
        put(store, NAME, v)
    put(store, NAME, 4, put_id="p4", state=PENDING)
    assert versions(store.records(NAME)) == [1, 2, 3, 4]
    store.commit(NAME, 4, "p4")
    assert versions(store.records(NAME)) == [2, 3, 4]
    assert "1.data" not in on_disk(store, NAME)


def test_pending_below_the_oldest_kept_version_is_dropped(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path, keep=2)
    put(store, NAME, 1, state=PENDING)
    put(store, NAME, 2)
    put(store, NAME, 5, state=PENDING)
    assert versions(store.records(NAME)) == [1, 2, 5]  # only one committed: all stay
    put(store, NAME, 3)
    put(store, NAME, 4)
    # committed 3, 4 kept; pending 1 can never be read; pending 5 may still commit
    assert versions(store.records(NAME)) == [3, 4, 5]
    assert on_disk(store, NAME) == [f"{v}.{s}" for v in (3, 4, 5) for s in ("data", "meta")]


def test_an_old_copy_arriving_late_is_pruned_at_once(store: ReplicaStore) -> None:
    for v in (5, 6, 7):
        put(store, NAME, v)
    put(store, NAME, 2)
    assert versions(store.committed(NAME)) == [7, 6, 5]
    assert "2.data" not in on_disk(store, NAME)


def test_keep_is_per_file(store: ReplicaStore) -> None:
    for v in range(1, 5):
        put(store, "a", v)
        put(store, "b", v)
    assert versions(store.committed("a")) == [4, 3, 2]
    assert versions(store.committed("b")) == [4, 3, 2]
    assert store.names() == ["a", "b"]


# --- tombstones --------------------------------------------------------------------------


def test_delete_leaves_a_tombstone_and_removes_older_versions(store: ReplicaStore) -> None:
    for v in (1, 2, 3):
        put(store, NAME, v)
    store.delete(NAME, 4)
    assert store.records(NAME) == [VersionRecord(NAME, 4, "", 0, "", DELETED)]
    assert store.committed(NAME) == [] and store.names() == []
    assert on_disk(store, NAME) == ["4.meta"]


def test_nothing_at_or_below_a_tombstone_is_accepted_again(store: ReplicaStore) -> None:
    put(store, NAME, 1)
    store.delete(NAME, 4)
    for v, put_id in ((1, "late"), (3, "late"), (4, "late"), (4, "")):
        data = b"late"
        message = store_error(store.ingest, rec(NAME, v, data, put_id), arrive(store, data))
        assert "deleted" in message
        assert list(store.incoming.iterdir()) == []
    assert versions(store.records(NAME)) == [4]


def test_newer_versions_after_a_tombstone_are_accepted(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path, keep=3)
    put(store, NAME, 1)
    store.delete(NAME, 2)
    r = put(store, NAME, 3)
    assert store.committed(NAME) == [r]
    assert store.names() == [NAME]
    assert versions(store.records(NAME)) == [2, 3]
    reopened = ReplicaStore(tmp_path, keep=3)
    assert reopened.records(NAME) == store.records(NAME)
    message = store_error(reopened.ingest, rec(NAME, 2, b"late", "x"), arrive(reopened, b"late"))
    assert "deleted" in message


def test_an_older_tombstone_changes_nothing(store: ReplicaStore) -> None:
    store.delete(NAME, 5)
    store.delete(NAME, 3)
    store.delete(NAME, 5)
    assert versions(store.records(NAME)) == [5]
    store.delete(NAME, 7)  # a newer tombstone replaces the old one
    assert versions(store.records(NAME)) == [7]
    assert on_disk(store, NAME) == ["7.meta"]


def test_a_tombstone_for_a_file_never_held_still_blocks_old_copies(store: ReplicaStore) -> None:
    store.delete("ghost", 3)
    assert store.names() == []
    assert "deleted" in store_error(store.ingest, rec("ghost", 2, b"g"), arrive(store, b"g"))


def test_a_tombstone_at_the_version_of_a_pending_copy_removes_its_bytes(
    tmp_path: Path,
) -> None:
    store = ReplicaStore(tmp_path, keep=3)
    put(store, NAME, 1)
    put(store, NAME, 2, put_id="raced", state=PENDING)
    store.delete(NAME, 2)
    assert store.records(NAME) == [VersionRecord(NAME, 2, "", 0, "", DELETED)]
    assert on_disk(store, NAME) == ["2.meta"]
    assert ReplicaStore(tmp_path).records(NAME) == store.records(NAME)


# --- reopening and crash leftovers --------------------------------------------------------


def test_reopening_restores_the_same_records(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path, keep=3)
    put(store, NAME, 1)
    put(store, NAME, 2, put_id="p2", state=PENDING)
    put(store, "models/resnet50.pth", 7)
    put(store, "ünï/猫 1.png", 1)
    put(store, "gone", 1)
    store.delete("gone", 2)
    reopened = ReplicaStore(tmp_path, keep=3)
    assert by_key(reopened.records()) == by_key(store.records())
    assert (
        reopened.names() == store.names() == sorted(["models/resnet50.pth", NAME, "ünï/猫 1.png"])
    )
    for n in store.names():
        assert reopened.committed(n) == store.committed(n)
    reopened.commit(NAME, 2, "p2")
    assert versions(reopened.committed(NAME)) == [2, 1]


def test_open_removes_incoming_leftovers(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path)
    (store.incoming / "half-a-transfer").write_bytes(b"partial")
    (store.incoming / ".hidden").write_bytes(b"partial")
    ReplicaStore(tmp_path)
    assert list(store.incoming.iterdir()) == []


def test_open_removes_orphan_data_and_temporaries(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path, keep=3)
    put(store, NAME, 1)
    d = store.files / disk_name(NAME)
    (d / "2.data").write_bytes(b"orphan: crashed before its meta")
    (d / "junk.data").write_bytes(b"not a version")
    (d / ".tmp-3.meta").write_text('{"truncated":')
    (d / ".tmp-x").write_bytes(b"")
    reopened = ReplicaStore(tmp_path, keep=3)
    assert on_disk(reopened, NAME) == ["1.data", "1.meta"]
    assert reopened.records() == store.records()


def test_a_directory_of_only_orphans_yields_no_file(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path)
    d = store.files / disk_name("lost")
    d.mkdir()
    (d / "1.data").write_bytes(b"orphan")
    reopened = ReplicaStore(tmp_path)
    assert reopened.records() == []
    assert on_disk(reopened, "lost") == []


def test_an_unfinished_meta_write_is_not_believed(tmp_path: Path) -> None:
    """A crash between writing .tmp-<v>.meta and renaming it: the old meta stands."""
    store = ReplicaStore(tmp_path, keep=3)
    r = put(store, NAME, 1, put_id="p1", state=PENDING)
    d = store.files / disk_name(NAME)
    (d / ".tmp-1.meta").write_text(json.dumps(asdict(replace(r, state=COMMITTED))))
    tomb = VersionRecord(NAME, 5, "", 0, "", DELETED)
    (d / ".tmp-5.meta").write_text(json.dumps(asdict(tomb)))
    reopened = ReplicaStore(tmp_path, keep=3)
    assert reopened.records() == [r]
    assert on_disk(reopened, NAME) == ["1.data", "1.meta"]
    assert ReplicaStore(tmp_path, keep=3).records() == [r]


def test_a_delete_interrupted_after_its_tombstone_is_finished_at_open(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path, keep=3)
    for v in (1, 2):
        put(store, NAME, v)
    d = store.files / disk_name(NAME)
    tomb = VersionRecord(NAME, 3, "", 0, "", DELETED)
    (d / "3.meta").write_text(json.dumps(asdict(tomb)))  # ... and then the crash
    reopened = ReplicaStore(tmp_path, keep=3)
    assert reopened.records(NAME) == [tomb]
    assert reopened.committed(NAME) == [] and reopened.names() == []
    assert on_disk(reopened, NAME) == ["3.meta"]


def test_a_pending_version_whose_data_is_not_whole_is_dropped_on_open(tmp_path: Path) -> None:
    # A put-dir batch writes data and PENDING meta before one barrier (sdfs.storebatch):
    # a crash may keep the meta and lose some of the data.  Never acknowledged: it goes.
    store = ReplicaStore(tmp_path)
    put(store, NAME, 1)  # committed: kept as it is
    put(store, NAME, 2, b"whole", state=PENDING)
    put(store, NAME, 3, b"will be torn", state=PENDING)
    put(store, NAME, 4, b"will be lost", state=PENDING)
    d = store.files / disk_name(NAME)
    (d / "3.data").write_bytes(b"will be")
    (d / "4.data").unlink()
    reopened = ReplicaStore(tmp_path)
    assert versions(reopened.records()) == [1, 2]
    assert on_disk(reopened, NAME) == ["1.data", "1.meta", "2.data", "2.meta"]


def test_unreadable_meta_is_ignored(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path)
    put(store, NAME, 1)
    d = store.files / disk_name(NAME)
    (d / "2.meta").write_text("not json")
    (d / "2.data").write_bytes(b"x")
    (d / "3.meta").write_text('{"name": "x"}')  # missing fields
    (tmp_path / "files" / "stray-file").write_bytes(b"not a directory")
    reopened = ReplicaStore(tmp_path)
    assert versions(reopened.records()) == [1]
    assert "2.data" not in on_disk(reopened, NAME)


# --- gc and paths -------------------------------------------------------------------------


def test_gc_pending_drops_only_old_pending_versions(store: ReplicaStore) -> None:
    put(store, NAME, 1)
    put(store, NAME, 2, state=PENDING)
    put(store, NAME, 3, state=PENDING)
    put(store, "other", 1, state=PENDING)
    old = time.time() - 3600
    d = store.files / disk_name(NAME)
    for v in (1, 2):
        os.utime(d / f"{v}.meta", (old, old))
    os.utime(store.files / disk_name("other") / "1.meta", (old, old))
    assert store.gc_pending(600) == 2
    assert versions(store.records(NAME)) == [1, 3]
    assert store.records("other") == []
    assert not (store.files / disk_name("other")).exists()
    assert on_disk(store, NAME) == [f"{v}.{s}" for v in (1, 3) for s in ("data", "meta")]
    assert store.gc_pending(600) == 0


def test_data_path_and_relative_data_path_agree(store: ReplicaStore) -> None:
    for name in (NAME, "a", "ünï/猫.png", "100%/x"):
        rel = relative_data_path(name, 12)
        assert rel == f"files/{disk_name(name)}/12.data"
        assert len(Path(rel).parts) == 3
        assert store.data_path(name, 12) == store.root / rel
        r = put(store, name, 12, b"bytes of " + name.encode())
        assert store.data_path(name, 12).is_file()
        assert sha256_file(store.data_path(name, 12)) == r.sha256
        assert store.data_path(name, 12).resolve().is_relative_to(store.files)


def test_sha256_file_over_several_chunks(tmp_path: Path) -> None:
    data = os.urandom((1 << 20) * 2 + 123)
    p = tmp_path / "big"
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()


def test_records_are_oldest_first_and_clear_removes_files(store: ReplicaStore) -> None:
    put(store, "b", 2)
    put(store, "b", 1)
    put(store, "a", 1)
    assert versions(store.records("b")) == [1, 2]
    assert store.records("missing") == []
    assert sorted((r.name, r.version) for r in store.records()) == [
        ("a", 1),
        ("b", 1),
        ("b", 2),
    ]
    store.clear(["b", "missing"])
    assert [r.name for r in store.records()] == ["a"]
    assert not (store.files / disk_name("b")).exists()


# --- verified arrivals ------------------------------------------------------------------


def test_a_noted_arrival_is_ingested_without_reading_it_again(
    store: ReplicaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transfer server checked it whole; ingest trusts that note, once."""
    path = store.incoming / arrive(store, b"payload")
    store.arrivals.note(path, hashlib.sha256(b"payload").hexdigest())

    def no_hash(p: Path) -> str:
        raise AssertionError(f"{p} was hashed again")

    monkeypatch.setattr("sdfs.store.sha256_file", no_hash)
    assert store.ingest(rec(NAME, 1, b"payload"), path.name).version == 1
    assert store.data_path(NAME, 1).read_bytes() == b"payload"


def test_a_noted_file_that_was_replaced_is_hashed_again(store: ReplicaStore) -> None:
    path = store.incoming / arrive(store, b"12345")
    store.arrivals.note(path, hashlib.sha256(b"12345").hexdigest())
    path.unlink()
    arrive(store, b"12346")  # same name and size, another file
    message = store_error(store.ingest, rec(NAME, 1, b"12345"), path.name)
    assert "checksum" in message
    assert store.records() == []


def test_an_unnoted_file_is_hashed(store: ReplicaStore) -> None:
    other = store.incoming / arrive(store, b"abc", "other")
    # A note for another file says nothing about this one.
    store.arrivals.note(other, hashlib.sha256(b"12345").hexdigest())
    message = store_error(store.ingest, rec(NAME, 1, b"12345"), arrive(store, b"12346"))
    assert "checksum" in message


def test_a_noted_arrival_is_checked_against_the_granted_digest(
    store: ReplicaStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The note carries the SHA-256 verified on arrival; a file whose verified digest is
    not the record's (the leader's grant) is refused without being read again."""
    path = store.incoming / arrive(store, b"forged!")
    store.arrivals.note(path, hashlib.sha256(b"forged!").hexdigest())

    def no_hash(p: Path) -> str:
        raise AssertionError(f"{p} was hashed again")

    monkeypatch.setattr("sdfs.store.sha256_file", no_hash)
    message = store_error(store.ingest, rec(NAME, 1, b"genuine"), path.name)
    assert "checksum" in message
    assert store.records() == []


def test_old_incoming_leftovers_are_collected(store: ReplicaStore) -> None:
    old = store.incoming / arrive(store, b"x", "old")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    arrive(store, b"y", "new")
    assert store.gc_incoming(600) == 1
    assert [p.name for p in store.incoming.iterdir()] == ["new"]


# --- durability: directory fsyncs ----------------------------------------------------------


Fsyncs = list[tuple[Path, list[str]]]


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Fsyncs:
    """Every directory fsync the store makes, with what the directory held at that moment."""
    calls: Fsyncs = []
    real = sdfs.durable.fsync_dir

    def spy(path: Path | str) -> None:
        p = Path(path)
        calls.append((p, sorted(f.name for f in p.iterdir()) if p.is_dir() else []))
        real(path)

    monkeypatch.setattr(sdfs.store, "fsync_dir", spy)
    return calls


def test_a_new_files_directory_is_fsynced_into_files(store: ReplicaStore, fsyncs: Fsyncs) -> None:
    put(store, NAME, 1)
    d = store.files / disk_name(NAME)
    # files/ is fsynced once the file's directory is in it, before anything lands there.
    first = fsyncs.index((store.files, [disk_name(NAME)]))
    assert all(p != d for p, _ in fsyncs[:first])
    fsyncs.clear()
    put(store, NAME, 2)  # the directory exists: files/ is not fsynced again
    assert store.files not in [p for p, _ in fsyncs]


def test_pruned_versions_are_fsynced_away(tmp_path: Path, fsyncs: Fsyncs) -> None:
    store = ReplicaStore(tmp_path / "sdfs", keep=2)
    put(store, NAME, 1)
    put(store, NAME, 2)
    fsyncs.clear()
    put(store, NAME, 3)  # v1 is pruned
    d = store.files / disk_name(NAME)
    assert fsyncs[-1] == (d, ["2.data", "2.meta", "3.data", "3.meta"])


def test_an_aborted_version_is_fsynced_away(store: ReplicaStore, fsyncs: Fsyncs) -> None:
    put(store, NAME, 1)
    pending = put(store, NAME, 2, state=PENDING)
    fsyncs.clear()
    store.abort(NAME, 2, pending.put_id)
    assert fsyncs == [(store.files / disk_name(NAME), ["1.data", "1.meta"])]
    # The last version of a file: its directory goes, and files/ is fsynced.
    only = put(store, "other.txt", 1, state=PENDING)
    fsyncs.clear()
    store.abort("other.txt", 1, only.put_id)
    assert fsyncs[-1] == (store.files, [disk_name(NAME)])


def test_deleted_and_collected_versions_are_fsynced_away(
    store: ReplicaStore, fsyncs: Fsyncs
) -> None:
    put(store, NAME, 1)
    put(store, NAME, 2)
    fsyncs.clear()
    store.delete(NAME, 3)
    assert fsyncs[-1] == (store.files / disk_name(NAME), ["3.meta"])
    put(store, "p.txt", 1, state=PENDING)
    put(store, "p.txt", 2, state=PENDING)
    fsyncs.clear()
    assert store.gc_pending(-1.0) == 2
    assert fsyncs == [(store.files, [disk_name(NAME)])]


# --- durability: a full disk -----------------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with tiny_disk(tmp_path / "disk") as d:
        yield d


def test_a_full_disk_during_a_meta_write_leaves_nothing_behind(disk: Path) -> None:
    store = ReplicaStore(disk / "sdfs", node="H2")
    put(store, NAME, 1)
    pending = put(store, NAME, 2, state=PENDING)
    data = b"v3 bytes" * 1000
    arrive(store, data, "xfer-3")
    fill(disk)

    # The data is renamed into place (no space needed); its meta cannot be written.
    message = store_error(store.ingest, rec(NAME, 3, data), "xfer-3")
    assert message == f"disk full on H2: cannot store {NAME} v3 (No space left on device)"
    assert on_disk(store, NAME) == ["1.data", "1.meta", "2.data", "2.meta"]
    assert versions(store.records(NAME)) == [1, 2]
    assert list(store.incoming.iterdir()) == []
    # A commit whose meta cannot be rewritten leaves the pending version as it was.
    fill(disk)  # what v3's data took is free again
    message = store_error(store.commit, NAME, 2, pending.put_id)
    assert message == f"disk full on H2: cannot commit {NAME} v2 (No space left on device)"
    assert [(r.version, r.state) for r in store.records(NAME)] == [(1, COMMITTED), (2, PENDING)]
    assert on_disk(store, NAME) == ["1.data", "1.meta", "2.data", "2.meta"]
    # A first version of a new file: no directory is left for it either.
    arrive(store, b"", "xfer-new")
    fill(disk)
    message = store_error(store.ingest, rec("new.txt", 1, b""), "xfer-new")
    assert message.startswith("disk full on H2: cannot store new.txt v1")
    assert sorted(p.name for p in store.files.iterdir()) == [disk_name(NAME)]

    # What reopens is what was there; once there is room, the same writes succeed.
    free(disk)
    assert by_key(ReplicaStore(disk / "sdfs").records()) == by_key(store.records())
    store.ingest(rec(NAME, 3, data), arrive(store, data, "xfer-3"))
    store.commit(NAME, 2, pending.put_id)
    assert [r.state for r in store.records(NAME)] == [COMMITTED, COMMITTED, PENDING]


async def test_a_full_disk_is_a_one_line_failure_from_the_replica(disk: Path) -> None:
    store = ReplicaStore(disk / "sdfs", node="H2")
    put(store, NAME, 1)
    data = b"x" * 5000
    arrive(store, data, "xfer-2")
    fill(disk)
    replica = Replica("H2", store, cast(Any, None), cast(Any, None), cast(Any, None),
                      logging.getLogger("test"), InlineRunner())  # fmt: skip
    reply = await replica.handle(Ingest(rec(NAME, 2, data), "xfer-2"))
    assert reply == Failure(
        int(ErrorKind.FAILED), f"disk full on H2: cannot store {NAME} v2 (No space left on device)"
    )
    assert on_disk(store, NAME) == ["1.data", "1.meta"]


# --- a store deleted while the node runs ------------------------------------------------------


def test_a_deleted_store_is_recreated_empty_and_says_what_was_lost(store: ReplicaStore) -> None:
    assert store.recover_if_deleted() is None
    put(store, NAME, 1)
    put(store, "b.txt", 1, state=PENDING)
    shutil.rmtree(store.root)
    assert store.gc_incoming(0) == 0  # it used to raise
    lost = store.recover_if_deleted()
    assert lost is not None and [(r.name, r.version) for r in lost] == [("b.txt", 1), (NAME, 1)]
    assert store.records() == [] and store.incoming.is_dir() and store.files.is_dir()
    assert store.recover_if_deleted() is None
    put(store, NAME, 2)
    assert versions(store.records(NAME)) == [2]
