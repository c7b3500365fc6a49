"""The public default secret, through the command line: refused beyond loopback, kept on it.

Each refusal is a real ``python main.py`` / ``python -m introducer`` /
``python -m console`` run that must exit with status 2 and one line on stderr
before it binds or sends anything; the scratch directory it runs in must stay
empty (a node that got further would create its data directory there).

The addresses beyond loopback are in 10.99.0.0/24, and nothing may ever be sent to
them, even by a process that failed to refuse (a regression).  Where ``unshare -n``
works (root, or user namespaces) each refusing process runs in a network namespace
of its own, which has no interface up, so it cannot reach anything.  Elsewhere the
nodes still stop before the network, their ``--data-dir`` lying under a regular
file; the rest would at worst try one connection.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config.topology import SECRET_ENV
from scripts.localcluster import (
    REPO_ROOT,
    console,
    start_introducer,
    start_node,
    stop,
    wait_for,
    write_cluster_file,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

REMOTE = "10.99.0.1"
GOOD = "0123456789abcdef0123456789abcdef"
HOW = (
    "make one with 'python -m config.secret new FILE' and set "
    f'secret_file = "FILE" under [cluster] in the cluster file, or set {SECRET_ENV}'
)
DEFAULT = "cluster.secret: the public default secret 'change-me' is accepted only on loopback"


@functools.cache
def _isolate() -> list[str]:
    """``unshare -n`` (no network at all) if it works here, else nothing."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, timeout=30)
    return [unshare, "-n"] if probe.returncode == 0 else []


def run(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None, *, isolate: bool = False
) -> tuple[int, str, str]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    done = subprocess.run(
        [*(_isolate() if isolate else []), sys.executable, *argv],
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def refused(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run ``argv``; it must exit 2 with one line on stderr, which is returned."""
    before = sorted(p.name for p in cwd.iterdir())
    code, out, err = run(argv, cwd, env, isolate=True)
    assert (code, out) == (2, ""), f"exit {code}, stderr: {err}"
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert sorted(p.name for p in cwd.iterdir()) == before, "it wrote files before refusing"
    return err.removeprefix("error: ").rstrip("\n")


def cluster_file(
    path: Path, *, node_host: str = "127.0.0.1", introducer: str = "127.0.0.1", secret: str = ""
) -> Path:
    lines = ["[cluster]", f'introducer = "{introducer}:8888"']
    if secret:
        lines.append(f'secret = "{secret}"')
    lines += ["", "[[nodes]]", 'name = "H1"', f'host = "{node_host}"', "port = 8001"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    d = tmp_path / "cwd"
    d.mkdir()
    (tmp_path / "blocker").write_text("a file, so that no directory can be made under it\n")
    return d


def node_argv(host: str, *extra: str) -> list[str]:
    # cwd's sibling "blocker" is a file: a node that did not refuse fails to make
    # its data directory, before it opens a socket.
    data_dir = "../blocker/data"
    return [
        str(REPO_ROOT / "main.py"),
        *("--hostname", host, "--port", "8001", "--data-dir", data_dir, "--no-console"),
        *extra,
    ]


# --- the node ---------------------------------------------------------------------------


def test_node_refuses_the_default_on_its_own_non_loopback_host(cwd: Path):
    assert refused(node_argv(REMOTE), cwd) == (
        f"{DEFAULT}, and {REMOTE} (--hostname) is not loopback; {HOW}"
    )


def test_node_refuses_the_default_when_a_configured_node_is_not_loopback(cwd: Path, tmp_path: Path):
    config = cluster_file(tmp_path / "c.toml", node_host=REMOTE)
    assert refused(node_argv("127.0.0.1", "--config", str(config)), cwd) == (
        f"{DEFAULT}, and {REMOTE} (nodes[0].host) is not loopback; {HOW}"
    )


def test_node_refuses_the_default_when_the_introducer_is_not_loopback(cwd: Path, tmp_path: Path):
    config = cluster_file(tmp_path / "c.toml", introducer=REMOTE)
    assert refused(node_argv("127.0.0.1", "--config", str(config)), cwd) == (
        f"{DEFAULT}, and {REMOTE} (cluster.introducer) is not loopback; {HOW}"
    )


def test_node_refuses_a_short_secret_beyond_loopback(cwd: Path, tmp_path: Path):
    config = cluster_file(tmp_path / "c.toml", node_host=REMOTE, secret="s3cret")
    assert refused(node_argv(REMOTE, "--config", str(config)), cwd) == (
        f"cluster.secret: the secret is 6 bytes, too short for {REMOTE} (--hostname), which is "
        f"not loopback: at least 16 are needed beyond loopback; {HOW}"
    )


def test_node_refuses_a_secret_file_others_can_read(cwd: Path, tmp_path: Path):
    secret = tmp_path / "cluster.secret"
    secret.write_text(GOOD + "\n")
    secret.chmod(0o644)
    config = tmp_path / "c.toml"
    config.write_text(
        '[cluster]\nsecret_file = "cluster.secret"\n\n'
        f'[[nodes]]\nname = "H1"\nhost = "{REMOTE}"\nport = 8001\n'
    )
    assert refused(node_argv(REMOTE, "--config", str(config)), cwd) == (
        f"cluster.secret_file: {secret} is accessible by group or others (mode 0644); "
        f"run chmod 600 {secret}"
    )


def test_node_refuses_a_short_secret_from_the_environment(cwd: Path):
    assert refused(node_argv(REMOTE), cwd, env={SECRET_ENV: "short"}).startswith(
        f"{SECRET_ENV}: the secret is 5 bytes, too short for {REMOTE} (--hostname)"
    )


# --- the introducer -----------------------------------------------------------------------


def test_introducer_refuses_the_default_on_a_non_loopback_host(cwd: Path):
    argv = ["-m", "introducer", "--hostname", REMOTE]
    assert refused(argv, cwd) == f"{DEFAULT}, and {REMOTE} (--hostname) is not loopback; {HOW}"


def test_introducer_refuses_the_default_for_a_non_loopback_cluster(cwd: Path, tmp_path: Path):
    # Without --hostname it would bind the cluster file's introducer address.
    config = cluster_file(tmp_path / "c.toml", introducer=REMOTE, node_host=REMOTE)
    assert refused(["-m", "introducer", "--config", str(config)], cwd) == (
        f"{DEFAULT}, and {REMOTE} (cluster.introducer) is not loopback; {HOW}"
    )
    # Bound to loopback, it would still ask the configured members for the view.
    config = cluster_file(tmp_path / "c2.toml", node_host=REMOTE)
    argv = ["-m", "introducer", "--hostname", "127.0.0.1", "--config", str(config)]
    assert refused(argv, cwd) == (f"{DEFAULT}, and {REMOTE} (nodes[0].host) is not loopback; {HOW}")


# --- the console ----------------------------------------------------------------------------


def test_console_refuses_the_default_for_a_non_loopback_node(cwd: Path):
    argv = ["-m", "console", "--node", f"{REMOTE}:8001", "--timeout", "1", "list_mem"]
    assert refused(argv, cwd) == f"{DEFAULT}, and {REMOTE} (--node) is not loopback; {HOW}"


def test_console_refuses_the_default_for_a_non_loopback_cluster_file(cwd: Path, tmp_path: Path):
    config = cluster_file(tmp_path / "c.toml", node_host=REMOTE)
    argv = ["-m", "console", "--node", "127.0.0.1:1", "--config", str(config), "list_mem"]
    assert refused(argv, cwd) == f"{DEFAULT}, and {REMOTE} (nodes[0].host) is not loopback; {HOW}"


def test_console_help_needs_no_secret(cwd: Path):
    code, out, err = run(["-m", "console", "--node", f"{REMOTE}:8001", "help"], cwd)
    assert (code, err) == (0, "") and "list_mem" in out


# --- loopback keeps working with the default ------------------------------------------------


def test_a_loopback_cluster_runs_on_the_builtin_default_secret(tmp_path: Path):
    """A cluster file with no secret at all: introducer, node and console all accept it."""
    config = tmp_path / "cluster.toml"
    nodes, introducer = write_cluster_file(config, 1, cluster={"transfer": "tcp"})
    text = config.read_text()
    config.write_text("\n".join(ln for ln in text.splitlines() if not ln.startswith("secret =")))
    assert "secret" not in config.read_text()
    intro = start_introducer(config, introducer.port, tmp_path / "introducer.log")
    try:
        node = start_node(nodes[0], config, tmp_path / "data", tmp_path / "H1.log")
        try:
            wait_for(
                lambda: console(nodes[0], config, "list_mem")["leader"] == "H1",
                timeout=30,
                what="H1 to join",
            )
            # localhost is loopback too, so the console accepts it as --node.
            mem = console(f"localhost:{nodes[0].port}", config, "list_self")
            assert mem["name"] == "H1"
        finally:
            stop(node)
    finally:
        stop(intro)


def test_a_secret_file_cluster_and_a_console_with_the_secret_in_the_environment(
    tmp_path: Path,
):
    """Nodes read ``secret_file``; a console with no cluster file gets it from IDUNNO_SECRET."""
    run(["-m", "config.secret", "new", str(tmp_path / "cluster.secret")], tmp_path)
    secret = (tmp_path / "cluster.secret").read_text().strip()
    config = tmp_path / "cluster.toml"
    nodes, introducer = write_cluster_file(config, 1, cluster={"transfer": "tcp"})
    lines = config.read_text().splitlines()
    config.write_text(
        "\n".join(
            'secret_file = "cluster.secret"' if ln.startswith("secret =") else ln for ln in lines
        )
    )
    intro = start_introducer(config, introducer.port, tmp_path / "introducer.log")
    try:
        node = start_node(nodes[0], config, tmp_path / "data", tmp_path / "H1.log")
        try:
            argv = ["-m", "console", "--node", nodes[0].addr, "--json", "list_self"]
            code, out, err = run(argv, tmp_path, env={SECRET_ENV: secret})
            assert (code, err) == (0, ""), err
            assert '"name": "H1"' in out
            # Without it, the console uses the public default and the node drops it.
            code, out, err = run([*argv[:4], "--timeout", "3", *argv[4:]], tmp_path)
            assert code == 3, err
        finally:
            stop(node)
    finally:
        stop(intro)
