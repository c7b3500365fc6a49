"""SDFS when the network splits, on virtual time (sdfs.lease).

Five nodes on :class:`tests.helpers.sdfs_cluster.SdfsCluster`; a partition cuts
datagrams and calls between two groups.  Only the side with a majority of the
configured nodes writes; the other refuses with one line; after the heal there is one
leader, every acknowledged put reads back with its content, and the versions of a
name are unique and increasing.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import trio

from net.errors import NoQuorum
from sdfs.client import delimiter
from tests.helpers.sdfs_cluster import SdfsCluster

pytestmark = pytest.mark.timeout(60)

D = 0.25
NODES = ["H1", "H2", "H3", "H4", "H5"]


@pytest.fixture(autouse=True)
def _quiet_membership_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="membership")


def payload(seed: int) -> bytes:
    return random.Random(seed).randbytes(2000) + b"\n"


async def split(cluster: SdfsCluster, *groups: list[str]) -> None:
    """Cut the groups apart and wait until each side's membership is just itself."""
    cluster.nodes.partition(*groups)

    def apart() -> bool:
        return all(sorted(cluster.service(n).peers.ring()) == sorted(g) for g in groups for n in g)

    await cluster.wait_until(apart, 60)


async def heal(cluster: SdfsCluster) -> float:
    """Heal, and wait for one membership and one leader holding the lease: how long."""
    began = trio.current_time()
    cluster.nodes.heal()

    def whole() -> bool:
        rings = [sorted(cluster.service(n).peers.ring()) for n in NODES]
        return all(r == NODES for r in rings) and cluster.settled()

    return await cluster.wait_until(whole, 60) - began


async def check_versions(cluster: SdfsCluster, name: str, acked: dict[int, bytes]) -> None:
    """From every node: the versions are unique, newest first, and each acknowledged
    put that is among the newest ``versions_kept`` reads back with its own content."""
    kept = dict(sorted(acked.items())[-cluster.config.versions_kept :])
    for node in NODES:
        status = await cluster.client(node).ls(name)
        assert list(status.versions) == sorted(set(status.versions), reverse=True)
        assert set(kept) <= set(status.versions)
    out = cluster.root / f"versions-{name}"
    versions = (await cluster.client("H5").ls(name)).versions
    await cluster.client("H5").get_versions(name, len(versions), out)
    data = out.read_bytes()
    for version, content in kept.items():
        assert delimiter(name, version) + content in data


async def test_the_minority_side_refuses_writes_and_the_majority_side_takes_them(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = SdfsCluster(nursery, tmp_path, 5, delay=D)
    await cluster.start()
    acked: dict[int, bytes] = {}
    first = await cluster.put("H3", "f.txt", payload(1))
    acked[first.version] = payload(1)

    await split(cluster, ["H1", "H2"], ["H3", "H4", "H5"])  # the leader H1 in the minority
    with pytest.raises(NoQuorum) as refused:
        await cluster.put("H2", "f.txt", payload(2))
    assert str(refused.value) == (
        "put f.txt: no majority: H1 reaches 2 of 5 configured nodes; writes need 3"
    )
    with pytest.raises(NoQuorum, match="no majority"):
        await cluster.client("H1").delete("f.txt")
    # Reads still answer on the minority side, from what it holds.
    assert await cluster.read("H2", "f.txt") == payload(1)
    await cluster.wait_until(lambda: cluster.leader("H3").lease_term() is not None, 30)
    second = await cluster.put("H4", "f.txt", payload(3))
    acked[second.version] = payload(3)
    assert second.version > first.version
    assert cluster.leader("H3").lease_term() is not None
    assert cluster.leader("H1").lease_term() is None

    took = await heal(cluster)
    assert took < 30
    assert cluster.service("H4").peers.leader() == "H1"  # first in the ring again
    third = await cluster.put("H2", "f.txt", payload(4))
    acked[third.version] = payload(4)
    assert third.version > second.version
    await check_versions(cluster, "f.txt", acked)
    assert await cluster.read("H1", "f.txt") == payload(4)


async def test_writes_racing_the_split_on_both_sides_never_share_a_version(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = SdfsCluster(nursery, tmp_path, 5, delay=D)
    await cluster.start()
    acked: dict[int, bytes] = {}
    refused: list[str] = []
    seeds = iter(range(100, 10_000))

    async def writer(node: str, until: float) -> None:
        while trio.current_time() < until:
            data = payload(next(seeds))
            try:
                result = await cluster.put(node, "race.txt", data)
            except NoQuorum as e:
                refused.append(f"{node}: {e}")
                await trio.sleep(0.5)
                continue
            assert result.version not in acked, f"version {result.version} acknowledged twice"
            acked[result.version] = data

    # Writers on both sides from before the cut until after it is detected.
    end = trio.current_time() + 20
    async with trio.open_nursery() as writers:
        for node in ("H1", "H2", "H4", "H5"):
            writers.start_soon(writer, node, end)
        await trio.sleep(2)
        cluster.nodes.partition(["H1", "H2"], ["H3", "H4", "H5"])
    assert any(r.startswith(("H1", "H2")) and "no majority" in r for r in refused)
    assert not any(r.startswith(("H4", "H5")) and "no majority" in r for r in refused), refused
    await heal(cluster)
    await check_versions(cluster, "race.txt", acked)


async def test_a_leader_cut_off_alone_is_replaced_and_takes_over_again_after_the_heal(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    cluster = SdfsCluster(nursery, tmp_path, 5, delay=D)
    await cluster.start()
    acked = {(await cluster.put("H2", "g.txt", payload(7))).version: payload(7)}
    await split(cluster, ["H1"], ["H2", "H3", "H4", "H5"])
    with pytest.raises(NoQuorum, match="H1 reaches 1 of 5"):
        await cluster.put("H1", "g.txt", payload(8))
    during = await cluster.put("H3", "g.txt", payload(9))  # H2 leads the majority
    acked[during.version] = payload(9)
    await heal(cluster)
    # H1 leads again, under a new term, with the majority's writes in its metadata.
    assert cluster.leader("H1").lease_term() is not None
    assert cluster.leader("H1").term > cluster.leader("H2").term
    after = await cluster.put("H1", "g.txt", payload(10))
    acked[after.version] = payload(10)
    assert after.version > during.version
    await check_versions(cluster, "g.txt", acked)
