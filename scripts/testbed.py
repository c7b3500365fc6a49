"""A room of machines on one Linux host: N network namespaces on a bridge (issue 12).

Each simulated host is a network namespace with one ``eth0`` (a veth pair whose other
end sits on a bridge in a namespace of its own), an address in a private /24 that
exists only inside the namespaces, its link shaped to LAN speed with ``tc tbf`` in both
directions (1 Gbit/s by default; ``tc netem`` is not available, so loss and delay stay
in the transport's test mode), and its own OpenSSH server on port 22 with a host key
generated for it.  One operator key logs in everywhere, and one ``known_hosts`` names
every host's address and key, so clients check host keys as in a real room.

    python -m scripts.testbed up 5 [--dir DIR] [--rate 1gbit]   # prints the hosts as JSON
    python -m scripts.testbed run DIR h2 -- CMD [ARG ...]        # a command on one host
    python -m scripts.testbed down DIR                            # stops and removes it all

Faults: :meth:`Testbed.link` takes a host's cable out (``ip link set eth0 down``);
:meth:`Testbed.split` moves hosts to a second bridge (a switch failing between two
halves) and :meth:`Testbed.heal` brings them back.  There is no iptables here.

It needs root, ``ip`` and ``tc`` (iproute2) and ``sshd``; :func:`check_host` says
which is missing, in one line.  Every name it creates carries a unique prefix, and
:meth:`Testbed.down` removes them all, also after a failure (the state file in the
directory lets ``down`` clean up after a process that died).
"""

from __future__ import annotations

import argparse
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.sshd import SshdError, find_sshd, keygen, write_sshd_config

SUBNET = "10.214.0"
FIRST_HOST = 11  # h1 is SUBNET.11, h2 SUBNET.12, ...
SSH_PORT = 22
DEFAULT_RATE = "1gbit"
# tbf: a burst of a few ms at 1 Gbit/s keeps TCP at line rate; latency bounds the queue.
TBF_BURST = "512kb"
TBF_LATENCY = "20ms"
STATE_FILE = "testbed.json"
SSHD_START_TIMEOUT = 15.0


class TestbedError(RuntimeError):
    """The testbed cannot be built or used here; the message says why, on one line."""

    __test__ = False  # not a pytest test class, whatever its name


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise TestbedError(f"{' '.join(argv)}: {out.stderr.strip() or out.returncode}")
    return out


def check_host() -> None:
    """TestbedError unless namespaces, tc and sshd are usable here."""
    if os.geteuid() != 0:
        raise TestbedError("the testbed needs root (it creates network namespaces)")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise TestbedError(f"the testbed needs iproute2's `{tool}` command")
    try:
        find_sshd()
    except SshdError as e:
        raise TestbedError(str(e)) from None
    probe = f"tbprobe{os.getpid()}{secrets.token_hex(2)}"
    made = _run(["ip", "netns", "add", probe], check=False)
    if made.returncode != 0:
        raise TestbedError(f"`ip netns add` does not work here: {made.stderr.strip()}")
    _run(["ip", "netns", "del", probe], check=False)


class Testbed:
    """``n`` hosts ``h1`` .. ``hN``; see the module docstring."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, n: int, workdir: Path | None = None, rate: str = DEFAULT_RATE) -> None:
        if not 1 <= n <= 200:
            raise ValueError(f"a testbed has 1..200 hosts, not {n}")
        self.n = n
        self.rate = rate
        self.prefix = f"tb{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.workdir = (workdir or Path(tempfile.mkdtemp(prefix="idunno-testbed-"))).resolve()
        self.hosts = [f"h{i}" for i in range(1, n + 1)]
        self.namespaces: list[str] = []
        self.sshd_pids: dict[str, int] = {}
        self._sshds: list[subprocess.Popen[bytes]] = []  # those this process started
        self.operator_key = self.workdir / "ssh" / "id_ed25519"
        self.known_hosts = self.workdir / "ssh" / "known_hosts"

    # --- names -------------------------------------------------------------------------

    @property
    def bridge_ns(self) -> str:
        return f"{self.prefix}-sw"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def addr(self, host: str) -> str:
        return f"{SUBNET}.{FIRST_HOST + self.hosts.index(host)}"

    def _port(self, host: str) -> str:
        return f"p{self.hosts.index(host) + 1}"  # the host's cable's switch end

    # --- life cycle ----------------------------------------------------------------------

    def up(self) -> Testbed:
        """Build the network and start every host's sshd; returns self."""
        check_host()
        try:
            self._build_network()
            self._start_sshds()
            self._save()
        except BaseException:
            self.down()
            raise
        return self

    def _build_network(self) -> None:
        sw = self.bridge_ns
        _run(["ip", "netns", "add", sw])
        self.namespaces.append(sw)
        for bridge in ("br0", "br1"):
            _run(["ip", "-n", sw, "link", "add", bridge, "type", "bridge"])
            _run(["ip", "-n", sw, "link", "set", bridge, "up"])
        for host in self.hosts:
            ns, port = self.ns(host), self._port(host)
            _run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            _run(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0"])
            _run(["ip", "-n", sw, "link", "set", "eth0", "netns", ns])
            _run(["ip", "-n", sw, "link", "set", port, "master", "br0", "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{self.addr(host)}/24", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # Both directions at LAN speed: the host's sends, and the switch's sends to it.
            for where, dev in ((ns, "eth0"), (sw, port)):
                _run(["tc", "-n", where, "qdisc", "add", "dev", dev, "root", "tbf", *self._tbf()])

    def _tbf(self) -> list[str]:
        return ["rate", self.rate, "burst", TBF_BURST, "latency", TBF_LATENCY]

    def _start_sshds(self) -> None:
        ssh_dir = self.operator_key.parent
        ssh_dir.mkdir(parents=True, exist_ok=True)
        operator_pub = keygen(self.operator_key, "testbed operator")
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(operator_pub + "\n")
        authorized.chmod(0o600)
        with contextlib.suppress(OSError):  # privilege separation wants it as root
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        known: list[str] = []
        sshd = find_sshd()
        for host in self.hosts:
            home = self.workdir / "hosts" / host / "sshd"
            home.mkdir(parents=True, exist_ok=True)
            host_key = home / "ssh_host_ed25519_key"
            known.append(f"{self.addr(host)} {keygen(host_key, f'{host} host key')}")
            config = write_sshd_config(home, self.addr(host), SSH_PORT, host_key, authorized)
            with (home / "sshd.log").open("wb") as out:
                proc = subprocess.Popen(
                    ["ip", "netns", "exec", self.ns(host), sshd, "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.sshd_pids[host] = proc.pid
            self._sshds.append(proc)
        self.known_hosts.write_text("\n".join(known) + "\n")
        deadline = time.monotonic() + SSHD_START_TIMEOUT
        for host in self.hosts:
            while not self._greets(self.hosts[0], host):
                if time.monotonic() > deadline:
                    log = self.workdir / "hosts" / host / "sshd" / "sshd.log"
                    raise TestbedError(f"{host}'s sshd did not greet in time; see {log}")
                time.sleep(0.05)

    def _greets(self, client: str, server: str) -> bool:
        code = (
            "import socket,sys\n"
            "try:\n"
            f"    s = socket.create_connection(({self.addr(server)!r}, {SSH_PORT}), timeout=1)\n"
            "    sys.exit(0 if s.recv(8).startswith(b'SSH-') else 1)\n"
            "except OSError:\n"
            "    sys.exit(1)\n"
        )
        argv = ["ip", "netns", "exec", self.ns(client), sys.executable, "-c", code]
        return _run(argv, check=False).returncode == 0

    def down(self) -> None:
        """Stop every sshd and remove every namespace; TestbedError if any is left."""
        for pid in self.sshd_pids.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        for proc in self._sshds:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for ns in reversed(self.namespaces):
            _run(["ip", "netns", "del", ns], check=False)
        left = [ns for ns in namespaces() if ns.startswith(self.prefix + "-")]
        shutil.rmtree(self.workdir, ignore_errors=True)
        if left:
            raise TestbedError(f"namespaces left behind: {', '.join(left)}")

    def __enter__(self) -> Testbed:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # --- using it ------------------------------------------------------------------------

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run on ``host`` (inside its namespace)."""
        return ["ip", "netns", "exec", self.ns(host), *argv]

    def ssh_table(self, user: str = "root") -> dict[str, Any]:
        """The cluster file's ``[ssh]`` table for this room."""
        return {
            "user": user,
            "port": SSH_PORT,
            "key_file": str(self.operator_key),
            "known_hosts": str(self.known_hosts),
            "accept_new_host_keys": False,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "dir": str(self.workdir),
            "prefix": self.prefix,
            "rate": self.rate,
            "hosts": {h: {"address": self.addr(h), "netns": self.ns(h)} for h in self.hosts},
            "ssh": self.ssh_table(),
        }

    # --- faults --------------------------------------------------------------------------

    def link(self, host: str, up: bool) -> None:
        """Plug ``host``'s cable in or pull it out."""
        _run(["ip", "-n", self.ns(host), "link", "set", "eth0", "up" if up else "down"])

    def split(self, group: Sequence[str]) -> None:
        """Move ``group`` to the second bridge: no path between it and the others."""
        for host in group:
            _run(["ip", "-n", self.bridge_ns, "link", "set", self._port(host), "master", "br1"])

    def heal(self) -> None:
        for host in self.hosts:
            _run(["ip", "-n", self.bridge_ns, "link", "set", self._port(host), "master", "br0"])

    # --- the state file (for ``down`` from another process) -----------------------------

    def _save(self) -> None:
        state = {**self.describe(), "n": self.n, "sshd_pids": self.sshd_pids}
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: Path) -> Testbed:
        try:
            state = json.loads((workdir / STATE_FILE).read_text())
        except (OSError, ValueError) as e:
            raise TestbedError(f"{workdir} holds no testbed state: {e}") from None
        bed = cls(int(state["n"]), workdir, state["rate"])
        bed.prefix = state["prefix"]
        bed.namespaces = [bed.bridge_ns, *(bed.ns(h) for h in bed.hosts)]
        bed.sshd_pids = {h: int(p) for h, p in state["sshd_pids"].items()}
        return bed


def namespaces() -> list[str]:
    out = _run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.testbed",
        description="N simulated hosts (network namespaces on a bridge, LAN-speed links, "
        "an sshd each) on this machine, for testing the cluster as a room of machines.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build N hosts; prints them as JSON")
    up.add_argument("n", type=int, help="how many hosts")
    up.add_argument("--dir", type=Path, help="where keys, logs and state go (default: a new one)")
    up.add_argument("--rate", default=DEFAULT_RATE, help="link speed for tc tbf (default 1gbit)")
    run = sub.add_parser("run", help="run a command on one host")
    run.add_argument("dir", type=Path)
    run.add_argument("host")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARG ...]")
    down = sub.add_parser("down", help="stop and remove a testbed")
    down.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            if args.dir is not None:
                args.dir.mkdir(parents=True, exist_ok=True)
            started = time.monotonic()
            bed = Testbed(args.n, args.dir, args.rate).up()
            print(json.dumps({**bed.describe(), "seconds": round(time.monotonic() - started, 2)}))
            return 0
        bed = Testbed.load(args.dir)
        if args.command == "run":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if args.host not in bed.hosts or not command:
                parser.error(f"run DIR HOST -- COMMAND: HOST is one of {', '.join(bed.hosts)}")
            return subprocess.call(bed.command(args.host, command))
        bed.down()
        return 0
    except (TestbedError, ValueError) as e:
        print(f"testbed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
