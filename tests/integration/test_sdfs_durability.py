"""SDFS durability with real processes: a node whose data directory is deleted while
it runs says so, keeps running, and the cluster makes the lost copies again."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.localcluster import LocalCluster, wait_for

pytestmark = pytest.mark.integration


def test_a_node_whose_data_directory_is_deleted_runs_on_and_its_copies_come_back(
    cluster_factory: Callable[..., LocalCluster], tmp_path: Path
) -> None:
    c = cluster_factory(5, cluster={"transfer": "tcp"})
    c.wait_converged(timeout=30)
    src = tmp_path / "a.txt"
    src.write_text("hello\n" * 1000)
    c.console("H2", "put", str(src), "a.txt")

    def holders() -> list[str]:
        return list(c.console("H2", "ls", "a.txt")["replicas"])

    first = wait_for(lambda: holders() if len(holders()) == 4 else None, 30, "4 holders")
    victim = sorted(set(first) - {"H1"})[0]  # a holder that is not the leader
    shutil.rmtree(c.workdir / "data" / victim)

    wait_for(
        lambda: "was deleted while the node ran" in c.log_path(victim).read_text(),
        20,
        f"{victim} to notice its store is gone",
    )
    # It runs on and stays a member; the leader (H1) no longer counts its copy and
    # makes a fourth one again (on it, or on the one node that had none).
    assert victim in {n.name for n in c.running()}
    wait_for(
        lambda: "re-replicated a.txt" in c.log_path("H1").read_text(), 30, "a.txt re-replicated"
    )
    now = holders()
    assert len(now) == 4
    if victim in now:
        assert "a.txt" in c.console(victim, "store")["files"]
    out = tmp_path / "got.txt"
    c.console(victim, "get", "a.txt", str(out))
    assert out.read_text() == src.read_text()
    again = c.console(victim, "put", str(src), "b.txt")
    assert len(again["replicas"]) == 4
    assert victim in {n.name for n in c.running()}
