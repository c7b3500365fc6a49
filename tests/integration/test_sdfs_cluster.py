"""SDFS as users run it: real processes on 127.0.0.1, driven by ``python -m console``.

The command set runs twice, once with ``transfer = "tcp"`` and once with
``transfer = "scp"`` against a private sshd the tests start (real OpenSSH, real
keys, host keys checked against a known_hosts file).  The failure tests kill
processes with SIGKILL and check that nothing acknowledged is lost.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.localcluster import ConsoleError, LocalCluster, wait_for
from scripts.samples import random_file
from tests.helpers.sshd import PrivateSshd, private_sshd

pytestmark = pytest.mark.integration

REPLICATION = 4


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSshd]:
    with private_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def _cluster_options(transfer: str, sshd: PrivateSshd) -> dict[str, Any]:
    options: dict[str, Any] = {"cluster": {"transfer": transfer}}
    if transfer == "scp":
        options["ssh"] = sshd.ssh_dict()
    return options


@pytest.fixture(scope="module", params=["tcp", "scp"])
def cluster(request: pytest.FixtureRequest, sshd: PrivateSshd) -> Iterator[LocalCluster]:
    with LocalCluster(5, **_cluster_options(request.param, sshd)) as c:
        c.wait_converged(timeout=30)
        yield c


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def console_fails(c: LocalCluster, node: str, *args: str) -> ConsoleError:
    with pytest.raises(ConsoleError) as err:
        c.console(node, *args)
    return err.value


# --- the command set ---------------------------------------------------------------


def test_put_get_ls_store(cluster: LocalCluster, tmp_path: Path) -> None:
    c = cluster
    src = random_file(tmp_path / "a.bin", 300_000)
    put = c.console("H2", "put", str(src), "data/a.bin")
    assert put["name"] == "data/a.bin" and put["version"] >= 1
    assert len(put["replicas"]) >= REPLICATION - 1
    # Every replica, not only the write quorum, has it shortly after.
    listing = wait_for(
        lambda: (ls := c.console("H4", "ls", "data/a.bin")) and len(ls["replicas"]) == 4 and ls,
        10,
        "4 replicas of data/a.bin",
    )
    assert listing["versions"] == [put["version"]]
    for node in [n.name for n in c.nodes]:
        out = tmp_path / f"from-{node}.bin"
        got = c.console(node, "get", "data/a.bin", str(out))
        assert got == {**got, "name": "data/a.bin", "version": put["version"], "bytes": 300_000}
        assert digest(out) == digest(src)
    for holder in listing["replicas"]:
        assert "data/a.bin" in c.console(holder, "store")["files"]
    others = {n.name for n in c.nodes} - set(listing["replicas"])
    for node in others:
        stored = c.console(node, "store")
        assert stored["node"] == node and "data/a.bin" not in stored["files"]
    assert "data/a.bin" in c.console("H5", "ls-all")["files"]
    assert c.console("H5", "ls-all", "data/*")["files"] == ["data/a.bin"]


def test_versions_are_ordered_and_get_versions_reads_them(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    c = cluster
    versions = []
    for i in range(3):
        f = tmp_path / f"v{i}.txt"
        f.write_text(f"content of version {i}\n")
        versions.append(c.console(f"H{i + 1}", "put", str(f), "notes/v.txt")["version"])
    assert versions == sorted(versions) and len(set(versions)) == 3
    got = c.console("H5", "get", "notes/v.txt", str(tmp_path / "newest.txt"))
    assert got["version"] == versions[-1]
    assert (tmp_path / "newest.txt").read_text() == "content of version 2\n"

    out = tmp_path / "two.txt"
    reply = c.console("H3", "get-versions", "notes/v.txt", "2", str(out))
    assert reply["versions"] == [versions[2], versions[1]]
    assert out.read_text() == (
        f"===== notes/v.txt version {versions[2]} =====\ncontent of version 2\n"
        f"===== notes/v.txt version {versions[1]} =====\ncontent of version 1\n"
    )


def test_concurrent_puts_from_different_nodes_get_distinct_versions(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    c = cluster
    results: dict[str, Any] = {}

    def put(node: str) -> None:
        f = tmp_path / f"{node}.txt"
        f.write_text(f"written by {node}\n")
        results[node] = c.console(node, "put", str(f), "race/x.txt")

    threads = [threading.Thread(target=put, args=(n,)) for n in ("H1", "H3", "H5")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = sorted(r["version"] for r in results.values())
    assert len(set(versions)) == 3
    winner = max(results, key=lambda n: results[n]["version"])
    c.console("H2", "get", "race/x.txt", str(tmp_path / "x.txt"))
    assert (tmp_path / "x.txt").read_text() == f"written by {winner}\n"


def test_put_dir_and_delete(cluster: LocalCluster, tmp_path: Path) -> None:
    c = cluster
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    (root / "one.txt").write_text("1")
    (root / "sub" / "two.txt").write_text("22")
    reply = c.console("H1", "put-dir", str(root), "tree")
    assert reply["files"] == ["tree/one.txt", "tree/sub/two.txt"]
    assert c.console("H4", "ls-all", "tree/*")["files"] == ["tree/one.txt", "tree/sub/two.txt"]

    assert c.console("H2", "delete", "tree/one.txt") == {"ok": True}
    assert c.console("H3", "ls-all", "tree/*")["files"] == ["tree/sub/two.txt"]
    err = console_fails(c, "H5", "get", "tree/one.txt", str(tmp_path / "gone"))
    assert err.returncode == 1 and "no such SDFS file" in str(err)
    assert not (tmp_path / "gone").exists()
    for node in c.nodes:
        assert "tree/one.txt" not in c.console(node.name, "store")["files"]
    # A new put after a delete starts a new life with a higher version.
    (root / "one.txt").write_text("again")
    again = c.console("H1", "put", str(root / "one.txt"), "tree/one.txt")
    assert again["version"] > 1


def test_put_dir_of_many_files_small_and_large(cluster: LocalCluster, tmp_path: Path) -> None:
    # Small files go inline in batches, the 2 MB one streams (sdfs.putdir); all of them
    # come back whole from a node that did not write them, each on 4 replicas.
    c = cluster
    root = tmp_path / "many"
    for i in range(300):
        (root / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 7}" / f"f{i:03d}.txt").write_bytes(os.urandom(300 + i))
    random_file(root / "d0" / "photo.jpg", 200_000)
    random_file(root / "big.bin", 2_000_000)
    local = sorted(p for p in root.rglob("*") if p.is_file())
    names = sorted(f"many/{p.relative_to(root).as_posix()}" for p in local)

    assert c.console("H3", "put-dir", str(root), "many", timeout=120)["files"] == names
    assert c.console("H5", "ls-all", "many/*")["files"] == names
    for rel in ("big.bin", "d0/photo.jpg", "d5/f299.txt"):
        assert len(c.console("H1", "ls", f"many/{rel}")["replicas"]) == REPLICATION
        out = tmp_path / "got"
        c.console("H4", "get", f"many/{rel}", str(out))
        assert digest(out) == digest(root / rel)


@pytest.mark.parametrize(
    "args, message",
    [
        (["put", "/nonexistent/file", "x/y"], "does not exist"),
        (["put", "{src}", "../escape"], "'..'"),
        (["put", "{src}", "/abs/name"], "absolute"),
        (["put", "{src}", "bad\x01name"], "control character"),
        (["put", "{src}", "a//b"], "empty part"),
        (["get", "no/such/file", "{out}"], "no such SDFS file"),
        (["ls", "no/such/file"], "no such SDFS file"),
        (["delete", "no/such/file"], "no such SDFS file"),
        (["get-versions", "notes/v.txt", "many", "{out}"], "whole number"),
        (["put-dir", "/nonexistent/dir", "p"], "does not exist"),
    ],
)
def test_bad_input_gets_a_one_line_error(
    cluster: LocalCluster, tmp_path: Path, args: list[str], message: str
) -> None:
    src = tmp_path / "src.txt"
    src.write_text("x")
    out = tmp_path / "out"
    argv = [a.format(src=src, out=out) for a in args]
    before = set(cluster.console("H1", "ls-all")["files"])
    err = console_fails(cluster, "H3", *argv)
    assert err.returncode == 1
    reason = err.stderr.strip()
    assert reason.startswith("error:") and len(reason.splitlines()) == 1
    assert message in reason
    assert not out.exists()
    assert set(cluster.console("H1", "ls-all")["files"]) == before


# --- failures ------------------------------------------------------------------------


def _holders(c: LocalCluster, via: str, name: str) -> list[str]:
    return list(c.console(via, "ls", name)["replicas"])


@pytest.mark.background  # mostly waits for failure detection
@pytest.mark.parametrize("transfer", ["tcp", "scp"])
def test_three_of_four_holders_killed_at_once(
    transfer: str, sshd: PrivateSshd, tmp_path: Path
) -> None:
    with LocalCluster(7, **_cluster_options(transfer, sshd)) as c:
        c.wait_converged(timeout=30)
        src = random_file(tmp_path / "big.bin", 40_000_000)
        c.console("H1", "put", str(src), "big.bin", timeout=120)
        (tmp_path / "v2.bin").write_bytes(src.read_bytes()[::-1])  # a second, newest version
        newest = c.console("H2", "put", str(tmp_path / "v2.bin"), "big.bin", timeout=120)

        def four_holders() -> list[str] | None:
            h = _holders(c, "H1", "big.bin")
            return h if len(h) == 4 else None

        holders = wait_for(four_holders, 30, "4 holders")
        # Kill three holders, the leader among them if it holds a copy.
        victims = sorted(holders, key=lambda n: n != "H1")[:3]
        survivors = [n.name for n in c.nodes if n.name not in victims]
        killed = time.monotonic()
        for v in victims:
            c.kill(v)
        reader = (
            next(s for s in survivors if s not in holders)
            if any(s not in holders for s in survivors)
            else survivors[0]
        )
        out = tmp_path / "after.bin"
        got = c.console(reader, "get", "big.bin", str(out), timeout=120)
        assert got["version"] == newest["version"]
        assert digest(out) == digest(tmp_path / "v2.bin")

        def four_live_copies() -> bool:
            h = _holders(c, survivors[0], "big.bin")
            return len(h) == 4 and not set(h) & set(victims)

        wait_for(four_live_copies, 60, "4 live copies again", interval=0.1)
        took = time.monotonic() - killed
        print(f"[{transfer}] killed {victims}; 4 live copies again {took:.2f} s after the kill")
        for name in survivors:
            log = c.log_path(name).read_text()
            for line in log.splitlines():
                if "re-replicated big.bin" in line or "SDFS leader" in line:
                    print(f"  {name}: {line}")


@pytest.mark.background  # mostly waits for failure detection
def test_leader_killed_during_a_stream_of_puts(tmp_path: Path) -> None:
    with LocalCluster(6, cluster={"transfer": "tcp"}) as c:
        c.wait_converged(timeout=30)
        acknowledged: dict[str, str] = {}
        failed: list[str] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():
                name = f"stream/{i}.txt"
                f = tmp_path / f"{i}.txt"
                f.write_text(f"payload {i} {os.urandom(8).hex()}\n")
                try:
                    c.console("H4", "put", str(f), name, timeout=60)
                except ConsoleError as e:
                    failed.append(f"{name}: {e}")
                else:
                    acknowledged[name] = f.read_text()
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        wait_for(lambda: len(acknowledged) >= 5, 30, "some puts before the kill")
        c.kill("H1")  # the leader
        killed_at = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= killed_at + 5, 60, "puts after the failover")
        stop.set()
        t.join()
        print(f"{len(acknowledged)} puts acknowledged, {len(failed)} reported failed: {failed}")
        for name, content in acknowledged.items():
            out = tmp_path / "check.txt"
            c.console("H5", "get", name, str(out))
            assert out.read_text() == content, name
        listed = set(c.console("H2", "ls-all", "stream/*")["files"])
        assert set(acknowledged) <= listed


@pytest.mark.background  # mostly waits for failure detection
def test_a_rejoined_node_never_serves_its_old_copies(tmp_path: Path) -> None:
    with LocalCluster(6, cluster={"transfer": "tcp"}) as c:
        everyone = {n.name for n in c.nodes}
        c.wait_converged(timeout=30)
        (tmp_path / "old.txt").write_text("old\n")
        c.console("H2", "put", str(tmp_path / "old.txt"), "doc.txt")
        c.console("H2", "put", str(tmp_path / "old.txt"), "gone.txt")

        def shared_holders() -> set[str] | None:
            a, b = set(_holders(c, "H2", "doc.txt")), set(_holders(c, "H2", "gone.txt"))
            return ((a & b) - {"H1"}) if len(a) == len(b) == 4 else None

        both = wait_for(shared_holders, 30, "4 holders of each file")
        victim = sorted(both)[0]  # holds both, and is not the leader
        c.kill(victim)
        c.wait_converged(everyone - {victim}, timeout=15)
        (tmp_path / "new.txt").write_text("new\n")
        newest = c.console("H3", "put", str(tmp_path / "new.txt"), "doc.txt")
        c.console("H3", "delete", "gone.txt")

        c.start_node(victim)
        c.wait_converged(everyone, timeout=15)
        out = tmp_path / "read.txt"
        got = c.console(victim, "get", "doc.txt", str(out))
        assert got["version"] == newest["version"] and out.read_text() == "new\n"
        err = console_fails(c, victim, "get", "gone.txt", str(tmp_path / "x"))
        assert "no such SDFS file" in str(err)
        # The leader tells the returning node what was deleted while it was away.
        wait_for(
            lambda: "gone.txt" not in c.console(victim, "store")["files"],
            10,
            f"{victim} to drop its copy of a deleted file",
        )


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_large_files_stream_through_in_bounded_memory(tmp_path: Path) -> None:
    size = 512 * 1024 * 1024
    with LocalCluster(4, cluster={"transfer": "tcp"}) as c:
        c.wait_converged(timeout=30)
        src = random_file(tmp_path / "large.bin", size)
        put = c.console("H1", "put", str(src), "large.bin", timeout=300)
        assert len(put["replicas"]) >= 3
        out = tmp_path / "large.out"
        c.console("H4", "get", "large.bin", str(out), timeout=300)
        assert digest(out) == digest(src)
        peaks = {name: _peak_rss_mb(p.pid) for name, p in c.procs.items()}
        print(f"peak RSS per node after a 512 MiB put and get: {peaks}")
        assert all(mb < 200 for mb in peaks.values()), peaks
