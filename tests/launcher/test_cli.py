"""``python -m launcher``: what it refuses before logging in anywhere, in one line.

Nothing here reaches a host: every case fails before the first connection (a bad
cluster file, a secret unfit for the addresses, an unusable operator key).  The
connections themselves are tested on the testbed (tests/integration/test_launcher.py).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from launcher.__main__ import EXIT_USAGE, build_parser, main
from launcher.plan import Login
from launcher.ssh import explain
from scripts.localcluster import REPO_ROOT
from sdfs.transfer.hostkeys import HostKeyProblem

SECRET = "0123456789abcdef0123456789abcdef"


def cluster(tmp_path: Path, secret: str | None = f'secret = "{SECRET}"') -> Path:
    path = tmp_path / "room.toml"
    path.write_text(
        "[cluster]\n"
        'introducer = "10.0.0.9:8888"\n'
        f"{secret or ''}\n"
        "[[nodes]]\n"
        'name = "H1"\nhost = "10.0.0.1"\nport = 7000\n'
    )
    return path


def fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_a_missing_or_broken_cluster_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "cannot read cluster file" in fails(capsys, "up", "--config", str(tmp_path / "no"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\n")
    assert "not valid TOML" in fails(capsys, "status", "--config", str(bad))
    bad.write_text('[[nodes]]\nname = "H1"\nhost = "10.0.0.1"\n')
    assert "nodes[0].port: missing" in fails(capsys, "down", "--config", str(bad))


def test_the_public_default_secret_is_refused_off_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = fails(capsys, "up", "--config", str(cluster(tmp_path, secret=None)))
    assert "public default secret" in err


def test_a_secret_from_the_environment_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDUNNO_SECRET", SECRET + "x")
    assert "IDUNNO_SECRET" in fails(capsys, "up", "--config", str(cluster(tmp_path)))


def test_an_unusable_operator_key_stops_before_any_login(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(cluster(tmp_path))
    err = fails(capsys, "up", "--config", config, "--identity", str(tmp_path / "none"))
    assert "cannot use SSH key" in err
    key = tmp_path / "locked"
    key.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"a passphrase"),
        )
    )
    assert "passphrase" in fails(capsys, "down", "--config", config, "--identity", str(key))


def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(cluster(tmp_path))
    assert "--repo" in fails(capsys, "up", "--config", config, "--repo", "relative/dir")
    assert "--run-dir" in fails(capsys, "up", "--config", config, "--run-dir", "runs")
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["start", "--config", config])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up"])  # --config is required
    capsys.readouterr()


def test_help_names_the_commands_and_where_things_go() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "launcher", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for word in ("up", "status", "down", "--known-hosts", "logs/NAME.log", "pids/NAME.pid"):
        assert word in out


def test_login_failures_in_words() -> None:
    login = Login("10.0.0.3", 22)

    def why(e: BaseException) -> str:
        text = explain(e, login, "op", "/k/id", "/k/known_hosts")
        assert "\n" not in text
        return text

    assert "ssh-keyscan -p 22 10.0.0.3" in why(HostKeyProblem("host key not in known_hosts"))
    assert why(paramiko.AuthenticationException("no")) == (
        "the server refused key /k/id for user op"
    )
    refused = paramiko.ssh_exception.NoValidConnectionsError(
        {("10.0.0.3", 22): ConnectionRefusedError(111, "Connection refused")}
    )
    assert why(refused) == "cannot connect to port 22: Connection refused"
    assert why(socket.gaierror(-2, "Name or service not known")) == "unknown host name 10.0.0.3"
    assert "no answer in time" in why(TimeoutError())
