"""The testbed (issue 12): simulated hosts with their own addresses, links and sshd."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import testbed
from scripts.localcluster import REPO_ROOT, _child_env
from scripts.testbed import Testbed, TestbedError, check_host

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bed() -> Iterator[Testbed]:
    try:
        check_host()
    except TestbedError as e:
        pytest.fail(f"the testbed cannot run here: {e}")  # CI runs as root: never skip
    began = time.monotonic()
    with Testbed(3) as b:
        print(f"testbed of 3 hosts up in {time.monotonic() - began:.2f} s")
        yield b


def on(bed: Testbed, host: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bed.command(host, argv), capture_output=True, text=True, timeout=30)


def ssh(
    bed: Testbed, client: str, server: str, *argv: str, known_hosts: Path | None = None
) -> subprocess.CompletedProcess[str]:
    options = [
        *("-i", str(bed.operator_key)),
        *("-o", f"UserKnownHostsFile={known_hosts or bed.known_hosts}"),
        *("-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"),
        *("-o", "ConnectTimeout=2"),
    ]
    return on(bed, client, "ssh", *options, f"root@{bed.addr(server)}", *argv)


def test_each_host_has_its_address_a_shaped_link_and_an_sshd_the_others_trust(
    bed: Testbed, tmp_path: Path
) -> None:
    for host in bed.hosts:
        shown = on(bed, host, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
        assert f"inet {bed.addr(host)}/24" in shown
        qdisc = on(bed, host, "tc", "qdisc", "show", "dev", "eth0").stdout
        assert "tbf" in qdisc and "rate 1Gbit" in qdisc
    # Logging in checks the host key against known_hosts; the command runs over there.
    reply = ssh(bed, "h1", "h3", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
    assert reply.returncode == 0, reply.stderr
    assert f"inet {bed.addr('h3')}/24" in reply.stdout
    # A known_hosts without the host's key: the client refuses to log in.
    stranger = tmp_path / "known_hosts"
    stranger.write_text(bed.known_hosts.read_text().splitlines()[0] + "\n")  # h1's only
    refused = ssh(bed, "h1", "h3", "true", known_hosts=stranger)
    assert refused.returncode != 0 and "Host key verification failed" in refused.stderr


def test_a_pulled_cable_and_a_split_switch_cut_the_hosts_off(bed: Testbed) -> None:
    assert ssh(bed, "h1", "h2", "true").returncode == 0
    bed.link("h2", up=False)
    try:
        assert ssh(bed, "h1", "h2", "true").returncode != 0
        assert ssh(bed, "h1", "h3", "true").returncode == 0
    finally:
        bed.link("h2", up=True)
    bed.split(["h3"])
    try:
        assert ssh(bed, "h1", "h3", "true").returncode != 0
        assert ssh(bed, "h1", "h2", "true").returncode == 0
    finally:
        bed.heal()
    assert ssh(bed, "h1", "h3", "true").returncode == 0


def test_the_command_line_builds_and_removes_a_testbed(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "scripts.testbed", *args]
        env = _child_env()
        return subprocess.run(argv, capture_output=True, text=True, cwd=REPO_ROOT, env=env)

    up = cli("up", "2", "--dir", str(tmp_path / "bed"))
    assert up.returncode == 0, up.stderr
    made = json.loads(up.stdout)
    assert sorted(made["hosts"]) == ["h1", "h2"] and made["seconds"] < 30
    names = [h["netns"] for h in made["hosts"].values()]
    assert set(names) <= set(testbed.namespaces())
    ran = cli("run", str(tmp_path / "bed"), "h2", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert made["hosts"]["h2"]["address"] in ran.stdout
    down = cli("down", str(tmp_path / "bed"))
    assert down.returncode == 0, down.stderr
    assert not set(names) & set(testbed.namespaces())
    assert not (tmp_path / "bed").exists()
    again = cli("down", str(tmp_path / "bed"))
    assert again.returncode == 1 and again.stderr.startswith("testbed: ")


def test_without_root_it_says_why_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(TestbedError, match=r"^the testbed needs root"):
        check_host()
