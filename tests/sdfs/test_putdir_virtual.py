"""put-dir in batches (sdfs.putdir) on the whole SDFS service, on virtual time.

The cluster is tests.helpers.sdfs_cluster's (5 nodes, 4 replicas, W = 3, RPC with
``D`` seconds each way, copies at 1 MiB per virtual second).  A batch costs one grant
for all its files, one StoreBatch and one CommitBatch per replica and one report,
however many files it holds; so a whole tree takes the time of one put.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio

import sdfs.putdir
from net.progress import human_bytes
from sdfs.metadata import placement
from sdfs.putdir import PutDirFailed
from tests.helpers.sdfs_cluster import MIB_PER_SECOND, SdfsCluster

pytestmark = pytest.mark.timeout(30)

MiB = 1024 * 1024
D = 0.25
RTT = 2 * D
REPLICAS = 4


@pytest.fixture(autouse=True)
def _quiet_membership_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="membership")


async def running(nursery: trio.Nursery, root: Path) -> SdfsCluster:
    cluster = SdfsCluster(nursery, root, 5, replication=REPLICAS, delay=D)
    await cluster.start()
    return cluster


def tree(root: Path, count: int) -> dict[str, bytes]:
    """``count`` small files under ``root`` in three directories; their bytes by path."""
    files = {}
    for i in range(count):
        rel = f"d{i % 3}/f{i:02d}.txt"
        data = random.Random(i).randbytes(100 + i) + b"\n"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        files[rel] = data
    return files


async def crash_at(cluster: SdfsCluster, when: float, *names: str) -> None:
    await trio.sleep_until(when)
    cluster.crash(*names)


async def test_a_tree_goes_in_batches_in_the_time_of_one_put(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = await running(nursery, tmp_path / "cluster")
    root = tmp_path / "tree"
    files = tree(root, 30)
    big = random.Random(99).randbytes(2 * MiB)
    (root / "big.bin").write_bytes(big)
    files["big.bin"] = big
    total = sum(len(b) for b in files.values())
    seen: list[tuple[int, int, str]] = []

    t0 = trio.current_time()
    names = await cluster.client("H3").put_dir(root, "tree", lambda *a: seen.append(a))

    # One grant for all 31 (recorded on a majority first, sdfs.lease: one more round
    # trip inside it); the big file's replicas say where they keep files and it
    # streams to them (the small ones travel inline); then every batch at once: one
    # StoreBatch and one CommitBatch per replica, and one report to the leader.
    assert trio.current_time() - t0 == 2 * RTT + RTT + 2 * MiB / MIB_PER_SECOND + 3 * RTT
    assert names == sorted(f"tree/{rel}" for rel in files)
    live = cluster.live()
    for name in names:
        assert cluster.holders(name, 1) == sorted(placement(name, live, REPLICAS))
    assert await cluster.client("H2").ls_all("tree/*") == names
    assert await cluster.read("H5", "tree/big.bin") == big
    assert await cluster.read("H4", "tree/d1/f07.txt") == files["d1/f07.txt"]
    assert all(cluster.incoming(n) == [] for n in live)
    # Progress in files and bytes, never backwards, ending at the whole.
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert seen[-1] == (31, 31, f"files, {human_bytes(total)} of {human_bytes(total)}")


async def test_a_replica_that_dies_mid_batch_leaves_its_files_on_the_other_three(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = await running(nursery, tmp_path / "cluster")
    root = tmp_path / "tree"
    files = tree(root, 30)
    t0 = trio.current_time()
    # Granted, and the StoreBatches on their way: H5 dies before its arrives.
    nursery.start_soon(crash_at, cluster, t0 + 2 * RTT + D / 2, "H5")

    names = await cluster.client("H3").put_dir(root, "tree")

    assert trio.current_time() - t0 == 5 * RTT  # grant (and its journal), store, commit, report
    assert names == sorted(f"tree/{rel}" for rel in files)
    ring = ["H1", "H2", "H3", "H4", "H5"]
    for name in names:
        assert cluster.holders(name, 1) == sorted(set(placement(name, ring, REPLICAS)) - {"H5"})
    assert cluster.log("putting it again alone") == []
    assert await cluster.read("H2", names[0]) == files[names[0].removeprefix("tree/")]


async def test_files_below_the_write_quorum_fail_by_name_and_leave_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = await running(nursery, tmp_path / "cluster")
    root = tmp_path / "tree"
    tree(root, 30)
    ring = ["H1", "H2", "H3", "H4", "H5"]
    t0 = trio.current_time()
    nursery.start_soon(crash_at, cluster, t0 + RTT + D / 2, "H4", "H5")

    with pytest.raises(PutDirFailed) as failure:
        await cluster.client("H3").put_dir(root, "tree")

    e = failure.value
    every = sorted(f"tree/{p.relative_to(root).as_posix()}" for p in root.rglob("*.txt"))
    # A file whose replicas include both dead nodes is stored on 2 of its 4: it is
    # aborted and put again alone, four at a time.  Those put before the leader
    # notices the failures are placed on the same four and fail again; the rest go
    # to the three live nodes.  Files with one dead replica commit on three at once.
    doomed = {n for n in every if {"H4", "H5"} <= set(placement(n, ring, REPLICAS))}
    assert len(cluster.log("putting it again alone", "H3")) == len(doomed)
    assert e.failed and set(e.failed) <= doomed
    assert sorted([*e.stored, *e.failed]) == every
    for why in e.failed.values():
        assert why.count("fewer than 3 replicas stored it") == 2  # alone, and in its batch
    assert str(e).startswith(f"put-dir: {len(e.failed)} of 30 files failed, ")
    assert "\n" not in str(e)
    # Nothing of a failed file is anywhere: no version, pending or not, no arrival.
    for name in e.failed:
        for node in cluster.live():
            assert cluster.records(node, name) == []
    assert all(cluster.incoming(n) == [] for n in cluster.live())
    assert await cluster.client("H1").ls_all("tree/*") == e.stored
    for name in e.stored:
        assert len((await cluster.client("H1").ls(name)).replicas) >= 3


async def test_a_leader_that_dies_mid_put_dir_is_replaced_for_the_remaining_batches(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sdfs.putdir, "GRANT_FILES", 5)  # six grants for 30 files
    cluster = await running(nursery, tmp_path / "cluster")
    root = tmp_path / "tree"
    files = tree(root, 30)
    t0 = trio.current_time()
    # The first grant is answered; the leader H1 dies before the second arrives.
    nursery.start_soon(crash_at, cluster, t0 + RTT + D / 2, "H1")

    names = await cluster.client("H3").put_dir(root, "tree")

    assert names == sorted(f"tree/{rel}" for rel in files)
    assert cluster.services["H2"].leader.metadata is not None  # H2 leads now
    assert await cluster.client("H2").ls_all("tree/*") == names
    for name in names:
        # The first batch was granted v1 by H1, which died before storing any: H2 never
        # grants a number H1 granted (sdfs.lease), so those files are v2.
        (version,) = (await cluster.client("H2").ls(name)).versions
        holders = cluster.holders(name, version)
        assert len(holders) >= 3 and "H1" not in holders
    assert {(await cluster.client("H2").ls(n)).versions for n in names} == {(1,), (2,)}
    assert cluster.log("leader not told") == []
