"""The cluster's shape: its nodes, their ring order, and the tuning of every part.

Everything a node, the introducer or the console needs to agree on lives here, so
that all of them read one cluster file (``--config FILE``) or, without one, the
built-in ten-node loopback cluster.

Each default says why it was chosen.  Two named profiles exist: ``lan`` (the
defaults, for a room of machines) and ``test`` (the same protocol, but with
timings a simulation can run at speed; see :func:`profile`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.llm import LlmSpec, parse_llms
from config.tables import ConfigError as ConfigError
from config.tables import Schema, check_table

# The defaults the issue and INTERFACE.md name.  They are module constants as well
# as dataclass defaults so that scripts and docs can quote them.
M = 3
"""Ring successors each member pings.  Three monitors keep detection complete with
up to three simultaneous failures while a node sends only three pings a second."""

PING_DURATION = 1.0
"""Seconds between pings to each monitored neighbour: the SWIM protocol period.
One second keeps the steady-state cost near 200 B/s per node."""

PING_TIMEOUT = 1.0
"""Seconds to wait for an ack (direct or through indirect probes) before suspecting.
A full period: loopback and LAN round trips are well under a millisecond, so the
window exists for loss and for a busy peer, not for distance."""

CLEANUP_TIME = 3.0
"""Seconds a suspect has to refute before every member removes it.  Three seconds
lets a refutation cross several lossy gossip hops (each retried every 0.2 s)."""

INTRODUCER_PORT = 8888
# SDFS replicates files of at least this size in a chain, smaller ones by fan-out
# (sdfs.transfer.chain says why 1 MiB).
PIPELINE_MIN_BYTES = 1024 * 1024

DEFAULT_SECRET = "change-me"
"""The built-in secret.  It is public (it is in this file), so it is accepted only
while every address in play is loopback: see :func:`check_secret`."""

SECRET_ENV = "IDUNNO_SECRET"
"""Environment variable that overrides the cluster file's secret (and the default)."""

MIN_SECRET_BYTES = 16
"""Shortest secret accepted beyond loopback, in bytes: the HMAC tag's length.  Only a
floor against the obviously weak (16 typed characters hold far fewer than 128
bits); ``python -m config.secret new`` writes 64 hex digits, 256 random bits."""

SECRET_SOURCES = ("built-in default", "cluster.secret", "cluster.secret_file", SECRET_ENV)


@dataclass(frozen=True, order=True)
class Node:
    """One member of the cluster, as the ring knows it."""

    name: str
    host: str
    port: int
    ssh_port: int | None = None  # per-node override of [ssh] port (for scp transfers)
    # Port of the node's dashboard and /metrics (web/); None: no HTTP server.  Not part
    # of a node's identity: membership knows nodes by name, host and port.
    http_port: int | None = field(default=None, compare=False)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class MembershipConfig:
    """Tuning of the SWIM failure detector."""

    # See the module constants above for why these four defaults were chosen.
    monitors: int = M
    ping_duration: float = PING_DURATION
    ping_timeout: float = PING_TIMEOUT
    cleanup_time: float = CLEANUP_TIME
    # Members asked to probe a silent neighbour for us.  Three relays cut the chance
    # that plain packet loss looks like a failure from p to about p**3.
    indirect_probes: int = 3
    # How often queued gossip is pushed to random members, besides riding on pings.
    # 200 ms is memberlist's LAN value: news reaches 100 nodes in well under a second.
    gossip_interval: float = 0.2
    # Random members each gossip push goes to (memberlist's GossipNodes).
    gossip_fanout: int = 3
    # Each update is sent retransmit_mult * ceil(log10(n + 1)) times: O(log N), the
    # SWIM bound; 4 is memberlist's default and survives 10% loss.
    retransmit_mult: int = 4
    # How long the record of a failed or departed member is kept, so that stale
    # news of it cannot bring it back and a restart can pick a higher incarnation.
    tombstone_time: float = 60.0
    # Largest datagram we send; stays under a 1500-byte Ethernet MTU with headers.
    max_datagram: int = 1400
    # How often a member sends one random member it removed as failed its view (a
    # Merge), so a healed partition or a reconnected host merges back by itself.
    # 5 s: a merge within seconds, at one small datagram per member per 5 s.
    reconnect_interval: float = 5.0
    # How long removed-as-failed members stay on that list (Serf's reconnect_timeout):
    # 24 h outlasts any partition worth merging; a member gone longer must rejoin.
    reconnect_timeout: float = 86400.0


@dataclass(frozen=True)
class SSHConfig:
    """How file transfers reach other hosts (used by SDFS's scp transfer)."""

    user: str = "root"
    port: int = 22
    key_file: str = "~/.ssh/id_ed25519"
    known_hosts: str = "~/.ssh/known_hosts"
    # First-use acceptance of unknown host keys must be asked for explicitly.
    accept_new_host_keys: bool = False


@dataclass(frozen=True)
class InferenceConfig:
    """How IDunno schedules and runs inference jobs."""

    # Which job a free worker serves next: "fair" equalises the jobs' query rates;
    # "round-robin", "random" and "least-loaded" are the seed systems' policies.
    policy: str = "fair"
    # Queries per batch until C3 changes it (a batch is also capped at
    # max_batch_seconds of work).
    batch_size: int = 8
    # A batch holds at most this many seconds of estimated work (at least one query),
    # so that a newly submitted job never waits long for a worker, and fair jobs'
    # rates stay even window by window: a job's share moves one batch at a time.
    max_batch_seconds: float = 0.25
    # torch threads per worker process; 0 = this host's cores divided among the
    # nodes it runs, so the workers of one host do not oversubscribe it.
    threads: int = 0
    # Without weights in SDFS, let torchvision download its ImageNet weights.
    allow_download: bool = True


@dataclass(frozen=True)
class HttpConfig:
    """The nodes' dashboard and /metrics (served on each node's ``http_port``)."""

    # Address the HTTP server listens on.  Loopback by default: the dashboard shows the
    # whole cluster, so reaching it from elsewhere must be asked for.  Any other address
    # (e.g. "0.0.0.0") requires the dashboard token (config.secret.dashboard_token) on
    # every request.
    bind: str = "127.0.0.1"


@dataclass(frozen=True)
class ClusterConfig:
    """Everything every process of one cluster must agree on."""

    nodes: tuple[Node, ...]
    introducer: tuple[str, int] = ("127.0.0.1", INTRODUCER_PORT)
    # Key for the HMAC on every datagram and frame.  The default is public, so the
    # entry points accept it only on loopback (check_secret); kept out of repr so
    # that a logged config does not print it.
    secret: str = field(default=DEFAULT_SECRET, repr=False)
    # Where the secret came from (one of SECRET_SOURCES), so that errors name it.
    secret_source: str = "built-in default"
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    # Copies of every SDFS file: survives three simultaneous failures.
    replication: int = 4
    # Versions of each SDFS file kept (get-versions reads back this far).
    versions_kept: int = 5
    # Seconds a deleted SDFS file's tombstone is kept (on disk and by the leader)
    # before it is purged: Cassandra's gc_grace_seconds, and the same default (10
    # days).  A node away longer than this comes back "outdated" (sdfs.tombstones).
    tombstone_grace: float = 864_000.0
    # "scp" (paramiko over SSH) or "tcp" (the nodes' own authenticated stream).
    transfer: str = "scp"
    # Files of at least this many bytes go to their replicas in a chain (writer -> r1
    # -> r2 ...: each forwards while it receives, sdfs.transfer.chain), smaller ones
    # fan out from the writer; 0 turns the chain off.
    pipeline_min_bytes: int = PIPELINE_MIN_BYTES
    ssh: SSHConfig = field(default_factory=SSHConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    # Grading models ([[llm]] tables), in the file's order.
    llms: tuple[LlmSpec, ...] = ()

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode()

    def ring_index(self) -> dict[str, int]:
        """Ring position of every configured node, by name."""
        return {n.name: i for i, n in enumerate(self.nodes)}

    def node_for(self, host: str, port: int) -> Node:
        """The configured node at host:port, or an unconfigured one named HOST:PORT."""
        for n in self.nodes:
            if n.host == host and n.port == port:
                return n
        return Node(name=f"{host}:{port}", host=host, port=port)

    def node_named(self, name: str) -> Node | None:
        for n in self.nodes:
            if n.name == name:
                return n
        return None


def builtin_nodes() -> tuple[Node, ...]:
    """H1..H10 on 127.0.0.1:8001..8010, in ring order."""
    return tuple(Node(f"H{i}", "127.0.0.1", 8000 + i) for i in range(1, 11))


def default_config() -> ClusterConfig:
    """The built-in loopback cluster used when no ``--config`` is given."""
    return ClusterConfig(nodes=builtin_nodes())


def profile(name: str, base: ClusterConfig | None = None) -> ClusterConfig:
    """A named set of timings.

    ``lan``: the defaults above.  ``test``: ten times faster timers, for tests of the
    real processes that want to finish quickly; the protocol is unchanged.
    """
    base = base or default_config()
    if name == "lan":
        return base
    if name == "test":
        m = base.membership
        fast = dataclasses.replace(
            m,
            ping_duration=m.ping_duration / 10,
            ping_timeout=m.ping_timeout / 10,
            cleanup_time=m.cleanup_time / 10,
            gossip_interval=m.gossip_interval / 10,
            reconnect_interval=m.reconnect_interval / 10,
        )
        return dataclasses.replace(base, membership=fast)
    raise ConfigError(f"unknown profile {name!r} (known: lan, test)")


# --- the TOML cluster file ------------------------------------------------------

_CLUSTER_KEYS: Schema = {
    "introducer": str,
    "secret": str,
    # Beyond INTERFACE.md: a file holding the secret (see read_secret_file).
    "secret_file": str,
    "M": int,
    "ping_duration": (int, float),
    "ping_timeout": (int, float),
    "cleanup_time": (int, float),
    "replication": int,
    "versions_kept": int,
    "transfer": str,
    # Beyond INTERFACE.md: the size from which SDFS copies go in a chain (0: never).
    "pipeline_min_bytes": int,
    # Beyond INTERFACE.md: SDFS tombstone grace period in seconds.
    "tombstone_grace": (int, float),
    # Beyond INTERFACE.md: the rest of MembershipConfig, for tuning.
    "indirect_probes": int,
    "gossip_interval": (int, float),
    "gossip_fanout": int,
    "retransmit_mult": int,
    "tombstone_time": (int, float),
    "reconnect_interval": (int, float),
    "reconnect_timeout": (int, float),
}
_SSH_KEYS: Schema = {
    "user": str,
    "port": int,
    "key_file": str,
    "known_hosts": str,
    "accept_new_host_keys": bool,
}
_INFERENCE_KEYS: Schema = {
    "policy": str,
    "batch_size": int,
    "max_batch_seconds": (int, float),
    "threads": int,
    "allow_download": bool,
}
POLICIES = ("fair", "round-robin", "random", "least-loaded")
_NODE_KEYS: Schema = {
    "name": str,
    "host": str,
    "port": int,
    "ssh_port": int,
    "http_port": int,
}

_HTTP_KEYS: Schema = {
    "bind": str,
}


def _check_port(key: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is outside 1..65535")


def _check_positive(key: str, value: float) -> None:
    # TOML has nan and inf; neither is a usable timer (nan even passes `<= 0`).
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{key}: must be positive and finite, got {value!r}")


def parse_address(text: str, key: str = "address") -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), with a one-line error naming ``key``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{key}: expected HOST:PORT, got {text!r}")
    port = int(port_text)
    _check_port(key, port)
    return host, port


def _check_host(key: str, host: str) -> None:
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"{key}: not a host name: {host!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part and len(part) < 64 for part in host.split(".")):
            raise ConfigError(f"{key}: not a host name: {host!r}") from None


def config_from_dict(
    data: dict[str, Any],
    base_dir: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClusterConfig:
    """Validate a parsed cluster file; every error names the key at fault.

    ``base_dir`` is where a relative ``secret_file`` is looked for (the cluster
    file's directory; the working directory when None).  ``environ`` is read for
    ``IDUNNO_SECRET`` only; None (the default) means an empty environment, so that
    this function stays a pure function of its arguments but for the secret file.
    """
    for key in data:
        if key not in ("cluster", "ssh", "inference", "http", "nodes", "llm"):
            raise ConfigError(f"{key}: unknown key")
    cluster = data.get("cluster", {})
    ssh = data.get("ssh", {})
    inference = data.get("inference", {})
    check_table("cluster", cluster, _CLUSTER_KEYS)
    check_table("ssh", ssh, _SSH_KEYS)
    check_table("inference", inference, _INFERENCE_KEYS)
    http = data.get("http", {})
    check_table("http", http, _HTTP_KEYS)
    if "bind" in http:
        _check_host("http.bind", http["bind"])
    if inference.get("policy", "fair") not in POLICIES:
        raise ConfigError(
            f"inference.policy: expected one of {', '.join(POLICIES)}, got {inference['policy']!r}"
        )
    if inference.get("batch_size", 8) < 1:
        raise ConfigError(
            f"inference.batch_size: must be at least 1, got {inference['batch_size']}"
        )
    if not 0.01 <= inference.get("max_batch_seconds", InferenceConfig.max_batch_seconds) <= 3600:
        raise ConfigError(
            "inference.max_batch_seconds: must be between 0.01 and 3600 seconds, "
            f"got {inference['max_batch_seconds']}"
        )
    if "max_batch_seconds" in inference:  # 1 in the file is 1.0
        inference = {**inference, "max_batch_seconds": float(inference["max_batch_seconds"])}
    if inference.get("threads", 0) < 0:
        raise ConfigError(
            f"inference.threads: must be 0 (auto) or more, got {inference['threads']}"
        )
    if "nodes" not in data:
        raise ConfigError("nodes: missing (at least one [[nodes]] entry is needed)")
    raw_nodes = data["nodes"]
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise ConfigError("nodes: expected a non-empty array of tables ([[nodes]])")

    nodes: list[Node] = []
    seen_names: set[str] = set()
    seen_addrs: set[tuple[str, int]] = set()
    for i, raw in enumerate(raw_nodes):
        prefix = f"nodes[{i}]"
        check_table(prefix, raw, _NODE_KEYS)
        for required in ("name", "host", "port"):
            if required not in raw:
                raise ConfigError(f"{prefix}.{required}: missing")
        name, host, port = raw["name"], raw["host"], raw["port"]
        if not name or not all(c.isalnum() or c in "-_.:" for c in name):
            raise ConfigError(f"{prefix}.name: use letters, digits and -_.: only, got {name!r}")
        _check_host(f"{prefix}.host", host)
        _check_port(f"{prefix}.port", port)
        ssh_port = raw.get("ssh_port")
        if ssh_port is not None:
            _check_port(f"{prefix}.ssh_port", ssh_port)
        http_port = raw.get("http_port")
        if http_port is not None:
            _check_port(f"{prefix}.http_port", http_port)
            if http_port == port:  # TCP: the node's own requests use that port
                raise ConfigError(f"{prefix}.http_port: {http_port} is the node's own port")
        if name in seen_names:
            raise ConfigError(f"{prefix}.name: duplicate name {name!r}")
        if (host, port) in seen_addrs:
            raise ConfigError(f"{prefix}.port: {host}:{port} is used by another node")
        seen_names.add(name)
        seen_addrs.add((host, port))
        nodes.append(Node(name=name, host=host, port=port, ssh_port=ssh_port, http_port=http_port))

    base = MembershipConfig()
    membership = MembershipConfig(
        monitors=cluster.get("M", base.monitors),
        ping_duration=float(cluster.get("ping_duration", base.ping_duration)),
        ping_timeout=float(cluster.get("ping_timeout", base.ping_timeout)),
        cleanup_time=float(cluster.get("cleanup_time", base.cleanup_time)),
        indirect_probes=cluster.get("indirect_probes", base.indirect_probes),
        gossip_interval=float(cluster.get("gossip_interval", base.gossip_interval)),
        gossip_fanout=cluster.get("gossip_fanout", base.gossip_fanout),
        retransmit_mult=cluster.get("retransmit_mult", base.retransmit_mult),
        tombstone_time=float(cluster.get("tombstone_time", base.tombstone_time)),
        reconnect_interval=float(cluster.get("reconnect_interval", base.reconnect_interval)),
        reconnect_timeout=float(cluster.get("reconnect_timeout", base.reconnect_timeout)),
    )
    for key, value in (
        ("cluster.ping_duration", membership.ping_duration),
        ("cluster.ping_timeout", membership.ping_timeout),
        ("cluster.cleanup_time", membership.cleanup_time),
        ("cluster.gossip_interval", membership.gossip_interval),
        ("cluster.tombstone_time", membership.tombstone_time),
        ("cluster.reconnect_interval", membership.reconnect_interval),
        ("cluster.reconnect_timeout", membership.reconnect_timeout),
    ):
        _check_positive(key, value)
    for key, ivalue in (
        ("cluster.M", membership.monitors),
        ("cluster.gossip_fanout", membership.gossip_fanout),
        ("cluster.retransmit_mult", membership.retransmit_mult),
    ):
        _check_positive(key, ivalue)
    if membership.indirect_probes < 0:
        raise ConfigError("cluster.indirect_probes: must be 0 or more")

    introducer: tuple[str, int] = ("127.0.0.1", INTRODUCER_PORT)
    if "introducer" in cluster:
        introducer = parse_address(cluster["introducer"], "cluster.introducer")
        _check_host("cluster.introducer", introducer[0])
    secret, secret_source = _resolve_secret(cluster, base_dir, environ or {})
    replication = cluster.get("replication", 4)
    if replication < 1:
        raise ConfigError(f"cluster.replication: must be at least 1, got {replication}")
    versions_kept = cluster.get("versions_kept", 5)
    if versions_kept < 1:
        raise ConfigError(f"cluster.versions_kept: must be at least 1, got {versions_kept}")
    tombstone_grace = float(cluster.get("tombstone_grace", 864_000.0))
    if not tombstone_grace > 0:
        raise ConfigError(f"cluster.tombstone_grace: must be positive, got {tombstone_grace:g}")
    transfer = cluster.get("transfer", "scp")
    if transfer not in ("scp", "tcp"):
        raise ConfigError(f"cluster.transfer: expected 'scp' or 'tcp', got {transfer!r}")
    if "port" in ssh:
        _check_port("ssh.port", ssh["port"])
    pipeline_min_bytes = cluster.get("pipeline_min_bytes", PIPELINE_MIN_BYTES)
    if pipeline_min_bytes < 0:
        raise ConfigError(
            f"cluster.pipeline_min_bytes: must be 0 or more, got {pipeline_min_bytes}"
        )

    return ClusterConfig(
        nodes=tuple(nodes),
        introducer=introducer,
        secret=secret,
        secret_source=secret_source,
        membership=membership,
        replication=replication,
        versions_kept=versions_kept,
        tombstone_grace=tombstone_grace,
        transfer=transfer,
        pipeline_min_bytes=pipeline_min_bytes,
        ssh=SSHConfig(**ssh),
        inference=InferenceConfig(**inference),
        http=HttpConfig(**http),
        llms=parse_llms(data.get("llm", [])),
    )


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> ClusterConfig:
    """The cluster file at ``path``, or the built-in cluster when ``path`` is None.

    ``IDUNNO_SECRET`` in ``environ`` (default: this process's environment) overrides
    the secret of either.
    """
    env = os.environ if environ is None else environ
    if path is None:
        config = default_config()
        secret, source = _resolve_secret({}, None, env)
        return dataclasses.replace(config, secret=secret, secret_source=source)
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read cluster file: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    return config_from_dict(data, p.parent, env)


# --- the secret -----------------------------------------------------------------
#
# Precedence, highest first: IDUNNO_SECRET, then [cluster] secret_file or secret (a
# file may give one of them, not both), then DEFAULT_SECRET.  What is refused at
# load time is refused everywhere: an empty secret, a secret file that cannot be
# read, is empty, holds more than one line, or is open to group or others (as ssh
# refuses such a private key).  What depends on the addresses in play is refused by
# check_secret, which the entry points call before they bind or send anything.


def _resolve_secret(
    cluster: dict[str, Any], base_dir: str | Path | None, environ: Mapping[str, str]
) -> tuple[str, str]:
    """(secret, where it came from); one-line ConfigError naming the key otherwise."""
    if "secret" in cluster and "secret_file" in cluster:
        raise ConfigError("cluster.secret_file: give secret or secret_file, not both")
    if SECRET_ENV in environ:
        # An overriding variable is enough: a secret file named in the cluster file
        # need not exist on this machine (a console on a laptop, say).
        value = environ[SECRET_ENV].strip()
        if not value:
            raise ConfigError(
                f"{SECRET_ENV}: is set but empty (unset it to use the cluster file's secret)"
            )
        return value, SECRET_ENV
    if "secret_file" in cluster:
        path = Path(cluster["secret_file"]).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        return read_secret_file(path), "cluster.secret_file"
    if "secret" in cluster:
        if not cluster["secret"]:
            raise ConfigError("cluster.secret: must not be empty")
        return cluster["secret"], "cluster.secret"
    return DEFAULT_SECRET, "built-in default"


def read_secret_file(path: Path, key: str = "cluster.secret_file") -> str:
    """The secret in ``path``: its one line, without surrounding whitespace.

    Refused when group or others may access the file: a secret others can read is
    no secret, and saying so at once beats finding out from a leak (ssh does the
    same for private keys).  ``chmod 600 FILE`` fixes it.
    """
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigError(f"{key}: {path} is not a regular file")
            if os.name == "posix" and mode & 0o077:
                raise ConfigError(
                    f"{key}: {path} is accessible by group or others "
                    f"(mode {stat.S_IMODE(mode):04o}); run chmod 600 {path}"
                )
            raw = f.read(4096 + 1)
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror}") from None
    if len(raw) > 4096:
        raise ConfigError(f"{key}: {path} is larger than 4096 bytes; is it a secret file?")
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"{key}: {path} is empty")
    if "\n" in text or "\r" in text:
        raise ConfigError(f"{key}: {path} holds more than one line; the secret is one line")
    return text


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 (also IPv4-mapped) and ``localhost``; no name is resolved."""
    h = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if h == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False  # a host name: it may resolve anywhere, so it counts as remote
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def addresses_in_play(config: ClusterConfig, *own: tuple[str, str]) -> list[tuple[str, str]]:
    """(where, host) of every address a process of this cluster will use.

    ``own`` are the process's own (e.g. ``("--hostname", host)``); then the
    introducer and every configured node."""
    where_from = [*own, ("cluster.introducer", config.introducer[0])]
    where_from += [(f"nodes[{i}].host", n.host) for i, n in enumerate(config.nodes)]
    if any(n.http_port is not None for n in config.nodes):
        # The dashboard token is derived from the secret: a public secret, a public token.
        where_from.append(("http.bind", config.http.bind))
    return where_from


def check_secret(config: ClusterConfig, *own: tuple[str, str]) -> None:
    """Refuse a secret that is unfit for the addresses in play.

    On loopback only this machine's users can reach the ports, so any secret will
    do, the public default included (the tests, ``make demo`` and the benchmarks
    rely on that).  Once any address is not loopback, the public default and
    secrets shorter than MIN_SECRET_BYTES are refused: the secret is the cluster's
    only credential.
    """
    remote = [
        (where, host) for where, host in addresses_in_play(config, *own) if not is_loopback(host)
    ]
    if not remote:
        return
    where, host = remote[0]
    how = (
        "make one with 'python -m config.secret new FILE' and set "
        f'secret_file = "FILE" under [cluster] in the cluster file, or set {SECRET_ENV}'
    )
    key = "cluster.secret" if config.secret_source == "built-in default" else config.secret_source
    if config.secret == DEFAULT_SECRET:
        raise ConfigError(
            f"{key}: the public default secret {DEFAULT_SECRET!r} is accepted only on "
            f"loopback, and {host} ({where}) is not loopback; {how}"
        )
    size = len(config.secret.encode())
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"{key}: the secret is {size} bytes, too short for {host} ({where}), which is "
            f"not loopback: at least {MIN_SECRET_BYTES} are needed beyond loopback; {how}"
        )
