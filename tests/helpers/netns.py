"""Real processes on separate Linux network namespaces, for network-fault tests.

:class:`NetnsCluster` runs a cluster on a :class:`~scripts.testbed.Testbed`: one
namespace per host, on a bridge, with addresses that exist only inside the namespaces
(the caller's network is never touched), LAN-speed links and an sshd each.  Nodes
H1..HN run on hosts h1..hN (``python main.py ... --no-console``, all on one port: they
are different hosts) and the introducer on one more host.  ``scp=True`` makes the file
store copy with scp between the hosts' sshd (keys and known_hosts from the testbed)
instead of its tcp stream.  The faults:

* :meth:`NetnsCluster.blackhole` / :meth:`unblackhole` - withdraw the routes to some
  hosts on every host (sends to them fail with EINVAL);
* :meth:`link` - take a host's own link down or up (its sends fail with ENETUNREACH);
* :meth:`split` / :meth:`heal` - move some hosts' bridge ports to a second bridge;
* :meth:`switch` / :meth:`flap` - the whole switch off (both bridges down), and on.

:meth:`wait_healed` waits for one membership of every node with one leader, and says
how long it took (a partition's time to heal).

Everything needs root, ``ip``, ``tc`` and ``sshd``; :func:`require_netns` fails the
test with the reason when they are missing (CI runs as root: a silent skip would hide
it).  :meth:`NetnsCluster.close` stops every process and takes the testbed down, also
after a failure.
"""

from __future__ import annotations

import contextlib
import json
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
from scripts.testbed import Testbed, TestbedError, check_host

PORT = 7000
INTRODUCER_PORT = 7100


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def require_netns() -> None:
    """Fail (not skip) with the reason when the testbed cannot be built here."""
    try:
        check_host()
    except TestbedError as e:
        pytest.fail(f"network-fault tests cannot run here: {e}")


class NetnsCluster:
    def __init__(self, n: int, cluster: dict[str, Any] | None = None, *, scp: bool = False) -> None:
        self.n = n
        self.bed = Testbed(n + 1)  # h1..hN for the nodes, one more for the introducer
        self.workdir = Path(tempfile.mkdtemp(prefix="idunno-netns-"))
        self.config_path = self.workdir / "cluster.toml"
        self.names = [f"H{i}" for i in range(1, n + 1)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.blackholed: dict[str, set[str]] = {}
        self.scp = scp
        self._cluster = cluster or {}

    # --- addresses -------------------------------------------------------------------

    def host(self, name: str) -> str:
        """The testbed host ``name`` (a node, or "introducer") runs on."""
        return f"h{self.n + 1}" if name == "introducer" else f"h{int(name[1:])}"

    def ns(self, name: str) -> str:
        return self.bed.ns(self.host(name))

    def addr(self, name: str) -> str:
        return self.bed.addr(self.host(name))

    def _write_config(self) -> None:
        table = {
            "introducer": f"{self.addr('introducer')}:{INTRODUCER_PORT}",
            "secret": secrets.token_hex(16),
            "transfer": "scp" if self.scp else "tcp",
            **self._cluster,
        }
        if "secret_file" in self._cluster:  # the caller's file instead of an inline secret
            del table["secret"]
        lines = ["[cluster]", *(f"{k} = {json.dumps(v)}" for k, v in table.items()), ""]
        if self.scp:
            ssh = self.bed.ssh_table()
            lines += ["[ssh]", *(f"{k} = {json.dumps(v)}" for k, v in ssh.items()), ""]
        for name in self.names:
            lines += ["[[nodes]]", f'name = "{name}"', f'host = "{self.addr(name)}"']
            lines += [f"port = {PORT}", ""]
        self.config_path.write_text("\n".join(lines))

    # --- the network -----------------------------------------------------------------

    def build(self) -> None:
        self.bed.up()
        self._write_config()

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

    def link(self, name: str, up: bool) -> None:
        """``name``'s own eth0 down or up (the kernel restores its subnet route on up)."""
        self.bed.link(self.host(name), up)

    def split(self, group: Iterable[str]) -> None:
        """Move ``group``'s bridge ports to the second bridge: two networks, no path between."""
        self.bed.split([self.host(name) for name in group])

    def heal(self) -> None:
        self.bed.heal()

    def switch(self, up: bool) -> None:
        """The switch off (both bridges down: no frame crosses) or on again."""
        for bridge in ("br0", "br1"):
            ip("-n", self.bed.bridge_ns, "link", "set", bridge, "up" if up else "down")

    def flap(self, seconds: float) -> None:
        """Every link down for ``seconds``, then up: a switch that reboots."""
        self.switch(up=False)
        try:
            time.sleep(seconds)
        finally:
            self.switch(up=True)

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
            self._spawn_node(name)
        for name in self.names:
            self._wait_logged(name, "listening on", 60)

    def _spawn_node(self, name: str) -> None:
        self._spawn(
            name,
            [
                *("main.py", "--hostname", self.addr(name), "--port", str(PORT)),
                *("--config", str(self.config_path), "--no-console"),
                *("--data-dir", str(self.workdir / "data" / name)),
            ],
        )

    def restart(self, name: str) -> None:
        """Start node ``name`` again (after it was killed); back when it listens."""
        path = self.log_path(name)
        offset = path.stat().st_size if path.exists() else 0
        self._spawn_node(name)
        self._wait_logged(name, "listening on", 60, offset)

    def _wait_logged(self, name: str, text: str, timeout: float, offset: int = 0) -> None:
        """Wait until ``name``'s log holds ``text`` past byte ``offset``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path(name).open("rb") as f:
                f.seek(offset)
                logged = f.read().decode(errors="replace")
            if text in logged:
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
            if name not in self.procs:
                continue  # started by someone else (the launcher): not ours to watch
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
            self.assert_running(want)  # a node that exited will not answer: say why
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

    def wait_healed(
        self, timeout: float, what: str, since: float | None = None
    ) -> tuple[float, dict[str, tuple[set[str], str | None]]]:
        """Poll until every node lists every node and all name one leader.

        Returns the seconds from ``since`` (a ``time.monotonic()``; default now) until
        a round of answers first showed it, and those answers.
        """
        began = time.monotonic() if since is None else since
        deadline = time.monotonic() + timeout
        everyone = set(self.names)
        last: Any = None
        while True:
            self.assert_running()
            try:
                views = self.views()
                last = views
                merged = all(v[0] == everyone for v in views.values())
                if merged and len({leader for _, leader in views.values()}) == 1:
                    return time.monotonic() - began, views
            except ConsoleError as e:
                last = e
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}: {last}")
            time.sleep(0.2)

    def leader(self, via: str) -> str | None:
        leader: str | None = self.console(via, "list_mem")["leader"]
        return leader

    # --- clean-up --------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, take the testbed down (it checks nothing is left)."""
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
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.bed.down()
