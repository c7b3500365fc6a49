"""Real processes on separate Linux network namespaces, for network-fault tests.

:class:`NetnsCluster` builds one namespace per host, each with an ``eth0`` end of a
veth pair whose other end sits on a bridge in a namespace of its own, and addresses
in 10.213.0.0/24 that exist only inside those namespaces (the caller's network is
never touched).  Host 0 runs the introducer; hosts 1..N run ``python main.py ...
--no-console``, all on one port (they are different hosts).  The faults:

* :meth:`NetnsCluster.blackhole` / :meth:`unblackhole` - withdraw the routes to some
  hosts on every host (sends to them fail with EINVAL);
* :meth:`link` - take a host's own link down or up (its sends fail with ENETUNREACH);
* :meth:`split` / :meth:`heal` - move some hosts' bridge ports to a second bridge.

Everything needs root and ``ip netns``; :func:`require_netns` fails the test with
the reason when they are missing (CI runs as root: a silent skip would hide it).
Namespaces carry a unique prefix and :meth:`NetnsCluster.close` deletes them all,
also after a failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from scripts.localcluster import REPO_ROOT, ConsoleError, _child_env, console

SUBNET = "10.213.0"
PORT = 7000
INTRODUCER_PORT = 7100


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_list() -> list[str]:
    out = ip("netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def require_netns() -> None:
    """Fail (not skip) with the reason when namespaces cannot be made here."""
    if os.geteuid() != 0:
        pytest.fail("network-fault tests need root (they create network namespaces)")
    if shutil.which("ip") is None:
        pytest.fail("network-fault tests need iproute2's `ip` command")
    probe = f"nfprobe{os.getpid()}{secrets.token_hex(2)}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        pytest.fail(f"`ip netns add` does not work here: {made.stderr.strip()}")
    ip("netns", "del", probe, check=False)


class NetnsCluster:
    def __init__(self, n: int, cluster: dict[str, Any] | None = None) -> None:
        self.n = n
        self.prefix = f"nf{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.bridge_ns = f"{self.prefix}-br"
        self.workdir = Path(tempfile.mkdtemp(prefix="idunno-netns-"))
        self.config_path = self.workdir / "cluster.toml"
        self.names = [f"H{i}" for i in range(1, n + 1)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.made: list[str] = []
        self.blackholed: dict[str, set[str]] = {}
        self._write_config(cluster or {})

    # --- addresses -------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def addr(self, host: str) -> str:
        return f"{SUBNET}.{100 if host == 'introducer' else int(host[1:])}"

    def port_of(self, host: str) -> str:
        """The bridge-side end of ``host``'s veth pair."""
        return f"p{100 if host == 'introducer' else int(host[1:])}"

    def _write_config(self, cluster: dict[str, Any]) -> None:
        table = {
            "introducer": f"{self.addr('introducer')}:{INTRODUCER_PORT}",
            "secret": secrets.token_hex(16),
            "transfer": "tcp",
            **cluster,
        }
        lines = ["[cluster]", *(f"{k} = {json.dumps(v)}" for k, v in table.items()), ""]
        for name in self.names:
            lines += ["[[nodes]]", f'name = "{name}"', f'host = "{self.addr(name)}"']
            lines += [f"port = {PORT}", ""]
        self.config_path.write_text("\n".join(lines))

    # --- the network -----------------------------------------------------------------

    def build(self) -> None:
        ip("netns", "add", self.bridge_ns)
        self.made.append(self.bridge_ns)
        for br in ("br0", "br1"):
            ip("-n", self.bridge_ns, "link", "add", br, "type", "bridge")
            ip("-n", self.bridge_ns, "link", "set", br, "up")
        for host in ["introducer", *self.names]:
            ns = self.ns(host)
            ip("netns", "add", ns)
            self.made.append(ns)
            port = self.port_of(host)
            ip(
                "-n",
                self.bridge_ns,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            ip("-n", self.bridge_ns, "link", "set", port, "master", "br0")
            ip("-n", self.bridge_ns, "link", "set", port, "up")
            ip("-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def blackhole(self, targets: Iterable[str]) -> None:
        """On every host, a blackhole route to each of ``targets``: sends get EINVAL."""
        targets = list(targets)
        for host in ["introducer", *self.names]:
            for t in targets:
                if t != host:
                    ip("-n", self.ns(host), "route", "add", "blackhole", f"{self.addr(t)}/32")
                    self.blackholed.setdefault(host, set()).add(t)

    def unblackhole(self) -> None:
        for host, targets in self.blackholed.items():
            for t in targets:
                ip("-n", self.ns(host), "route", "del", "blackhole", f"{self.addr(t)}/32")
        self.blackholed.clear()

    def link(self, host: str, up: bool) -> None:
        """``host``'s own eth0 down or up (the kernel restores its subnet route on up)."""
        ip("-n", self.ns(host), "link", "set", "eth0", "up" if up else "down")

    def split(self, group: Iterable[str]) -> None:
        """Move ``group``'s bridge ports to the second bridge: two networks, no path between."""
        for host in group:
            ip("-n", self.bridge_ns, "link", "set", self.port_of(host), "master", "br1")

    def heal(self) -> None:
        for host in self.names:
            ip("-n", self.bridge_ns, "link", "set", self.port_of(host), "master", "br0")

    # --- processes -------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def _spawn(self, name: str, argv: list[str]) -> None:
        path = self.log_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as log:
            self.procs[name] = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(name), sys.executable, *argv],
                cwd=REPO_ROOT,
                env=_child_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self) -> None:
        self._spawn(
            "introducer",
            [
                *("-m", "introducer", "--hostname", self.addr("introducer")),
                *("--port", str(INTRODUCER_PORT), "--config", str(self.config_path)),
            ],
        )
        self._wait_logged("introducer", "listening", 30)
        for name in self.names:
            self._spawn(
                name,
                [
                    *("main.py", "--hostname", self.addr(name), "--port", str(PORT)),
                    *("--config", str(self.config_path), "--no-console"),
                    *("--data-dir", str(self.workdir / "data" / name)),
                ],
            )
        for name in self.names:
            self._wait_logged(name, "listening on", 60)

    def _wait_logged(self, name: str, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_path(name).read_text(errors="replace"):
                return
            self.assert_running([name])
            time.sleep(0.1)
        raise AssertionError(f"{name} did not log {text!r} in {timeout:.0f} s:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 15) -> str:
        path = self.log_path(name)
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def assert_running(self, names: Iterable[str] | None = None) -> None:
        for name in names if names is not None else self.names:
            code = self.procs[name].poll()
            assert code is None, f"{name} exited with status {code}:\n{self.tail(name)}"

    # --- questions (through the one-shot console, inside each host's namespace) --------

    def console(self, host: str, *args: str, timeout: float = 20.0) -> Any:
        return console(
            f"{self.addr(host)}:{PORT}",
            self.config_path,
            *args,
            timeout=timeout,
            prefix=["ip", "netns", "exec", self.ns(host)],
        )

    def views(self, names: Iterable[str] | None = None) -> dict[str, tuple[set[str], str | None]]:
        """Each host's (member names, leader), asked of each in parallel."""
        names = list(names) if names is not None else self.names

        def one(name: str) -> tuple[set[str], str | None]:
            mem = self.console(name, "list_mem")
            return {m["name"] for m in mem["members"]}, mem["leader"]

        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            return dict(zip(names, pool.map(one, names), strict=True))

    def wait_views(
        self, want: dict[str, set[str]], timeout: float, what: str
    ) -> dict[str, tuple[set[str], str | None]]:
        """Poll until each host in ``want`` lists exactly its set; the last answers."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            self.assert_running()  # a node that exited will not answer: say why
            try:
                views = self.views(want)
                last = views
                if all(views[h][0] == w for h, w in want.items()):
                    return views
            except ConsoleError as e:
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {last}")
            time.sleep(0.3)

    # --- clean-up --------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, delete every namespace this cluster made, then check."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for ns in reversed(self.made):
            ip("netns", "del", ns, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)
        left = [ns for ns in netns_list() if ns.startswith(self.prefix)]
        assert left == [], f"namespaces left behind: {left}"
