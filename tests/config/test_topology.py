"""The built-in cluster, the TOML cluster file, and its one-line errors."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path
from typing import Any

import pytest

from config.topology import (
    CLEANUP_TIME,
    PING_DURATION,
    PING_TIMEOUT,
    ClusterConfig,
    ConfigError,
    M,
    MembershipConfig,
    Node,
    SSHConfig,
    check_secret,
    config_from_dict,
    default_config,
    load_config,
    parse_address,
    profile,
)

# The full example of shared/INTERFACE.md, verbatim.
INTERFACE_EXAMPLE = textwrap.dedent(
    """\
    [cluster]
    introducer = "127.0.0.1:8888"
    secret = "change-me"          # key for the HMAC on every message
    M = 3
    ping_duration = 1.0           # seconds between pings to each monitored neighbour
    ping_timeout = 1.0            # seconds to wait for an ack
    cleanup_time = 3.0            # seconds a suspect has to refute before removal
    replication = 4               # copies of every SDFS file
    transfer = "scp"              # or "tcp": built-in stream, for hosts without an SSH server

    [ssh]
    user = "root"
    port = 22
    key_file = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"
    accept_new_host_keys = false

    [[nodes]]                     # ring order is the order of this list
    name = "H1"
    host = "127.0.0.1"
    port = 8001
    ssh_port = 2222               # optional per-node override of [ssh] port
    """
)


def minimal(**sections: Any) -> dict[str, Any]:
    """A valid parsed cluster file with two nodes, plus the given sections."""
    data: dict[str, Any] = {
        "nodes": [
            {"name": "A", "host": "127.0.0.1", "port": 9001},
            {"name": "B", "host": "127.0.0.1", "port": 9002},
        ]
    }
    data.update(sections)
    return data


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    message = str(info.value)
    assert "\n" not in message, f"error spans several lines: {message!r}"
    return message


# --- the built-in cluster -----------------------------------------------------------------


def test_builtin_cluster_is_ten_loopback_nodes_in_ring_order():
    cfg = default_config()
    assert [n.name for n in cfg.nodes] == [f"H{i}" for i in range(1, 11)]
    assert [n.address for n in cfg.nodes] == [("127.0.0.1", 8000 + i) for i in range(1, 11)]
    assert cfg.introducer == ("127.0.0.1", 8888)
    assert cfg.ring_index() == {f"H{i}": i - 1 for i in range(1, 11)}


def test_builtin_timings_are_the_documented_defaults():
    m = default_config().membership
    assert (M, PING_DURATION, PING_TIMEOUT, CLEANUP_TIME) == (3, 1.0, 1.0, 3.0)
    assert (m.monitors, m.ping_duration, m.ping_timeout, m.cleanup_time) == (3, 1.0, 1.0, 3.0)
    assert m.max_datagram <= 1400


def test_load_config_without_a_file_is_the_builtin_cluster():
    assert load_config(None) == default_config()


def test_node_for_names_unconfigured_members_host_port():
    cfg = default_config()
    assert cfg.node_for("127.0.0.1", 8004).name == "H4"
    stranger = cfg.node_for("127.0.0.1", 9999)
    assert stranger == Node("127.0.0.1:9999", "127.0.0.1", 9999)
    assert str(stranger) == "127.0.0.1:9999"
    assert cfg.node_named("H10") == Node("H10", "127.0.0.1", 8010)
    assert cfg.node_named("H11") is None


# --- profiles -----------------------------------------------------------------------------


def test_test_profile_is_ten_times_faster_with_the_same_protocol():
    base = default_config()
    fast = profile("test")
    m, f = base.membership, fast.membership
    assert f.ping_duration == pytest.approx(m.ping_duration / 10)
    assert f.ping_timeout == pytest.approx(m.ping_timeout / 10)
    assert f.cleanup_time == pytest.approx(m.cleanup_time / 10)
    assert f.gossip_interval == pytest.approx(m.gossip_interval / 10)
    assert f.reconnect_interval == pytest.approx(m.reconnect_interval / 10)
    # Everything that is not a timer is unchanged.
    assert (f.monitors, f.indirect_probes, f.retransmit_mult) == (
        m.monitors,
        m.indirect_probes,
        m.retransmit_mult,
    )
    assert fast.nodes == base.nodes and fast.secret == base.secret


def test_lan_profile_is_the_base_and_profiles_apply_to_a_given_base():
    base = config_from_dict(minimal())
    assert profile("lan", base) == base
    assert profile("test", base).nodes == base.nodes


def test_unknown_profile_is_refused():
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        profile("fast")


# --- loading the cluster file -------------------------------------------------------------


def test_interface_example_loads(tmp_path: Path):
    path = tmp_path / "cluster.toml"
    path.write_text(INTERFACE_EXAMPLE)
    cfg = load_config(path)
    assert cfg.nodes == (Node("H1", "127.0.0.1", 8001, ssh_port=2222),)
    assert cfg.introducer == ("127.0.0.1", 8888)
    assert cfg.secret == "change-me"
    assert cfg.secret_bytes == b"change-me"
    assert cfg.membership == MembershipConfig()
    assert cfg.replication == 4
    assert cfg.transfer == "scp"
    assert cfg.ssh == SSHConfig(
        user="root",
        port=22,
        key_file="~/.ssh/id_ed25519",
        known_hosts="~/.ssh/known_hosts",
        accept_new_host_keys=False,
    )


def test_every_key_is_read(tmp_path: Path):
    path = tmp_path / "cluster.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [cluster]
            introducer = "10.1.2.3:7000"
            secret = "s3cret"
            M = 4
            ping_duration = 2
            ping_timeout = 0.5
            cleanup_time = 6.5
            replication = 2
            transfer = "tcp"
            indirect_probes = 0
            gossip_interval = 0.1
            gossip_fanout = 5
            retransmit_mult = 2
            tombstone_time = 30
            reconnect_interval = 2.5
            reconnect_timeout = 3600

            [ssh]
            user = "me"
            port = 2200
            key_file = "/keys/k"
            known_hosts = "/keys/kh"
            accept_new_host_keys = true

            [[nodes]]
            name = "b-2"
            host = "node-b.example.org"
            port = 7002

            [[nodes]]
            name = "a_1"
            host = "10.1.2.4"
            port = 7001
            """
        )
    )
    cfg = load_config(str(path))
    # Ring order is file order, not name order.
    assert [n.name for n in cfg.nodes] == ["b-2", "a_1"]
    assert cfg.nodes[0].ssh_port is None
    assert cfg.introducer == ("10.1.2.3", 7000)
    assert cfg.secret == "s3cret"
    assert cfg.membership == dataclasses.replace(
        MembershipConfig(),
        monitors=4,
        ping_duration=2.0,
        ping_timeout=0.5,
        cleanup_time=6.5,
        indirect_probes=0,
        gossip_interval=0.1,
        gossip_fanout=5,
        retransmit_mult=2,
        tombstone_time=30.0,
        reconnect_interval=2.5,
        reconnect_timeout=3600.0,
    )
    assert isinstance(cfg.membership.ping_duration, float)
    assert (cfg.replication, cfg.transfer) == (2, "tcp")
    assert cfg.ssh == SSHConfig("me", 2200, "/keys/k", "/keys/kh", True)


def test_only_nodes_is_required():
    cfg = config_from_dict(minimal())
    assert cfg == ClusterConfig(nodes=(Node("A", "127.0.0.1", 9001), Node("B", "127.0.0.1", 9002)))


def test_unreadable_file_and_bad_toml_are_one_line_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read cluster file") as info:
        load_config(tmp_path / "missing.toml")
    assert "\n" not in str(info.value)
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\nM = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(bad)
    assert "\n" not in str(info.value)


# --- errors name the key ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (minimal(extra={"x": 1}), "extra: unknown key"),
        (minimal(cluster={"ping_period": 1.0}), "cluster.ping_period: unknown key"),
        (minimal(ssh={"password": "x"}), "ssh.password: unknown key"),
        (
            {"nodes": [{"name": "A", "host": "127.0.0.1", "port": 9001, "role": "leader"}]},
            "nodes[0].role: unknown key",
        ),
    ],
)
def test_unknown_keys_are_refused_at_every_level(data, key):
    assert key in config_error(data)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("cluster", "M", "3"),
        ("cluster", "M", 3.0),
        ("cluster", "M", True),
        ("cluster", "ping_duration", "1s"),
        ("cluster", "ping_timeout", True),
        ("cluster", "cleanup_time", [3]),
        ("cluster", "secret", 42),
        ("cluster", "introducer", 8888),
        ("cluster", "replication", 4.5),
        ("cluster", "transfer", 1),
        ("cluster", "tombstone_time", "60"),
        ("ssh", "port", "22"),
        ("ssh", "accept_new_host_keys", 1),
        ("ssh", "user", None),
    ],
)
def test_wrong_types_are_refused(section, key, value):
    message = config_error(minimal(**{section: {key: value}}))
    assert message.startswith(f"{section}.{key}:"), message
    assert "expected" in message


@pytest.mark.parametrize(
    ("field", "value"),
    [("port", "9001"), ("port", True), ("port", 9001.0), ("name", 1), ("host", ["x"])],
)
def test_wrong_node_types_are_refused(field, value):
    data = minimal()
    data["nodes"][1][field] = value
    assert config_error(data).startswith(f"nodes[1].{field}:")


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_bad_ports_are_refused(port):
    data = minimal()
    data["nodes"][0]["port"] = port
    assert config_error(data).startswith("nodes[0].port:")
    data = minimal()
    data["nodes"][0]["ssh_port"] = port
    assert config_error(data).startswith("nodes[0].ssh_port:")
    assert config_error(minimal(ssh={"port": port})).startswith("ssh.port:")


@pytest.mark.parametrize(
    "introducer", ["127.0.0.1", "127.0.0.1:", ":8888", "127.0.0.1:0", "h:70000", "h:88x", "a b:1"]
)
def test_bad_introducer_addresses_are_refused(introducer):
    message = config_error(minimal(cluster={"introducer": introducer}))
    assert message.startswith("cluster.introducer:")


def test_parse_address():
    assert parse_address("localhost:8888") == ("localhost", 8888)
    assert parse_address("10.0.0.1:1") == ("10.0.0.1", 1)
    with pytest.raises(ConfigError, match=r"^--node: expected HOST:PORT"):
        parse_address("nope", "--node")


def test_duplicate_names_and_addresses_are_refused():
    data = minimal()
    data["nodes"][1]["name"] = "A"
    assert config_error(data) == "nodes[1].name: duplicate name 'A'"
    data = minimal()
    data["nodes"][1]["port"] = 9001
    message = config_error(data)
    assert message.startswith("nodes[1].port:") and "127.0.0.1:9001" in message


@pytest.mark.parametrize(
    ("data", "start"),
    [
        ({}, "nodes: missing"),
        ({"cluster": {"M": 3}}, "nodes: missing"),
        ({"nodes": []}, "nodes: expected a non-empty array"),
        ({"nodes": {"name": "A"}}, "nodes: expected a non-empty array"),
        ({"nodes": ["A"]}, "nodes[0]: expected a table"),
        ({"nodes": [{"host": "127.0.0.1", "port": 1}]}, "nodes[0].name: missing"),
        ({"nodes": [{"name": "A", "port": 1}]}, "nodes[0].host: missing"),
        ({"nodes": [{"name": "A", "host": "127.0.0.1"}]}, "nodes[0].port: missing"),
        ({"nodes": [{"name": "A b", "host": "h", "port": 1}]}, "nodes[0].name:"),
        ({"nodes": [{"name": "", "host": "h", "port": 1}]}, "nodes[0].name:"),
        ({"nodes": [{"name": "A", "host": "", "port": 1}]}, "nodes[0].host:"),
        ({"nodes": [{"name": "A", "host": "a..b", "port": 1}]}, "nodes[0].host:"),
        ({"nodes": [{"name": "A", "host": "a b", "port": 1}]}, "nodes[0].host:"),
    ],
)
def test_missing_or_malformed_nodes_are_refused(data, start):
    assert config_error(data).startswith(start)


@pytest.mark.parametrize("transfer", ["ftp", "SCP", ""])
def test_bad_transfer_is_refused(transfer):
    message = config_error(minimal(cluster={"transfer": transfer}))
    assert message.startswith("cluster.transfer:") and repr(transfer) in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ping_duration", 0),
        ("ping_timeout", -1.0),
        ("cleanup_time", 0.0),
        ("gossip_interval", -0.2),
        ("tombstone_time", 0),
        ("reconnect_interval", 0),
        ("reconnect_timeout", -1.0),
        ("ping_duration", float("nan")),
        ("ping_timeout", float("inf")),
        ("M", 0),
        ("gossip_fanout", 0),
        ("retransmit_mult", -4),
        ("indirect_probes", -1),
        ("replication", 0),
        ("secret", ""),
    ],
)
def test_out_of_range_values_are_refused(key, value):
    assert config_error(minimal(cluster={key: value})).startswith(f"cluster.{key}:")


def test_non_table_sections_are_refused():
    assert config_error(minimal(cluster=3)).startswith("cluster: expected a table")
    assert config_error(minimal(ssh="root")).startswith("ssh: expected a table")


def test_config_error_is_a_value_error():
    # Callers that only know ValueError (argparse type functions) still catch it.
    assert issubclass(ConfigError, ValueError)


def test_http_port_and_bind_are_read_and_checked():
    data = minimal(http={"bind": "0.0.0.0"})
    data["nodes"][0]["http_port"] = 9101
    cfg = config_from_dict(data, environ={})
    assert cfg.nodes[0].http_port == 9101 and cfg.nodes[1].http_port is None
    assert cfg.http.bind == "0.0.0.0"
    assert config_from_dict(minimal()).http.bind == "127.0.0.1"  # loopback unless configured
    for port in (0, 65536):
        data["nodes"][0]["http_port"] = port
        assert config_error(data).startswith("nodes[0].http_port:")
    data["nodes"][0]["http_port"] = 9001  # the node's own port
    assert "node's own port" in config_error(data)
    assert config_error(minimal(http={"bind": "a b"})).startswith("http.bind:")
    assert config_error(minimal(http={"listen": "x"})).startswith("http.listen:")


def test_a_dashboard_beyond_loopback_needs_a_real_secret():
    data = minimal(http={"bind": "0.0.0.0"})
    data["nodes"][0]["http_port"] = 9101
    cfg = config_from_dict(data, environ={})
    with pytest.raises(ConfigError, match=r"http\.bind"):
        check_secret(cfg)
    check_secret(config_from_dict(minimal(http={"bind": "0.0.0.0"}), environ={}))  # no port


def test_max_batch_seconds_is_read_and_checked():
    assert config_from_dict(minimal()).inference.max_batch_seconds == 0.25
    cfg = config_from_dict(minimal(inference={"max_batch_seconds": 1}))
    assert cfg.inference.max_batch_seconds == 1.0
    assert isinstance(cfg.inference.max_batch_seconds, float)
    for bad in (0, -0.5, 0.001, 4000, float("nan")):
        message = config_error(minimal(inference={"max_batch_seconds": bad}))
        assert message.startswith("inference.max_batch_seconds: must be between 0.01 and 3600")
    assert config_error(minimal(inference={"max_batch_seconds": "1"})).startswith(
        "inference.max_batch_seconds:"
    )
