"""``python -m console``: one command against a real node on 127.0.0.1, and its exit codes.

The node runs in this process (NodeApp on a free port); its introducer's port is
unused, so it stays outside the cluster but answers every command.  The client runs
in a worker thread (its own trio.run) or, for the end-to-end checks, as a process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from console.__main__ import main
from tests.console.conftest import REPO, NodeFixture, cluster_toml, free_port

pytestmark = pytest.mark.timeout(20)


async def run_client(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await trio.to_thread.run_sync(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


async def test_list_self(node: NodeFixture, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await run_client(node.argv("list_self"), capsys)
    assert (code, err) == (0, "")
    assert out == f"H1  127.0.0.1:{node.port}  incarnation 0  not a member (use 'join')\n"


async def test_json_output_has_the_contract_keys(
    node: NodeFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run_client(node.argv("list_self", json=True), capsys)
    assert code == 0 and out.count("\n") == 1
    data = json.loads(out)
    assert {"name", "host", "port", "incarnation"} <= set(data)
    assert (data["name"], data["host"], data["port"]) == ("H1", "127.0.0.1", node.port)

    code, out, _ = await run_client(node.argv("list_mem", json=True), capsys)
    assert code == 0
    assert json.loads(out) == {"self": "H1", "leader": None, "members": []}


async def test_command_refused_by_the_node_exits_1(
    node: NodeFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run_client(node.argv("leave"), capsys)
    assert (code, out) == (1, "")
    assert err == "error: H1 is not a member; use 'join'\n"

    code, out, err = await run_client(node.argv("bps"), capsys)
    assert (code, out) == (1, "")
    assert err.startswith("error: bps is only available in test mode") and err.count("\n") == 1

    # join fails at once: nothing listens on the introducer's port.
    code, out, err = await run_client(node.argv("join"), capsys)
    assert (code, out) == (1, "")
    assert err.startswith("error: cannot join: introducer 127.0.0.1:")


async def test_test_mode_commands(
    test_mode_node: NodeFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run_client(test_mode_node.argv("bps", json=True), capsys)
    assert code == 0
    assert {"bytes_sent_per_s", "bytes_received_per_s"} <= set(json.loads(out))
    code, out, _ = await run_client(test_mode_node.argv("fpr"), capsys)
    assert code == 0
    assert out.splitlines()[0].startswith("false_positive_rate:")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bogus"], "error: unknown command 'bogus'; type 'help' for the list\n"),
        (["list_self", "extra"], "error: usage: list_self\n"),
        (["list_mem", "--json"], "error: usage: list_mem (--json must come before list_mem)\n"),
        (["exit"], "error: exit only means something in the interactive console\n"),
        (["help", "bogus"], "error: unknown command 'bogus'; type 'help' for the list\n"),
    ],
)
async def test_usage_errors_exit_2_without_contacting_the_node(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The port is closed: a usage error must be found before any connection.
    code, out, err = await run_client(["--node", f"127.0.0.1:{free_port()}", *argv], capsys)
    assert (code, out, err) == (2, "", message)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["--node", "nohost"], "error: --node: expected HOST:PORT, got 'nohost'\n"),
        (["--node", "127.0.0.1:99999"], "error: --node: port 99999 is outside 1..65535\n"),
        ([], "error: --node HOST:PORT is required to run a command on a node\n"),
        (
            ["--node", "127.0.0.1:1", "--timeout", "0"],
            "error: --timeout: must be positive, got 0\n",
        ),
        (["--node", "127.0.0.1:1", "--config", "/nonexistent.toml"], None),
    ],
)
async def test_bad_options_exit_2(
    opts: list[str], message: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run_client([*opts, "list_self"], capsys)
    assert (code, out) == (2, "")
    if message is None:
        assert err.startswith("error: /nonexistent.toml: cannot read cluster file")
    else:
        assert err == message


async def test_help_is_answered_locally(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await run_client(["help"], capsys)
    assert (code, err) == (0, "")
    assert "list_mem" in out and "exit" in out
    code, out, _ = await run_client(["--json", "help", "list_mem"], capsys)
    assert code == 0 and json.loads(out)["help"].startswith("list_mem\n")


async def test_unreachable_node_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, out, err = await run_client(["--node", f"127.0.0.1:{port}", "list_self"], capsys)
    assert (code, out) == (3, "")
    assert err.startswith(f"error: cannot reach 127.0.0.1:{port}") and err.count("\n") == 1


async def test_wrong_secret_exits_3(
    node: NodeFixture, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(cluster_toml(node.port, free_port(), secret="not-the-secret"))
    argv = ["--node", node.address, "--config", str(other), "--timeout", "3", "list_self"]
    code, out, err = await run_client(argv, capsys)
    assert (code, out) == (3, "")
    assert err.startswith("error: ") and err.count("\n") == 1


async def test_a_silent_node_times_out_with_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    # Accepts connections but never answers.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:

        async def hold(stream: trio.SocketStream) -> None:
            await trio.sleep_forever()

        nursery.start_soon(trio.serve_listeners, hold, listeners)
        argv = ["--node", f"127.0.0.1:{port}", "--timeout", "0.3", "list_self"]
        code, out, err = await run_client(argv, capsys)
        nursery.cancel_scope.cancel()
    assert (code, out) == (3, "")
    assert err == f"error: 127.0.0.1:{port} did not answer within 0.3 s\n"


async def test_end_to_end_as_a_process(node: NodeFixture) -> None:
    """The installed entry point as scripts use it: a fresh interpreter, real exit codes."""
    ok = await trio.run_process(
        node.subprocess_argv("list_mem"), cwd=REPO, capture_stdout=True, capture_stderr=True
    )
    assert ok.returncode == 0 and ok.stderr == b""
    assert ok.stdout.decode().splitlines()[-1] == "self: H1  leader: -"

    refused = await trio.run_process(
        node.subprocess_argv("leave"),
        cwd=REPO,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert refused.returncode == 1
    assert refused.stderr.decode() == "error: H1 is not a member; use 'join'\n"

    # Arguments that look like options pass through to the command after COMMAND.
    usage = await trio.run_process(
        node.subprocess_argv("list_self", "-x"),
        cwd=REPO,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert (usage.returncode, usage.stderr) == (2, b"error: usage: list_self\n")


def test_starts_fast_without_heavy_imports() -> None:
    """Scripts call the client in loops: no prompt_toolkit, torch or paramiko on the path."""
    code = (
        "import sys, console.__main__ as m; m.main(['help']); "
        "heavy = [n for n in ('prompt_toolkit', 'torch', 'paramiko', 'msgpack', 'trio') "
        "if n in sys.modules]; print('HEAVY', heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "HEAVY []"
