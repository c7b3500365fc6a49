"""scripts/localcluster.py's ``hosts=``: one loopback address per node."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.topology import load_config
from scripts.localcluster import write_cluster_file


def test_each_node_gets_its_own_host_and_the_introducer_stays(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    nodes, introducer = write_cluster_file(path, 3, hosts=hosts, cluster={"transfer": "tcp"})
    assert [n.host for n in nodes] == hosts
    assert introducer.host == "127.0.0.1"
    config = load_config(path)
    assert [(n.name, n.host, n.port) for n in config.nodes] == [
        (n.name, n.host, n.port) for n in nodes
    ]
    assert config.introducer == ("127.0.0.1", introducer.port)


def test_without_hosts_every_node_is_on_host(tmp_path: Path) -> None:
    nodes, introducer = write_cluster_file(tmp_path / "c.toml", 2, host="127.0.0.5")
    assert {n.host for n in nodes} == {introducer.host} == {"127.0.0.5"}


def test_hosts_must_match_the_nodes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 nodes but 2 hosts"):
        write_cluster_file(tmp_path / "c.toml", 3, hosts=["127.0.0.1", "127.0.0.2"])
