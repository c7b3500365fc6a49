"""Bad input from peers: every SDFS request's names and numbers are checked on arrival.

A peer's message skips the console's command table, so the replica and leader roles
check what they are sent (sdfs.checks): a bad name or a number out of range is
answered ``Failure(INVALID)`` with one line, and nothing reaches the store or the
metadata.  Runs on virtual time over :class:`tests.helpers.sdfs_cluster.SdfsCluster`.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from net.errors import ErrorKind
from net.limits import MAX_VERSION
from net.messages import (
    AbortPut,
    BatchAck,
    BatchItem,
    CommitBatch,
    CommitVersion,
    DeleteReplica,
    Done,
    Failure,
    Ingest,
    ListFiles,
    PutBegin,
    PutBeginBatch,
    PutDone,
    PutDoneBatch,
    PutKey,
    PutWant,
    ReplicateOrder,
    StatRequest,
    StoreBatch,
    VersionRecord,
    VersionState,
)
from net.wire import encode
from tests.helpers.sdfs_cluster import SdfsCluster

pytestmark = pytest.mark.timeout(30)

TOP = 2**64 - 1  # the largest number msgpack carries
PEER = ("10.6.6.6", 666)
COMMITTED = int(VersionState.COMMITTED)


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="membership")


async def running(nursery: trio.Nursery, root: Path) -> SdfsCluster:
    cluster = SdfsCluster(nursery, root, 4, replication=4)
    await cluster.start()
    return cluster


def record(
    name: str = "f", version: int = 1, size: int = 3, state: int = COMMITTED
) -> VersionRecord:
    return VersionRecord(name, version, "put-1", size, "0" * 64, state)


def assert_invalid(reply: Any, *words: str) -> None:
    assert isinstance(reply, Failure), reply
    assert reply.kind == ErrorKind.INVALID, reply
    assert "\n" not in reply.error and len(reply.error) < 200
    for w in words:
        assert w in reply.error


BAD_REPLICA_REQUESTS = [
    (CommitVersion("f", 0, "put-1"), "version"),
    (CommitVersion("f", -1, "put-1"), "version"),
    (CommitVersion("f", MAX_VERSION + 1, "put-1"), "version"),
    (AbortPut("f", -5, "put-1"), "version"),
    (DeleteReplica("f", 0), "version"),
    (DeleteReplica("f", TOP), "version"),
    (DeleteReplica("../f", 3), "'..'"),
    (Ingest(record(size=-1), "x"), "size"),
    (Ingest(record(version=0), "x"), "version"),
    (Ingest(record(version=TOP), "x"), "version"),
    (Ingest(record(state=9), "x"), "state"),
    (Ingest(record(name="a//b"), "x"), "empty part"),
    (ReplicateOrder((record(version=TOP),), ("H3",)), "version"),
    (ReplicateOrder((record(), record(name="/etc/passwd")), ("H3",)), "absolute"),
    (ReplicateOrder((record(size=-7),), ("H3",)), "size"),
    (StatRequest("x\x00y"), "control character"),
]


@pytest.mark.parametrize(
    ("request_", "word"), BAD_REPLICA_REQUESTS, ids=[str(r[0])[:60] for r in BAD_REPLICA_REQUESTS]
)
async def test_a_replica_refuses_bad_names_and_numbers_as_invalid(
    nursery, autojump_clock, tmp_path, request_, word
):
    cluster = await running(nursery, tmp_path)
    service = cluster.service("H3")
    reply = await service.handle(request_, PEER)
    assert_invalid(reply, word)
    assert service.store.records() == []  # nothing reached the store


async def test_a_tombstone_beyond_2_53_is_refused_and_later_puts_get_small_versions(
    nursery, autojump_clock, tmp_path
):
    # A tombstone at 2**64 - 1 used to be stored; the leader folded it in at its next
    # rebuild and every later grant of the name was 2**64, which no message can carry.
    cluster = await running(nursery, tmp_path)
    assert_invalid(await cluster.service("H2").handle(DeleteReplica("f", TOP), PEER), "version")
    put = await cluster.put("H3", "f", b"abc")
    assert put.version == 1


async def test_a_bad_record_in_an_inventory_is_left_out_of_the_leaders_metadata(
    nursery, autojump_clock, tmp_path, caplog
):
    cluster = await running(nursery, tmp_path)
    leader = cluster.leader("H1")
    # A store that holds such records already (written before the checks existed).
    store = cluster.service("H2").store
    store.delete("f", TOP)
    store.delete("../up", 5)
    caplog.set_level(logging.WARNING)
    await leader._become_leader()  # a rebuild from every node's inventory
    assert "left 2 records of H2's inventory out" in caplog.text
    assert leader.metadata is not None and "../up" not in leader.metadata.files
    put = await cluster.put("H3", "f", b"abc")
    assert put.version == 1  # not 2**64
    encode(PutBegin("f", 3, "", "H3"))


BAD_LEADER_REQUESTS = [
    (PutBegin("f", -1, "", "H3"), "size"),
    (PutBegin("f", TOP, "", "H3"), "size"),
    (PutBegin("..", 1, "", "H3"), "'..'"),
    (PutDone(record(name="../x"), ("H2",)), "'..'"),
    (PutDone(record(version=TOP), ("H2",)), "version"),
    (PutDone(record(version=-3), ("H2",)), "version"),
    (PutDone(record(size=-3), ("H2",)), "size"),
    (ListFiles("*" * 5000), "pattern"),
    # A batch is refused whole, before anything is granted or recorded.
    (PutBeginBatch((PutWant("ok", 1), PutWant("..", 1)), "H3"), "'..'"),
    (PutBeginBatch((PutWant("ok", 1), PutWant("f", -1)), "H3"), "size"),
    (PutBeginBatch(tuple(PutWant(f"f{i}", 1) for i in range(4097)), "H3"), "at most 4096"),
    (PutDoneBatch((Done(record(), ("H2",)), Done(record(name="../x"), ("H2",)))), "'..'"),
    (PutDoneBatch((Done(record(), ("H2",)), Done(record(version=TOP), ("H2",)))), "version"),
]


@pytest.mark.parametrize(
    ("request_", "word"), BAD_LEADER_REQUESTS, ids=[str(r[0])[:60] for r in BAD_LEADER_REQUESTS]
)
async def test_the_leader_refuses_bad_names_and_numbers_as_invalid(
    nursery, autojump_clock, tmp_path, request_, word
):
    cluster = await running(nursery, tmp_path)
    reply = await cluster.service("H1").handle(request_, PEER)
    assert_invalid(reply, word)
    metadata = cluster.leader("H1").metadata
    assert metadata is not None and metadata.files == {}


async def test_a_replica_refuses_each_bad_item_of_a_batch_alone(nursery, autojump_clock, tmp_path):
    cluster = await running(nursery, tmp_path)
    service = cluster.service("H3")
    good = VersionRecord("ok", 1, "put-1", 3, hashlib.sha256(b"abc").hexdigest(), 0)
    items = (
        BatchItem(good, "", b"abc"),
        BatchItem(record(name="../x", state=0), "", b"abc"),
        BatchItem(record(version=TOP, state=0), "", b"abc"),
        BatchItem(record(name="g", state=0), "../../etc/passwd", b""),
        BatchItem(record(name="h", state=0), "", b"not what the record says"),
    )
    reply = await service.handle(StoreBatch(items), PEER)
    assert isinstance(reply, BatchAck)
    assert reply.kinds[:3] == (-1, ErrorKind.INVALID, ErrorKind.INVALID)
    assert all(k >= 0 for k in reply.kinds[3:])
    assert all("\n" not in e and len(e) < 200 for e in reply.errors)
    assert [r.name for r in service.store.records()] == ["ok"]
    commits = (PutKey("ok", 1, "put-1"), PutKey("ok", 0, "put-1"), PutKey("/abs", 1, "put-1"))
    reply = await service.handle(CommitBatch(commits), PEER)
    assert isinstance(reply, BatchAck)
    assert reply.kinds == (-1, ErrorKind.INVALID, ErrorKind.INVALID)
    assert service.store.names() == ["ok"]
