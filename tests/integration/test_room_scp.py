"""The file-store contract between distinct hosts over scp, and failures of several hosts.

Five nodes on five testbed hosts (network namespaces with their own addresses,
1 Gbit/s links and an sshd each; see :mod:`scripts.testbed`), ``transfer = "scp"``
with the testbed's operator key and ``known_hosts``: every copy between hosts goes
through a real OpenSSH server that checks the key.  A console on one host puts that
host's own files into the cluster.  Then three hosts' nodes are killed at once, and
separately three hosts' cables pulled: the survivors remove them as fast as on
loopback (issue 12).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from config.topology import CLEANUP_TIME, PING_DURATION, PING_TIMEOUT
from tests.helpers.netns import NetnsCluster, require_netns

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# As the loopback tests' bound: a ping period, its timeout, the suspicion, and slack.
DETECTION_BOUND = PING_DURATION + PING_TIMEOUT + CLEANUP_TIME + 1.5


@pytest.fixture(scope="module")
def room() -> Iterator[NetnsCluster]:
    require_netns()
    began = time.monotonic()
    c = NetnsCluster(5, scp=True)
    try:
        c.build()
        c.start()
        c.wait_views({n: set(c.names) for n in c.names}, 60, "the five hosts to converge")
        print(f"5 hosts up, cluster converged in {time.monotonic() - began:.1f} s")
        yield c
    finally:
        c.close()


def test_the_file_commands_work_between_hosts_over_scp(room: NetnsCluster) -> None:
    c = room
    own = c.workdir / "hosts" / "H3"  # what the console on H3 puts: its own files
    own.mkdir(parents=True, exist_ok=True)
    first, second = os.urandom(3_000_000), os.urandom(1_000_000)
    (own / "data.bin").write_bytes(first)
    put = c.console("H3", "put", str(own / "data.bin"), "room/data.bin", timeout=60)
    assert put["version"] == 1 and len(set(put["replicas"])) == 4
    (own / "data.bin").write_bytes(second)
    assert c.console("H3", "put", str(own / "data.bin"), "room/data.bin")["version"] == 2

    back = c.workdir / "hosts" / "H5" / "back.bin"
    back.parent.mkdir(parents=True, exist_ok=True)
    got = c.console("H5", "get", "room/data.bin", str(back), timeout=60)
    assert (got["version"], got["bytes"]) == (2, len(second)) and back.read_bytes() == second
    listed = c.console("H1", "ls", "room/data.bin")
    assert listed["versions"] == [2, 1] and len(listed["replicas"]) == 4
    holder = listed["replicas"][0]
    assert "room/data.bin" in c.console(holder, "store")["files"]
    versions = c.workdir / "hosts" / "H2" / "versions.txt"
    versions.parent.mkdir(parents=True, exist_ok=True)
    assert c.console("H2", "get-versions", "room/data.bin", "2", str(versions))["versions"] == [
        2,
        1,
    ]
    tree = own / "tree"
    for k in range(3):
        (tree / f"d{k}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{k}" / "f.txt").write_text(f"file {k}\n")
    assert len(c.console("H3", "put-dir", str(tree), "room/tree", timeout=60)["files"]) == 3
    assert len(c.console("H4", "ls-all", "room/*")["files"]) == 4
    assert c.console("H4", "delete", "room/data.bin") == {"ok": True}
    assert c.console("H1", "ls-all", "room/*")["files"] == [
        f"room/tree/d{k}/f.txt" for k in range(3)
    ]

    # A console's bytes stream to the replicas; copies between nodes go over scp.  Kill
    # a holder of one file (not the leader): the leader re-replicates it to the node
    # that had none, which logs the scp login of a node's key from another host.
    name = "room/tree/d0/f.txt"
    holders = c.console("H1", "ls", name)["replicas"]
    (lacking,) = set(c.names) - set(holders)
    victim = next(h for h in holders if h != "H1")
    c.procs[victim].kill()
    deadline = time.monotonic() + 60
    while lacking not in c.console("H1", "ls", name)["replicas"]:
        assert time.monotonic() < deadline, f"{name} was not copied to {lacking}"
        time.sleep(0.5)
    sshd_log = c.bed.workdir / "hosts" / c.host(lacking) / "sshd" / "sshd.log"
    logins = [
        line.split(" from ")[1].split()[0]
        for line in sshd_log.read_text(errors="replace").splitlines()
        if "Accepted publickey for root" in line
    ]
    assert set(logins) & {c.addr(n) for n in c.names if n != lacking}, logins
    c.procs[victim].wait(10)
    c.restart(victim)
    c.wait_views({n: set(c.names) for n in c.names}, 60, f"{victim} to rejoin")


def removed_within(c: NetnsCluster, survivors: list[str], began: float) -> float:
    c.wait_views({n: set(survivors) for n in survivors}, 30, "the survivors to remove the rest")
    return time.monotonic() - began


def test_three_hosts_killed_at_once_then_three_cables_pulled(room: NetnsCluster) -> None:
    c = room
    # Three nodes killed at once (kill -9): H2, H3, H4; H1 and H5 remain.
    began = time.monotonic()
    for name in ("H2", "H3", "H4"):
        c.procs[name].kill()
    killed = removed_within(c, ["H1", "H5"], began)
    print(f"3 nodes killed at once: removed by both survivors in {killed:.1f} s")
    assert killed <= DETECTION_BOUND + 2.0  # the consoles' polling on a busy host
    for name in ("H2", "H3", "H4"):
        c.procs[name].wait(10)
        c.restart(name)
    c.wait_views({n: set(c.names) for n in c.names}, 60, "the three to rejoin")

    # Three cables pulled at once: H3, H4 and H5; H1 and H2 stay.
    began = time.monotonic()
    for name in ("H3", "H4", "H5"):
        c.link(name, up=False)
    try:
        cut = removed_within(c, ["H1", "H2"], began)
    finally:
        for name in ("H3", "H4", "H5"):
            c.link(name, up=True)
    print(f"3 cables pulled at once: removed by both survivors in {cut:.1f} s")
    assert cut <= DETECTION_BOUND + 2.0
    c.assert_running()  # a pulled cable ends no node
