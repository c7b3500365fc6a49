"""SDFS at scale: listings in pages, and tables that do not only grow.

A node holding 150,000 versions (long names: 33 MB of inventory, twice the frame
limit) must be counted in a rebuild, ``ls-all`` over them must answer, and the
console's ``store`` must reach the console; tombstones and the leader's entries for
deleted names expire after the grace period, and a node that comes back after it
cannot bring a deleted file back.  Stores are filled through their index (the
seam: writing 150,000 files is minutes of disk work) so each test takes seconds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, cast

import msgpack
import pytest
import trio

import sdfs.metadata
from config.topology import default_config
from net.messages import (
    ConsoleItems,
    ConsoleReply,
    ConsoleRequest,
    Inventory,
    VersionRecord,
    VersionState,
)
from net.rpc import MAX_FRAME, frame_codec
from node.app import NodeApp
from sdfs.leader import GRANT_SWEEP_INTERVAL, MAX_REPAIRS_IN_FLIGHT, REPAIR_LOG_SIZE, LeaderState
from sdfs.store import ReplicaStore
from sdfs.tombstones import STAMP
from tests.helpers.sdfs_cluster import SdfsCluster

pytestmark = pytest.mark.timeout(60)

MANY = 150_000
# 117-byte names: 150,000 of them are 18 MB as a list alone, over the 16 MiB frame.
LONG = "scale/" + "x" * 100


def name_of(i: int) -> str:
    return f"{LONG}/{i:06d}"


def many_records(count: int = MANY) -> dict[str, dict[int, VersionRecord]]:
    committed = int(VersionState.COMMITTED)
    return {
        name_of(i): {1: VersionRecord(name_of(i), 1, f"{i:032x}", 300, "ab" * 32, committed)}
        for i in range(count)
    }


def stuff(store: ReplicaStore, index: dict[str, dict[int, VersionRecord]]) -> None:
    """The seam: ``store`` holds these versions (its index, not its disk)."""
    store._index.update(index)


@pytest.fixture(autouse=True)
def _quiet_membership_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="membership")


async def test_a_leader_rebuilds_from_nodes_holding_150000_versions_and_ls_all_lists_them(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # Three nodes, two copies: once the leader H1 dies, H2 and H3 hold every file
    # twice (nothing to repair).  Each answers the rebuild with 33 MB of records.
    cluster = SdfsCluster(nursery, tmp_path, 3, replication=2, delay=0.25)
    await cluster.start()
    index = many_records()
    for node in ("H2", "H3"):
        stuff(cluster.service(node).store, index)
    cluster.crash("H1")
    await cluster.wait_until(lambda: bool(cluster.log("is the SDFS leader", "H2")), 60)
    (rebuilt,) = cluster.log("is the SDFS leader", "H2")
    assert "rebuilt from 2 nodes (150000 files)" in rebuilt.message
    metadata = cluster.leader("H2").metadata
    assert metadata is not None
    assert metadata.locate(name_of(123_456))[0][0].holders == {"H2", "H3"}

    names = await cluster.client("H3").ls_all()
    assert names == sorted(index)
    tens = [name_of(123_450 + i) for i in range(10)]
    assert await cluster.client("H3").ls_all(f"{LONG}/12345*") == tens
    assert await cluster.client("H3").ls_all("nothing/*") == []


async def test_ls_all_pages_neither_skip_nor_repeat_while_names_come_and_go(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = SdfsCluster(nursery, tmp_path, 1, replication=1)
    await cluster.start()
    metadata = cluster.leader("H1").metadata
    assert metadata is not None
    for i in range(30_000):
        metadata.put_done(VersionRecord(f"f/{i:05d}", 1, f"p{i}", 1, "", 1), ["H1"])
    pages, after = [], ""
    while True:
        names, after = metadata.names_page("f/*", after, 1000)
        pages.append(names)
        # Between pages, a name behind the cursor goes and one ahead comes.
        if names:
            metadata.delete(names[0])
        metadata.put_done(VersionRecord("f/99999", 1, "late", 1, "", 1), ["H1"])
        if not after:
            break
    seen = [n for page in pages for n in page]
    assert len(seen) == len(set(seen))
    assert seen == [f"f/{i:05d}" for i in range(30_000)] + ["f/99999"]


def test_store_pages_hold_whole_names_in_order_under_the_frame_limit(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path / "s")
    index = many_records(10_000)
    first = next(iter(index))
    index[first][2] = dataclasses.replace(index[first][1], version=2)
    stuff(store, index)
    codec = frame_codec(b"secret")
    got: list[VersionRecord] = []
    after = ""
    while True:
        page, after = store.records_page(after)
        assert len(codec.seal(ConsoleItems("p", tuple(page)))) < MAX_FRAME // 8
        got += page
        if not after:
            break
        assert after == page[-1].name
    assert [(r.name, r.version) for r in got] == [
        (n, v) for n in sorted(index) for v in sorted(index[n])
    ]


class Frames:
    """Stands in for the console's stream: keeps what the node sends before its reply."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, msg: Any) -> None:
        self.sent.append(msg)


async def test_the_console_store_command_over_150000_names_reaches_the_console_whole(
    tmp_path: Path,
) -> None:
    config = default_config()
    node = NodeApp(config, config.nodes[0], tmp_path)
    index = many_records()
    stuff(node.sdfs.store, index)
    conn = Frames()
    reply = await node._console_request(ConsoleRequest("store"), cast(Any, conn))
    codec = frame_codec(config.secret_bytes)
    for frame in [*conn.sent, reply]:
        assert len(codec.seal(frame)) < MAX_FRAME  # every frame can be sent
    # What the console prints (console/__main__.py puts the pieces back).
    from net.console_items import merge

    pieces = [f for f in conn.sent if isinstance(f, ConsoleItems)]
    assert isinstance(reply, ConsoleReply) and reply.ok
    assert merge(pieces, reply.data) == {"node": config.nodes[0].name, "files": sorted(index)}


# --- tombstones and bounded tables ------------------------------------------------------


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_a_tombstone_expires_everywhere_and_a_node_back_after_the_grace_brings_nothing_back(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    grace = 100.0
    monkeypatch.setattr(sdfs.metadata, "TOMBSTONE_MARGIN", 60.0)
    cluster = SdfsCluster(nursery, tmp_path, 5, delay=0.25)
    cluster.config = dataclasses.replace(cluster.config, tombstone_grace=grace)
    await cluster.start()
    await cluster.put("H3", "gone.txt", b"old bytes\n")
    await cluster.put("H3", "kept.txt", b"kept\n")
    holders = cluster.holders("gone.txt", 1)
    away = holders[-1]
    assert away != "H1"
    cluster.crash(away)
    await cluster.wait_until(lambda: away not in cluster.service("H1").peers.ring(), 60)
    await cluster.client("H3").delete("gone.txt")
    leader = cluster.leader("H1")
    assert leader.metadata is not None and "gone.txt" in leader.metadata.files
    # The grace period passes: every node's tombstone, then the leader's entry, goes.
    for node in cluster.live():
        for meta in (cluster.service(node).store.files).glob("*/*.meta"):
            age(meta, grace + 1)
    await trio.sleep(grace + 60.0 + 2 * GRANT_SWEEP_INTERVAL)
    assert "gone.txt" not in leader.metadata.files
    for node in cluster.live():
        assert cluster.records(node, "gone.txt") == []
    # The node that missed the delete comes back, its store stamped before the grace.
    age(tmp_path / away / "sdfs" / STAMP, grace + 1)
    await cluster.restart(away, "H1")
    assert cluster.service(away).replica.outdated
    await cluster.wait_until(lambda: cluster.records(away, "gone.txt") == [], 60)
    assert await cluster.client("H2").ls_all() == ["kept.txt"]
    assert "gone.txt" not in leader.metadata.files
    # Its copy of a file that still exists counts again.
    if away in cluster.holders("kept.txt", 1):
        kept = leader.metadata.locate("kept.txt")[0][0]
        assert away in kept.holders
    assert cluster.log("was away longer than the tombstone grace period", "H1")


async def deleted_while_away(nursery: trio.Nursery, tmp_path: Path) -> tuple[SdfsCluster, str]:
    """A 5-node cluster (grace 1,000 s) where ``gone.txt`` was deleted while one of its
    holders (returned) was down."""
    cluster = SdfsCluster(nursery, tmp_path, 5, delay=0.25)
    cluster.config = dataclasses.replace(cluster.config, tombstone_grace=1000.0)
    await cluster.start()
    await cluster.put("H3", "gone.txt", b"old bytes\n")
    away = cluster.holders("gone.txt", 1)[-1]
    cluster.crash(away)
    await cluster.wait_until(lambda: away not in cluster.service("H1").peers.ring(), 60)
    await cluster.client("H3").delete("gone.txt")
    return cluster, away


async def test_a_node_away_less_than_the_grace_still_learns_of_the_delete(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster, away = await deleted_while_away(nursery, tmp_path)
    await trio.sleep(500)
    await cluster.restart(away, "H1")
    assert not cluster.service(away).replica.outdated
    await cluster.wait_until(
        lambda: [r.state for r in cluster.records(away, "gone.txt")] == [VersionState.DELETED], 60
    )
    assert await cluster.client("H2").ls_all() == []


def test_a_store_purges_only_tombstones_older_than_the_grace(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path / "s")
    store.delete("old", 3)
    store.delete("new", 1)
    age(store.files / "old" / "3.meta", 200)
    assert store.purge_tombstones(100) == 1
    assert store.records("old") == [] and not (store.files / "old").exists()
    assert [r.version for r in store.records("new")] == [1]


async def test_the_repair_log_keeps_only_the_newest_repairs(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = SdfsCluster(nursery, tmp_path, 1, replication=1)
    await cluster.start()
    leader = cluster.leader("H1")
    assert leader.state is LeaderState.READY
    for i in range(REPAIR_LOG_SIZE + 10):
        leader.repair_log.append({"name": f"f{i}"})
    assert len(leader.repair_log) == REPAIR_LOG_SIZE
    assert leader.repair_log[0]["name"] == "f10"


def test_entries_granted_and_never_written_are_forgotten(tmp_path: Path) -> None:
    from sdfs.metadata import EMPTY_ENTRY_TTL, Metadata

    m = Metadata(4, 5)
    m.grant("a", "p1", now=0.0)
    m.abort("p1")
    m.grant("b", "p2", now=0.0)  # still out: kept
    assert m.purge(EMPTY_ENTRY_TTL - 1, grace=10.0) == []
    assert m.purge(EMPTY_ENTRY_TTL, grace=10.0) == ["a"]
    assert set(m.files) == {"b"}


async def test_repairs_of_many_files_go_out_in_batches(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # 300 files on H2..H5 (four copies each); H5 dies, so every one needs a copy.
    cluster = SdfsCluster(nursery, tmp_path, 5, delay=0.25)
    await cluster.start()
    index = many_records(300)
    for node in ("H2", "H3", "H4", "H5"):
        stuff(cluster.service(node).store, index)
    leader = cluster.leader("H1")
    assert leader.metadata is not None
    for versions in index.values():
        leader.metadata.put_done(versions[1], ["H2", "H3", "H4", "H5"])
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, len(leader._repairs))
            await trio.sleep(0.01)

    nursery.start_soon(watch)
    cluster.crash("H5")
    await cluster.wait_until(lambda: len(leader.repair_log) >= 300, 120)
    assert most == MAX_REPAIRS_IN_FLIGHT


def test_inventory_pages_decode_fast_and_still_refuse_a_bad_record() -> None:
    from net.wire import DecodeError, decode, encode

    page = Inventory("H2", tuple(many_records(3)[name_of(1)].values()), name_of(1), True)
    assert decode(encode(page)) == page
    raw = msgpack.unpackb(encode(page))
    raw[3][0][1] = True  # a bool where the version (an int) goes
    with pytest.raises(DecodeError, match=r"VersionRecord\.version: expected an integer"):
        decode(msgpack.packb(raw))
    raw[3][0][1] = 1.5  # a float where an int goes
    with pytest.raises(DecodeError):
        decode(msgpack.packb(raw))


async def test_an_outdated_node_still_learns_of_a_delete_whose_tombstone_is_kept(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster, away = await deleted_while_away(nursery, tmp_path)
    age(tmp_path / away / "sdfs" / STAMP, 1001)
    await cluster.restart(away, "H1")
    assert cluster.service(away).replica.outdated
    await cluster.wait_until(
        lambda: [r.state for r in cluster.records(away, "gone.txt")] == [VersionState.DELETED], 60
    )
    assert await cluster.client("H2").ls_all() == []


async def test_python_m_console_store_prints_150000_names_from_a_real_node(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from console.__main__ import main
    from tests.console.conftest import start_node

    node = await start_node(nursery, tmp_path)
    index = many_records()
    stuff(node.app.sdfs.store, index)
    capsys.readouterr()
    code = await trio.to_thread.run_sync(main, node.argv("store", json=True))
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert json.loads(out) == {"node": "H1", "files": sorted(index)}
