"""The launcher's pure part: which process runs where, with what, and the reports.

:func:`make_plan` turns a cluster file (already validated by
:func:`config.topology.config_from_dict`) and the operator's options into a
:class:`Plan`: one SSH login per host, the introducer and each node with the exact
command line, log file and pid file it gets there, and the files to upload.  Nothing
here opens a socket or a file: the tests check it directly.

Remote layout, under the run directory (default ``~/.idunno/CLUSTER``, CLUSTER the
cluster file's name without ``.toml``)::

    cluster.toml          the cluster file, as given (mode 0600: it may hold the secret)
    logs/NAME.log         each process's stdout and stderr
    pids/NAME.pid         each process's pid
    data/NAME/            each node's --data-dir (its store and node.log)

The introducer's files are named ``introducer``.  A relative ``secret_file`` lands
where the nodes will look for it: relative to the uploaded cluster file.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.topology import ClusterConfig, ConfigError

INTRODUCER = "introducer"
DEFAULT_RUN_ROOT = "~/.idunno"
CLUSTER_FILE = "cluster.toml"


class PlanError(ValueError):
    """The cluster file or the options cannot be launched; one line says why."""


@dataclass(frozen=True)
class Options:
    """What the operator chose (or the defaults filled in) for one run of the launcher."""

    repo: str  # the repository's directory on every host
    python: str  # the interpreter on every host
    identity: str  # the operator's private key, on this machine
    known_hosts: str  # host keys the logins are checked against, on this machine
    user: str  # the login name on every host
    run_dir: str  # on every host; may start with ~/
    timeout: float = 60.0  # up: how long to wait for every node to come up
    grace: float = 10.0  # down: seconds between TERM and KILL
    parallel: int = 16  # hosts logged in to at once


@dataclass(frozen=True)
class Login:
    """One SSH destination."""

    host: str
    port: int

    def __str__(self) -> str:
        return self.host if self.port == 22 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Proc:
    """One process the launcher starts: the introducer or a node."""

    name: str
    kind: str  # "introducer" or "node"
    host: str
    port: int
    login: Login
    argv: tuple[str, ...]
    log: str
    pid_file: str

    def spec(self, repo: str) -> dict[str, Any]:
        """This process as :mod:`launcher.remote` takes it."""
        return {
            "name": self.name,
            "argv": list(self.argv),
            "cwd": repo,
            "log": self.log,
            "pid_file": self.pid_file,
        }


@dataclass(frozen=True)
class Upload:
    """A local file that must be at ``remote`` on every host, with ``mode``."""

    local: str
    remote: str
    mode: int = 0o600


@dataclass(frozen=True)
class Plan:
    options: Options
    introducer: Proc
    nodes: tuple[Proc, ...]
    uploads: tuple[Upload, ...]
    dirs: tuple[str, ...]  # made (mode 0700) on every host before anything else
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def procs(self) -> tuple[Proc, ...]:
        return (self.introducer, *self.nodes)

    @property
    def logins(self) -> tuple[Login, ...]:
        """Every host once, the introducer's first, then in ring order."""
        seen: dict[Login, None] = {}
        for p in self.procs:
            seen.setdefault(p.login, None)
        return tuple(seen)

    def on(self, login: Login, procs: Sequence[Proc] | None = None) -> list[Proc]:
        return [p for p in (self.procs if procs is None else procs) if p.login == login]

    def remote_spec(self, action: str, procs: Sequence[Proc], tail: int = 0) -> dict[str, Any]:
        return {
            "action": action,
            "dirs": list(self.dirs),
            "procs": [p.spec(self.options.repo) for p in procs],
            "env": dict(self.env),
            "grace": self.options.grace,
            "tail": tail,
        }


def cluster_name(config_path: str | Path) -> str:
    """The default run directory's name: the cluster file's name without ``.toml``."""
    name = Path(config_path).name
    stem = name[: -len(".toml")] if name.endswith(".toml") else name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) or "cluster"


def _safe(name: str) -> str:
    # Node names are letters, digits and -_.: (config.topology); ':' is kept out of
    # file names, where some tools read it as host:path.
    return name.replace(":", "_")


def remote_secret_path(secret_file: str, run_dir: str) -> str:
    """Where a node started with ``RUN_DIR/cluster.toml`` looks for ``secret_file``."""
    if secret_file == "~" or secret_file.startswith("~/") or posixpath.isabs(secret_file):
        return secret_file
    if secret_file.startswith("~"):
        raise PlanError(
            f"cluster.secret_file: {secret_file!r} names another user's home; "
            "use a path relative to the cluster file, ~/..., or an absolute path"
        )
    return posixpath.normpath(posixpath.join(run_dir, secret_file))


def make_plan(
    config: ClusterConfig,
    raw: Mapping[str, Any],
    config_path: str | Path,
    options: Options,
) -> Plan:
    """Where every process of ``config`` runs and how; PlanError when it cannot.

    ``raw`` is the parsed TOML (for the ``secret_file`` as written), ``config_path``
    the cluster file on this machine."""
    if not options.repo or not posixpath.isabs(options.repo):
        raise PlanError(f"--repo: must be an absolute path on the hosts, got {options.repo!r}")
    if not options.python or any(c.isspace() for c in options.python):
        raise PlanError(f"--python: not a usable interpreter path: {options.python!r}")
    run = options.run_dir.rstrip("/") or "/"
    if not (run.startswith("~/") or posixpath.isabs(run)) or run in ("/", "~"):
        raise PlanError(f"--run-dir: must be absolute or under ~/, got {options.run_dir!r}")
    if options.timeout <= 0 or options.grace < 0 or options.parallel < 1:
        raise PlanError("--timeout must be positive, --grace 0 or more, --parallel at least 1")
    for i, node in enumerate(config.nodes):
        if _safe(node.name) == INTRODUCER:
            raise PlanError(
                f"nodes[{i}].name: {INTRODUCER!r} is the launcher's name for the introducer"
            )
    names = [_safe(n.name) for n in config.nodes]
    if len(set(names)) != len(names):
        raise PlanError("nodes: two node names differ only in ':' and '_'; rename one")

    cluster_file = posixpath.join(run, CLUSTER_FILE)
    ssh_ports = {n.host: n.ssh_port for n in config.nodes if n.ssh_port is not None}

    def login(host: str, ssh_port: int | None) -> Login:
        return Login(host, ssh_port if ssh_port is not None else config.ssh.port)

    def files(name: str) -> tuple[str, str]:
        return (
            posixpath.join(run, "logs", f"{_safe(name)}.log"),
            posixpath.join(run, "pids", f"{_safe(name)}.pid"),
        )

    ihost, iport = config.introducer
    ilog, ipid = files(INTRODUCER)
    introducer = Proc(
        name=INTRODUCER,
        kind="introducer",
        host=ihost,
        port=iport,
        login=login(ihost, ssh_ports.get(ihost)),
        argv=(
            options.python,
            *("-m", "introducer", "--hostname", ihost, "--port", str(iport)),
            *("--config", cluster_file),
        ),
        log=ilog,
        pid_file=ipid,
    )
    nodes = []
    for node in config.nodes:
        log, pid = files(node.name)
        nodes.append(
            Proc(
                name=node.name,
                kind="node",
                host=node.host,
                port=node.port,
                login=login(node.host, node.ssh_port),
                argv=(
                    options.python,
                    posixpath.join(options.repo, "main.py"),
                    *("--hostname", node.host, "--port", str(node.port)),
                    *("--config", cluster_file, "--no-console"),
                    *("--data-dir", posixpath.join(run, "data", _safe(node.name))),
                ),
                log=log,
                pid_file=pid,
            )
        )

    uploads = [Upload(str(Path(config_path)), cluster_file)]
    dirs = [run, posixpath.join(run, "logs"), posixpath.join(run, "pids")]
    secret_file = raw.get("cluster", {}).get("secret_file")
    if isinstance(secret_file, str):
        local = Path(secret_file).expanduser()
        if not local.is_absolute():
            local = Path(config_path).parent / local
        remote = remote_secret_path(secret_file, run)
        uploads.append(Upload(str(local), remote))
        parent = posixpath.dirname(remote)
        if parent and parent not in dirs and parent != "~":
            dirs.append(parent)
    env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": options.repo}
    return Plan(options, introducer, tuple(nodes), tuple(uploads), tuple(dirs), env)


def check_config_for_launch(config: ClusterConfig) -> None:
    """ConfigError for what a cluster started over SSH cannot have."""
    if config.secret_source == "IDUNNO_SECRET":
        raise ConfigError(
            "IDUNNO_SECRET: is set here, but the launcher starts the nodes with the "
            "cluster file's secret; unset it, or put the secret in a secret_file"
        )


def joined(name: str, views: Mapping[str, set[str] | None], alone: bool = False) -> bool:
    """Whether node ``name`` is in the cluster, given what nodes answered to ``list_mem``
    (``views``: each asked node's alive members, None when it did not answer).

    A list that names a second member comes from a node that has joined, and names
    members that have: a node always lists itself, also before it joins.  ``alone``:
    ``name`` is the only node of the cluster file, its own list will do."""
    return any(
        view is not None and name in view and (len(view) > 1 or alone) for view in views.values()
    )


# --- reports ---------------------------------------------------------------------------


@dataclass
class Row:
    """One process in a report."""

    name: str
    kind: str
    host: str
    port: int
    state: str  # up, running, already running, stopped, killed, not running, failed, ...
    pid: int | None = None
    reason: str = ""
    log: str = ""
    log_tail: list[str] = field(default_factory=list)
    seconds: float | None = None

    @classmethod
    def of(cls, proc: Proc, state: str, **kw: Any) -> Row:
        return cls(proc.name, proc.kind, proc.host, proc.port, state, **kw)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "state": self.state,
            "pid": self.pid,
        }
        if self.seconds is not None:
            out["seconds"] = self.seconds
        if self.reason:
            out["reason"] = self.reason
        if self.log:
            out["log"] = self.log
        if self.log_tail:
            out["log_tail"] = self.log_tail
        return out


GOOD = {
    "up": ("up", "already running"),
    "status": ("running",),
    "down": ("stopped", "killed", "not running"),
}


def report_ok(command: str, rows: Sequence[Row]) -> bool:
    return bool(rows) and all(r.state in GOOD[command] for r in rows)


def report_json(command: str, rows: Sequence[Row], seconds: float) -> dict[str, Any]:
    return {
        "command": command,
        "ok": report_ok(command, rows),
        "seconds": round(seconds, 2),
        "processes": [r.as_json() for r in rows],
    }


def render_table(command: str, rows: Sequence[Row], seconds: float, tail_lines: int = 10) -> str:
    """The report as a table, then each failure's reason and the end of its log."""
    header = ("NAME", "HOST", "PID", "STATE", "")
    table = [header]
    for r in rows:
        extra = r.reason if r.reason and "\n" not in r.reason else ""
        if not extra and command == "status" and r.log:
            extra = r.log
        if r.seconds is not None and not extra:
            extra = f"{r.seconds:.1f} s"
        pid = str(r.pid) if r.pid is not None else "-"
        table.append((r.name, f"{r.host}:{r.port}", pid, r.state, extra))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
        + ("  " + row[4] if row[4] else "")
        for row in table
    ]
    lines = [line.rstrip() for line in lines]
    for r in rows:
        if r.state not in GOOD[command] and r.log_tail:
            lines.append("")
            lines.append(f"--- {r.name}: last lines of {r.log or 'its log'}")
            lines.extend("    " + line for line in r.log_tail[-tail_lines:])
    good = sum(r.state in GOOD[command] for r in rows)
    verdict = {"up": "up", "status": "running", "down": "stopped"}[command]
    lines.append("")
    lines.append(f"{good} of {len(rows)} {verdict} in {seconds:.1f} s")
    return "\n".join(lines)
