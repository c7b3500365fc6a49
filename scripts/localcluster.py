"""Run a cluster of real processes on 127.0.0.1, through the command-line contract only.

Everything here drives the system the way a user would (``shared/INTERFACE.md``):
it writes a TOML cluster file, starts ``python -m introducer`` and
``python main.py`` as subprocesses, and asks them questions with the one-shot
``python -m console``.  Nothing imports the node's own code, so the demo
(``scripts/demo.py``), the integration tests and the benchmarks all exercise the
same interface a person at a terminal uses.

Two layers:

* plain functions - :func:`free_port`, :func:`write_cluster_file`,
  :func:`start_introducer`, :func:`start_node`, :func:`console`,
  :func:`wait_for`, :func:`stop`, :func:`kill` - for callers that want control;
* :class:`LocalCluster`, a context manager built on them that starts an
  introducer and N nodes in a scratch directory and always stops them.

Every process runs with the repository root as its working directory and the
same interpreter as the caller (``sys.executable``), in its own session so that a
Ctrl-C at the terminal reaches only the caller, which then stops them in order.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
"""Where ``main.py`` lives; every process starts here."""

LOOPBACK = "127.0.0.1"

TomlValue = str | int | float | bool
T = TypeVar("T")

__all__ = [
    "REPO_ROOT",
    "ConsoleError",
    "LocalCluster",
    "NodeSpec",
    "Proc",
    "WaitTimeout",
    "console",
    "console_many",
    "free_port",
    "kill",
    "start_introducer",
    "start_node",
    "stop",
    "wait_for",
    "wait_for_tcp",
    "write_cluster_file",
]


# --- errors ---------------------------------------------------------------------


class ConsoleError(RuntimeError):
    """A ``python -m console`` run that failed: non-zero exit, timeout or bad JSON."""

    def __init__(self, message: str, returncode: int | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.stderr = stderr


class WaitTimeout(TimeoutError):
    """:func:`wait_for` ran out of time; the message says what was awaited and the last result."""


class ProcessDied(RuntimeError):
    """A process this module started exited while it was expected to run."""


# --- addresses and ports --------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    """A process's name and address as the cluster file lists it."""

    name: str
    host: str
    port: int

    @property
    def addr(self) -> str:
        """``HOST:PORT``, the form ``python -m console --node`` takes."""
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.name


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(host: str, port: int) -> bool:
    """True if both a TCP listener and a UDP socket can take ``port`` right now."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            if kind == socket.SOCK_STREAM:
                # Servers set SO_REUSEADDR, so a port in TIME_WAIT is usable for them too.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both TCP and UDP on ``host``, never handed out twice by this process.

    Nodes listen on one port number for UDP (membership) and TCP (requests), so
    both must be free.  Ports are drawn outside the kernel's ephemeral range:
    a port taken from there could be grabbed as the source port of some
    outgoing connection (a console call, say) before the node binds it.
    """
    low, high = _ephemeral_range()
    candidates = [p for p in range(10000, 65536) if not low <= p <= high]
    rng = random.Random()
    for _ in range(500):
        port = rng.choice(candidates)
        if port in _handed_out:
            continue
        if _bindable(host, port):
            _handed_out.add(port)
            return port
    raise OSError(f"no free TCP+UDP port found on {host} after 500 tries")


# --- the cluster file -----------------------------------------------------------


def _toml_value(value: TomlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string of printable text is a valid TOML basic string.
    return jsonlib.dumps(value)


def _toml_table(lines: list[str], header: str, table: Mapping[str, TomlValue]) -> None:
    lines.append(header)
    lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
    lines.append("")


def write_cluster_file(
    path: Path,
    n: int = 5,
    *,
    host: str = LOOPBACK,
    names: Sequence[str] | None = None,
    secret: str | None = None,
    introducer_port: int | None = None,
    cluster: Mapping[str, TomlValue] | None = None,
    ssh: Mapping[str, TomlValue] | None = None,
    node_extra: Mapping[str, Mapping[str, TomlValue]] | None = None,
    llm: Sequence[Mapping[str, TomlValue]] = (),
    hosts: Sequence[str] | None = None,
    inference: Mapping[str, TomlValue] | None = None,
) -> tuple[list[NodeSpec], NodeSpec]:
    """Write a TOML cluster file for ``n`` nodes on free ports; returns (nodes, introducer).

    Nodes are named H1..Hn (or ``names``), in that ring order.  ``secret`` defaults
    to a fresh random one so that clusters started side by side never accept each
    other's messages.  ``cluster`` adds or overrides keys of ``[cluster]`` (timings,
    ``replication``, ``transfer``), ``ssh`` fills ``[ssh]``, ``inference`` fills
    ``[inference]`` (e.g. ``max_batch_seconds``) and ``node_extra`` adds
    keys to single nodes by name (e.g. ``{"H1": {"ssh_port": 2222}}``); each of ``llm``
    is one ``[[llm]]`` table (a grading model).  ``hosts`` gives each node its own
    address, in ``names`` order (e.g. 127.0.0.1, 127.0.0.2, ...: any 127.x.y.z is
    loopback on Linux), so that a per-host service such as a grading server at
    ``{host}`` is one per node; the introducer stays on ``host``.  Timings
    not given keep the defaults of ``config/topology.py``.
    """
    if names is None:
        names = [f"H{i}" for i in range(1, n + 1)]
    if len(names) != n:
        raise ValueError(f"{n} nodes but {len(names)} names")
    if hosts is None:
        hosts = [host] * n
    if len(hosts) != n:
        raise ValueError(f"{n} nodes but {len(hosts)} hosts")
    introducer = NodeSpec("introducer", host, introducer_port or free_port(host))
    nodes = [NodeSpec(name, h, free_port(h)) for name, h in zip(names, hosts, strict=True)]

    cluster_table: dict[str, TomlValue] = {
        "introducer": introducer.addr,
        "secret": secret if secret is not None else secrets.token_hex(16),
    }
    cluster_table.update(cluster or {})
    on = ", ".join(dict.fromkeys(hosts))
    lines = [f"# Written by scripts/localcluster.py for {n} nodes on {on}.", ""]
    _toml_table(lines, "[cluster]", cluster_table)
    if ssh:
        _toml_table(lines, "[ssh]", ssh)
    if inference:
        _toml_table(lines, "[inference]", inference)
    for node in nodes:
        entry: dict[str, TomlValue] = {"name": node.name, "host": node.host, "port": node.port}
        entry.update((node_extra or {}).get(node.name, {}))
        _toml_table(lines, "[[nodes]]", entry)
    for table in llm:
        _toml_table(lines, "[[llm]]", table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return nodes, introducer


# --- processes ------------------------------------------------------------------


@dataclass
class Proc:
    """A process started here, with the file its stdout and stderr go to."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of its output (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # The repository root first, so `python -m introducer` finds this checkout's
    # packages whatever the caller's working directory or installed copies.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _spawn(name: str, argv: list[str], log_path: Path) -> Proc:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, log_path, argv)


def wait_for_tcp(host: str, port: int, timeout: float, proc: Proc | None = None) -> None:
    """Wait until something accepts TCP connections on host:port.

    With ``proc``, fail at once (with its last log lines) if that process exits.
    """
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not proc.alive():
            raise ProcessDied(
                f"{proc.name} exited with status {proc.popen.returncode} before listening on "
                f"{host}:{port}; last output:\n{proc.log_tail()}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            tail = f"; last output:\n{proc.log_tail()}" if proc is not None else ""
            raise WaitTimeout(f"nothing listening on {host}:{port} after {timeout:.0f} s{tail}")
        time.sleep(0.05)


def start_introducer(
    config: Path,
    port: int,
    log_path: Path,
    *,
    host: str = LOOPBACK,
    extra_args: Sequence[str] = (),
    wait: float | None = 15.0,
) -> Proc:
    """Start ``python -m introducer --hostname HOST --port PORT --config FILE``.

    With ``wait`` (seconds), return only once it accepts connections.
    """
    argv = [
        sys.executable,
        "-m",
        "introducer",
        "--hostname",
        host,
        "--port",
        str(port),
        "--config",
        str(config),
        *extra_args,
    ]
    proc = _spawn("introducer", argv, log_path)
    if wait is not None:
        try:
            wait_for_tcp(host, port, wait, proc)
        except BaseException:
            kill(proc)
            raise
    return proc


def start_node(
    node: NodeSpec,
    config: Path,
    data_dir: Path,
    log_path: Path,
    *,
    test_mode: bool = False,
    drop_rate: float | None = None,
    extra_args: Sequence[str] = (),
    wait: float | None = 15.0,
) -> Proc:
    """Start ``python main.py --hostname H --port P --config F --no-console --data-dir D``.

    ``test_mode`` adds ``-t`` and ``drop_rate`` adds ``--drop-rate``.  With ``wait``
    (seconds), return only once the node accepts connections on its port.
    """
    argv = [
        sys.executable,
        "main.py",
        "--hostname",
        node.host,
        "--port",
        str(node.port),
        "--config",
        str(config),
        "--no-console",
        "--data-dir",
        str(data_dir),
    ]
    if test_mode:
        argv.append("-t")
    if drop_rate is not None:
        argv += ["--drop-rate", str(drop_rate)]
    argv += list(extra_args)
    proc = _spawn(node.name, argv, log_path)
    if wait is not None:
        try:
            wait_for_tcp(node.host, node.port, wait, proc)
        except BaseException:
            kill(proc)
            raise
    return proc


def stop(proc: Proc, timeout: float = 10.0) -> int | None:
    """SIGTERM (a clean stop: a node leaves the cluster first), then SIGKILL after ``timeout``.

    Returns the exit status (negative for a signal), or None if it could not be reaped.
    """
    _terminate(proc)
    return _reap(proc, timeout)


def _terminate(proc: Proc) -> None:
    # Exactly one SIGTERM: a node stops handling signals once it is leaving, so a
    # second one would cut its goodbye short.
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGTERM)


def _reap(proc: Proc, timeout: float) -> int | None:
    """Wait up to ``timeout`` for ``proc`` to exit, then SIGKILL it."""
    try:
        return proc.popen.wait(max(timeout, 0.0))
    except subprocess.TimeoutExpired:
        return kill(proc)


def kill(proc: Proc, timeout: float = 5.0) -> int | None:
    """SIGKILL (``kill -9``): the process gets no chance to say goodbye."""
    if proc.alive():
        with contextlib.suppress(ProcessLookupError):
            proc.popen.kill()
    try:
        return proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        return None


# --- the one-shot console -------------------------------------------------------


def _console_argv(
    node_addr: str, config: Path | None, args: Sequence[str], json: bool
) -> list[str]:
    argv = [sys.executable, "-m", "console", "--node", node_addr]
    if config is not None:
        argv += ["--config", str(config)]
    if json:
        argv.append("--json")
    return argv + [str(a) for a in args]


def console(
    node: NodeSpec | str,
    config: Path | None,
    *args: str,
    json: bool = True,
    timeout: float = 20.0,
    prefix: Sequence[str] = (),
) -> Any:
    """Run ``python -m console --node HOST:PORT --config F [--json] ARGS...``, behind
    ``prefix`` if given (e.g. ``ip netns exec NS``).

    Returns the parsed JSON with ``json=True`` (the default), else the printed text.
    Raises :class:`ConsoleError` (with the console's one-line reason) on a non-zero
    exit, a timeout, or output that is not JSON.
    """
    addr = node.addr if isinstance(node, NodeSpec) else node
    argv = [*prefix, *_console_argv(addr, config, args, json)]
    what = f"console {' '.join(args)} on {addr}"
    try:
        done = subprocess.run(
            argv,
            cwd=REPO_ROOT,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise ConsoleError(f"{what}: no answer within {timeout:.0f} s") from None
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1:] or ["(nothing on stderr)"]
        raise ConsoleError(
            f"{what}: exit status {done.returncode}: {reason[0]}", done.returncode, done.stderr
        )
    if not json:
        return done.stdout
    try:
        return jsonlib.loads(done.stdout)
    except ValueError:
        raise ConsoleError(
            f"{what}: output is not JSON: {done.stdout[:200]!r}", 0, done.stderr
        ) from None


def console_many(
    calls: Iterable[tuple[NodeSpec | str, Sequence[str]]],
    config: Path | None,
    *,
    json: bool = True,
    timeout: float = 20.0,
) -> list[Any | ConsoleError]:
    """Run several console commands at once; each result, or its ConsoleError, in order.

    Each one-shot console is a fresh interpreter (a few hundred ms to start), so
    polling a whole cluster in parallel keeps a poll's time close to one call's.
    """
    calls = list(calls)

    def one(call: tuple[NodeSpec | str, Sequence[str]]) -> Any | ConsoleError:
        try:
            return console(call[0], config, *call[1], json=json, timeout=timeout)
        except ConsoleError as e:
            return e

    if not calls:
        return []
    with ThreadPoolExecutor(max_workers=min(len(calls), 16)) as pool:
        return list(pool.map(one, calls))


# --- waiting ----------------------------------------------------------------------


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float,
    what: str,
    *,
    interval: float = 0.2,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Exceptions it raises (an unreachable node, say) count as "not yet"; the last
    one is named in the :class:`WaitTimeout` raised after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: str = "never checked"
    while True:
        try:
            result = predicate()
        except (ConsoleError, OSError, ProcessDied) as e:
            last = f"{type(e).__name__}: {e}"
        else:
            if result:
                return result
            last = f"last result {result!r}"
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:.1f} s waiting for {what} ({last})")
        time.sleep(interval)


# --- a whole cluster ----------------------------------------------------------------


def member_names(list_mem: Mapping[str, Any]) -> set[str]:
    """The names in a ``list_mem --json`` answer."""
    return {m["name"] for m in list_mem["members"]}


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread, as Ctrl-C does.

    A script that starts clusters calls this first, so that ``timeout`` or a CI job
    that stops it still runs its ``with LocalCluster`` exits and leaves no node or
    worker process behind (Python's default for SIGTERM is to die on the spot).
    """

    def interrupt(signum: int, frame: object) -> None:
        # A second SIGTERM must not cut short the clean-up this one starts.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)


class LocalCluster:
    """An introducer and ``n`` nodes on 127.0.0.1 (or on ``hosts``, one per node), in a
    scratch directory.

    ``with LocalCluster(5) as c:`` writes the cluster file and starts everything;
    leaving the block stops the nodes (SIGTERM, then SIGKILL) and the introducer,
    and removes the directory unless ``keep`` is set or it was given as ``workdir``.
    Logs are ``workdir/logs/NAME.log``; node data dirs are ``workdir/data/NAME``.
    """

    def __init__(
        self,
        n: int = 5,
        *,
        workdir: Path | None = None,
        keep: bool = False,
        cluster: Mapping[str, TomlValue] | None = None,
        ssh: Mapping[str, TomlValue] | None = None,
        node_extra: Mapping[str, Mapping[str, TomlValue]] | None = None,
        llm: Sequence[Mapping[str, TomlValue]] = (),
        hosts: Sequence[str] | None = None,
        inference: Mapping[str, TomlValue] | None = None,
        test_mode: bool = False,
        drop_rate: float | None = None,
        start_nodes: bool = True,
    ) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="idunno-cluster-"))
        self.keep = keep
        self.config_path = self.workdir / "cluster.toml"
        self.nodes, self.introducer = write_cluster_file(
            self.config_path,
            n,
            cluster=cluster,
            ssh=ssh,
            node_extra=node_extra,
            llm=llm,
            hosts=hosts,
            inference=inference,
        )
        self.test_mode = test_mode
        self.drop_rate = drop_rate
        self._start_nodes = start_nodes
        self.introducer_proc: Proc | None = None
        self.procs: dict[str, Proc] = {}

    # -- life cycle --

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        self.start_introducer()
        if self._start_nodes:
            for node in self.nodes:
                self.start_node(node.name)

    def start_introducer(self) -> Proc:
        self.introducer_proc = start_introducer(
            self.config_path,
            self.introducer.port,
            self.log_path("introducer"),
            host=self.introducer.host,
        )
        return self.introducer_proc

    def start_node(self, name: str, *, wait: float | None = 15.0) -> Proc:
        """Start (or restart) node ``name``; its log file is appended to."""
        old = self.procs.get(name)
        if old is not None and old.alive():
            raise RuntimeError(f"{name} is already running (pid {old.pid})")
        proc = start_node(
            self.node(name),
            self.config_path,
            self.workdir / "data" / name,
            self.log_path(name),
            test_mode=self.test_mode,
            drop_rate=self.drop_rate,
            wait=wait,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """``kill -9`` node ``name``: a crash, as its peers see it."""
        kill(self.procs[name])

    def stop_node(self, name: str) -> None:
        """SIGTERM node ``name``: a clean stop (it leaves the cluster first)."""
        stop(self.procs[name])

    def close(self) -> None:
        """Stop every node, then the introducer; SIGKILL whatever does not stop."""
        # All nodes at once, so that they leave together rather than one by one.
        for proc in self.procs.values():
            _terminate(proc)
        deadline = time.monotonic() + 10.0
        for proc in self.procs.values():
            _reap(proc, deadline - time.monotonic())
        if self.introducer_proc is not None:
            stop(self.introducer_proc)
        if self._own_dir and not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- questions --

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r} (have {', '.join(n.name for n in self.nodes)})")

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def running(self) -> list[NodeSpec]:
        return [n for n in self.nodes if n.name in self.procs and self.procs[n.name].alive()]

    def console(self, name: str, *args: str, json: bool = True, timeout: float = 20.0) -> Any:
        return console(self.node(name), self.config_path, *args, json=json, timeout=timeout)

    def list_mem(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.console(name, "list_mem")
        return result

    def views(self, names: Iterable[str] | None = None) -> dict[str, set[str] | ConsoleError]:
        """Each node's member names (asked in parallel), or the error asking it."""
        names = list(names) if names is not None else [n.name for n in self.running()]
        answers = console_many(
            [(self.node(name), ["list_mem"]) for name in names], self.config_path
        )
        return {
            name: a if isinstance(a, ConsoleError) else member_names(a)
            for name, a in zip(names, answers, strict=True)
        }

    def wait_converged(
        self,
        expected: Iterable[str] | None = None,
        timeout: float = 60.0,
        on_poll: Callable[[Mapping[str, set[str] | ConsoleError]], None] | None = None,
    ) -> None:
        """Wait until every running node lists exactly ``expected`` (default: the running ones)."""
        want = set(expected) if expected is not None else {n.name for n in self.running()}

        def converged() -> bool:
            views = self.views()
            if on_poll is not None:
                on_poll(views)
            return all(v == want for v in views.values())

        wait_for(converged, timeout, f"every running node to list {sorted(want)}")
