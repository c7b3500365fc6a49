"""The cluster secret: inline, from a file or from IDUNNO_SECRET; its checks; ``config.secret``."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from config import secret as secret_cmd
from config.topology import (
    DEFAULT_SECRET,
    MIN_SECRET_BYTES,
    SECRET_ENV,
    ClusterConfig,
    ConfigError,
    Node,
    check_secret,
    config_from_dict,
    default_config,
    is_loopback,
    load_config,
    read_secret_file,
)

REPO = Path(__file__).resolve().parents[2]
GOOD = "0123456789abcdef0123456789abcdef"  # 32 bytes


def one_line_error(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, f"error spans several lines: {message!r}"
    return message


def write_cluster(
    directory: Path, cluster: str = "", host: str = "127.0.0.1", name: str = "cluster.toml"
) -> Path:
    """A cluster file with one node at ``host`` and the given [cluster] lines."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"[cluster]\n{textwrap.dedent(cluster)}\n"
        f'[[nodes]]\nname = "H1"\nhost = "{host}"\nport = 9001\n'
    )
    return path


def write_secret(path: Path, text: str = GOOD + "\n", mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def nodes_data(**cluster: Any) -> dict[str, Any]:
    return {"cluster": cluster, "nodes": [{"name": "A", "host": "127.0.0.1", "port": 9001}]}


# --- where the secret comes from ------------------------------------------------------------


def test_default_inline_and_their_sources(tmp_path: Path):
    assert (default_config().secret, default_config().secret_source) == (
        DEFAULT_SECRET,
        "built-in default",
    )
    builtin = load_config(None, environ={})
    assert (builtin.secret, builtin.secret_source) == (DEFAULT_SECRET, "built-in default")
    cfg = load_config(write_cluster(tmp_path, f'secret = "{GOOD}"'), environ={})
    assert (cfg.secret, cfg.secret_source, cfg.secret_bytes) == (
        GOOD,
        "cluster.secret",
        GOOD.encode(),
    )
    cfg = load_config(write_cluster(tmp_path, "M = 3"), environ={})
    assert (cfg.secret, cfg.secret_source) == (DEFAULT_SECRET, "built-in default")


def test_secret_file_relative_to_the_cluster_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    write_secret(tmp_path / "etc" / "keys" / "cluster.secret")
    config_file = write_cluster(tmp_path / "etc", 'secret_file = "keys/cluster.secret"')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config_file, environ={})
    assert (cfg.secret, cfg.secret_source) == (GOOD, "cluster.secret_file")


def test_secret_file_absolute_and_home_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    absolute = write_secret(tmp_path / "abs.secret", "absolute-secret-value\n")
    cfg = load_config(write_cluster(tmp_path / "a", f'secret_file = "{absolute}"'), environ={})
    assert cfg.secret == "absolute-secret-value"

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_secret(tmp_path / "home" / ".idunno" / "secret", "home-secret-value-1234\n")
    cfg = load_config(write_cluster(tmp_path / "b", 'secret_file = "~/.idunno/secret"'), environ={})
    assert cfg.secret == "home-secret-value-1234"


def test_surrounding_whitespace_of_the_file_is_not_part_of_the_secret(tmp_path: Path):
    assert read_secret_file(write_secret(tmp_path / "s", f"  {GOOD}\r\n\n")) == GOOD


def test_config_from_dict_resolves_against_base_dir(tmp_path: Path):
    write_secret(tmp_path / "s")
    cfg = config_from_dict(nodes_data(secret_file="s"), base_dir=tmp_path)
    assert cfg.secret == GOOD


def test_the_environment_overrides_the_file_the_inline_secret_and_the_default(tmp_path: Path):
    env = {SECRET_ENV: "from-the-environment-xyz"}
    write_secret(tmp_path / "s")
    for cluster in ('secret_file = "s"', f'secret = "{GOOD}"', ""):
        cfg = load_config(write_cluster(tmp_path, cluster), environ=env)
        assert (cfg.secret, cfg.secret_source) == ("from-the-environment-xyz", SECRET_ENV)
    cfg = load_config(None, environ=env)
    assert (cfg.secret, cfg.secret_source) == ("from-the-environment-xyz", SECRET_ENV)


def test_with_the_environment_set_the_secret_file_need_not_exist_here(tmp_path: Path):
    config_file = write_cluster(tmp_path, 'secret_file = "/nonexistent/cluster.secret"')
    cfg = load_config(config_file, environ={SECRET_ENV: GOOD})
    assert cfg.secret == GOOD
    # ... but without it, the missing file is the error.
    message = one_line_error(load_config, config_file, environ={})
    assert message == (
        "cluster.secret_file: cannot read /nonexistent/cluster.secret: No such file or directory"
    )


def test_load_config_reads_this_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    config_file = write_cluster(tmp_path, f'secret = "{GOOD}"')
    assert load_config(config_file).secret == GOOD
    monkeypatch.setenv(SECRET_ENV, "exported-secret-value")
    assert load_config(config_file).secret == "exported-secret-value"
    assert load_config(None).secret == "exported-secret-value"
    # config_from_dict is a function of its arguments: no environ, no override.
    assert config_from_dict(nodes_data(secret=GOOD)).secret == GOOD


def test_an_empty_environment_variable_is_refused(tmp_path: Path):
    for value in ("", "  \n"):
        message = one_line_error(load_config, None, environ={SECRET_ENV: value})
        assert message.startswith(f"{SECRET_ENV}: is set but empty")


# --- what is refused at load time -----------------------------------------------------------


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610, 0o602])
def test_a_secret_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int):
    path = write_secret(tmp_path / "s", mode=mode)
    message = one_line_error(load_config, write_cluster(tmp_path, 'secret_file = "s"'), environ={})
    assert message == (
        f"cluster.secret_file: {path} is accessible by group or others "
        f"(mode {mode:04o}); run chmod 600 {path}"
    )


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_secret_file_is_accepted(tmp_path: Path, mode: int):
    assert read_secret_file(write_secret(tmp_path / "s", mode=mode)) == GOOD


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "is empty"),
        ("\n \n", "is empty"),
        ("one\ntwo\n", "holds more than one line; the secret is one line"),
        (b"\xff\xfe secret", "is not UTF-8 text"),
        ("x" * 5000, "is larger than 4096 bytes; is it a secret file?"),
    ],
)
def test_unusable_secret_files_are_refused(tmp_path: Path, content: str | bytes, expected: str):
    path = tmp_path / "s"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    path.chmod(0o600)
    assert one_line_error(read_secret_file, path) == f"cluster.secret_file: {path} {expected}"


def test_a_directory_is_not_a_secret_file(tmp_path: Path):
    (tmp_path / "d").mkdir(mode=0o700)
    message = one_line_error(read_secret_file, tmp_path / "d")
    assert message.startswith("cluster.secret_file: ")


def test_secret_and_secret_file_together_are_refused(tmp_path: Path):
    message = one_line_error(config_from_dict, nodes_data(secret=GOOD, secret_file="s"))
    assert message == "cluster.secret_file: give secret or secret_file, not both"


@pytest.mark.parametrize(
    ("cluster", "start"),
    [
        ({"secret": ""}, "cluster.secret: must not be empty"),
        ({"secret_file": 42}, "cluster.secret_file: expected str, got 42"),
        ({"secret": True}, "cluster.secret: expected str, got True"),
        ({"secretfile": "s"}, "cluster.secretfile: unknown key"),
        ({"secret_env": "X"}, "cluster.secret_env: unknown key"),
    ],
)
def test_bad_values_and_unknown_keys_are_refused_naming_the_key(cluster: dict[str, Any], start):
    assert one_line_error(config_from_dict, nodes_data(**cluster)).startswith(start)


def test_the_secret_is_not_in_the_configs_repr():
    cfg = config_from_dict(nodes_data(secret=GOOD))
    assert GOOD not in repr(cfg) and "secret_source='cluster.secret'" in repr(cfg)


# --- loopback, and what is refused beyond it ------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.3.4", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("10.99.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("fe80::1", False),
        ("h1.example", False),
        ("localhost.example", False),
        ("app.localhost", False),  # a name is never resolved, so only `localhost` counts
    ],
)
def test_is_loopback(host: str, loopback: bool):
    assert is_loopback(host) is loopback


def cluster_at(*hosts: str, introducer: str = "127.0.0.1", **kw: Any) -> ClusterConfig:
    nodes = tuple(Node(f"H{i}", h, 9000 + i) for i, h in enumerate(hosts, 1))
    return ClusterConfig(nodes=nodes, introducer=(introducer, 8888), **kw)


def test_any_secret_is_accepted_when_every_address_is_loopback():
    check_secret(default_config(), ("--hostname", "127.0.0.1"))
    check_secret(cluster_at("127.0.0.1", "localhost", "::1"), ("--node", "localhost"))
    check_secret(cluster_at("127.0.0.1", secret="short", secret_source="cluster.secret"))


def test_the_default_secret_is_refused_beyond_loopback_naming_the_address():
    how = (
        "make one with 'python -m config.secret new FILE' and set "
        f'secret_file = "FILE" under [cluster] in the cluster file, or set {SECRET_ENV}'
    )
    default = "cluster.secret: the public default secret 'change-me' is accepted only on loopback"
    cases = [
        (default_config(), ("--hostname", "10.99.0.1"), "10.99.0.1 (--hostname)"),
        (default_config(), ("--node", "10.99.0.1"), "10.99.0.1 (--node)"),
        (cluster_at("127.0.0.1", introducer="10.99.0.9"), None, "10.99.0.9 (cluster.introducer)"),
        (cluster_at("127.0.0.1", "10.99.0.2"), None, "10.99.0.2 (nodes[1].host)"),
        # Written out in the cluster file, the default is just as public.
        (
            cluster_at("10.99.0.1", secret=DEFAULT_SECRET, secret_source="cluster.secret"),
            None,
            "10.99.0.1 (nodes[0].host)",
        ),
    ]
    for cfg, own, seen in cases:
        args = (own,) if own else ()
        assert one_line_error(check_secret, cfg, *args) == (
            f"{default}, and {seen} is not loopback; {how}"
        )


def test_a_short_secret_is_refused_beyond_loopback_naming_its_source():
    short = "a" * (MIN_SECRET_BYTES - 1)
    for source in ("cluster.secret", "cluster.secret_file", SECRET_ENV):
        cfg = cluster_at("10.99.0.1", secret=short, secret_source=source)
        assert one_line_error(check_secret, cfg).startswith(
            f"{source}: the secret is 15 bytes, too short for 10.99.0.1 (nodes[0].host), "
            "which is not loopback: at least 16 are needed beyond loopback; make one with "
        )
    # Bytes, not characters: 8 two-byte characters are 16 bytes.
    check_secret(cluster_at("10.99.0.1", secret="é" * 8, secret_source="cluster.secret"))
    check_secret(cluster_at("10.99.0.1", secret="a" * MIN_SECRET_BYTES))


# --- python -m config.secret new PATH -------------------------------------------------------


def test_new_writes_32_random_bytes_hex_encoded_with_mode_0600(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = tmp_path / "cluster.secret"
    old_umask = os.umask(0)  # the mode must not depend on the caller's umask
    try:
        assert secret_cmd.main(["new", str(path)]) == 0
    finally:
        os.umask(old_umask)
    text = path.read_text()
    assert text.endswith("\n") and len(text) == 65
    assert bytes.fromhex(text.strip()) and len(bytes.fromhex(text.strip())) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    out, err = capsys.readouterr()
    assert err == ""
    assert out == (
        f"wrote a new cluster secret to {path} (mode 0600); put "
        f'secret_file = "{path.resolve()}" under [cluster] in the cluster file '
        "and copy the file to every host\n"
    )
    # What it writes is what the loader reads, and is fit for a LAN cluster.
    cfg = load_config(write_cluster(tmp_path, 'secret_file = "cluster.secret"', "10.99.0.1"), {})
    assert cfg.secret == text.strip()
    check_secret(cfg, ("--hostname", "10.99.0.1"))


def test_new_secrets_differ(tmp_path: Path):
    assert secret_cmd.main(["new", str(tmp_path / "a")]) == 0
    assert secret_cmd.main(["new", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a").read_text() != (tmp_path / "b").read_text()


def test_new_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = write_secret(tmp_path / "s", "keep me, I am in use\n", mode=0o644)
    assert secret_cmd.main(["new", str(path)]) == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {path} exists; pass --force to replace it\n")
    assert path.read_text() == "keep me, I am in use\n"

    assert secret_cmd.main(["new", "--force", str(path)]) == 0
    assert path.read_text() != "keep me, I am in use\n" and len(path.read_text()) == 65
    # The replacement is private even though the old file was not.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary left behind


def test_new_in_a_missing_directory_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    path = tmp_path / "missing" / "s"
    for argv in (["new", str(path)], ["new", "--force", str(path)]):
        assert secret_cmd.main(argv) == 1
        out, err = capsys.readouterr()
        assert (out, err) == ("", f"error: cannot write {path}: No such file or directory\n")
    assert not (tmp_path / "missing").exists()


def test_new_from_the_command_line(tmp_path: Path):
    """``python -m config.secret new PATH`` as a user runs it, then again without --force."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "config.secret", "new", "cluster.secret"]
    first = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout.startswith("wrote a new cluster secret to cluster.secret (mode 0600)")
    assert stat.S_IMODE((tmp_path / "cluster.secret").stat().st_mode) == 0o600
    again = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == "error: cluster.secret exists; pass --force to replace it\n"
    usage = subprocess.run(
        argv[:3], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "ACTION" in usage.stderr
