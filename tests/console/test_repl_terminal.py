"""The interactive console driven for real, through a pseudo-terminal.

One test runs ``python main.py`` (a real node) as a person would; the others run the
console over a scripted ``execute`` (tests/console/fake_console.py) to reach the
cases a live node cannot stage on cue: a slow command to interrupt, a handler bug.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.conftest import REPO, cluster_toml, free_port
from tests.console.ptyproc import PtyProcess

pytestmark = pytest.mark.timeout(20)

CLIENT = [sys.executable, "-m", "console", "--json"]
FAKE = str(Path(__file__).with_name("fake_console.py"))


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[PtyProcess]:
    p = PtyProcess([sys.executable, FAKE, str(tmp_path / "hist" / "console_history")], cwd=REPO)
    try:
        p.expect(r"T1>", timeout=8)
        yield p
    finally:
        p.close()


def test_a_node_console_session(tmp_path: Path) -> None:
    port, introducer = free_port(), free_port()
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_toml(port, introducer))
    data_dir = tmp_path / "data"
    argv = [sys.executable, "main.py", "--hostname", "127.0.0.1", "--port", str(port)]
    p = PtyProcess([*argv, "--config", str(config), "--data-dir", str(data_dir)], cwd=REPO)
    try:
        p.expect(r"H1 console; 'help' lists the commands", timeout=8)
        p.expect(r"H1>")
        p.sendline("list_self")
        p.expect(rf"H1  127\.0\.0\.1:{port}  incarnation 0  not a member \(use 'join'\)\n")
        p.expect(r"H1>")
        p.sendline("bogus")
        p.expect(r"\nerror: unknown command 'bogus'; type 'help' for the list\n")
        p.expect(r"H1>")
        p.sendline("leave")
        p.expect(r"\nerror: H1 is not a member; use 'join'\n")
        p.expect(r"H1>")

        # The node keeps serving while the prompt waits for keys.
        client = subprocess.run(
            [*CLIENT, "--node", f"127.0.0.1:{port}", "--config", str(config), "list_self"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=8,
        )
        assert client.returncode == 0, client.stderr
        assert '"name": "H1"' in client.stdout

        p.sendline("exit")
        assert p.wait(timeout=8) == 0
        assert "Traceback" not in p.text
        assert (data_dir / "console_history").read_text().count("+") == 4
    finally:
        p.close()


@pytest.mark.integration
def test_a_member_sees_the_cluster_and_can_leave_and_join(tmp_path: Path) -> None:
    port, introducer = free_port(), free_port()
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_toml(port, introducer))
    intro = subprocess.Popen(
        [sys.executable, "-m", "introducer", "--config", str(config), "--log-level", "WARNING"],
        cwd=REPO,
    )
    argv = [sys.executable, "main.py", "--hostname", "127.0.0.1", "--port", str(port)]
    p = PtyProcess([*argv, "--config", str(config), "--data-dir", str(tmp_path)], cwd=REPO)
    try:
        p.expect(r"H1>", timeout=8)
        deadline = time.monotonic() + 8
        while True:  # the node retries until the introducer is up
            p.sendline("list_self")
            line = p.expect(r"\nH1  127\.0\.0\.1:\d+  incarnation \d+  (member|not a member)")
            p.expect(r"H1>")
            if line.group(1) == "member":
                break
            assert time.monotonic() < deadline, "H1 never joined"
            time.sleep(0.2)
        p.sendline("list_mem")
        p.expect(rf"\n\*>\s+H1\s+127\.0\.0\.1:{port}\s+alive\s+0")
        p.expect(r"\n1 live member  \(\* leader, > this node\)\nself: H1  leader: H1\n")
        p.expect(r"H1>")
        p.sendline("leave")
        p.expect(r"\nok\n")
        p.expect(r"H1>")
        p.sendline("join")
        p.expect(r"\nok\n")
        p.expect(r"H1>")
        p.sendline("list_self")
        p.expect(r"\nH1  127\.0\.0\.1:\d+  incarnation 1  member\n")
        p.expect(r"H1>")
        p.send("\x04")  # Ctrl-D: the node leaves and stops
        assert p.wait(timeout=8) == 0
        assert "Traceback" not in p.text
    finally:
        p.close()
        intro.terminate()
        intro.wait(timeout=5)


def test_ctrl_c_at_the_prompt_clears_the_line(fake: PtyProcess) -> None:
    fake.send("leave")
    fake.expect(r"leave")
    fake.send("\x03")  # Ctrl-C: drop the line, prompt again
    fake.expect(r"T1>")
    fake.sendline("list_self")
    fake.expect(r"\nT1  127\.0\.0\.1:1  incarnation 7\n")
    assert "refused" not in fake.text


def test_ctrl_c_interrupts_a_running_command_not_the_node(fake: PtyProcess) -> None:
    fake.sendline("join")  # takes 30 s
    fake.expect(r"T1> join\n")
    time.sleep(0.3)  # let it start; the terminal is in cooked mode now
    fake.send("\x03")
    fake.expect(r"error: join interrupted\n", timeout=3)
    fake.expect(r"T1>")
    fake.sendline("list_self")
    fake.expect(r"\nT1  127\.0\.0\.1:1  incarnation 7\n")


def test_a_handler_bug_is_one_line_and_the_console_goes_on(fake: PtyProcess) -> None:
    fake.sendline("list_mem")
    fake.expect(r"\nerror: list_mem failed: RuntimeError: a bug in a handler\n")
    fake.expect(r"T1>")
    fake.sendline("quit")
    fake.expect(r"console closed")
    assert fake.wait() == 0


def test_ctrl_d_ends_the_console_and_the_loop_ran_meanwhile(fake: PtyProcess) -> None:
    time.sleep(0.8)
    fake.send("\x04")
    fake.expect(r"console closed; ticks>10: True; terminal cooked: True")
    assert fake.wait() == 0


def test_sigterm_ends_the_console_and_restores_the_terminal(fake: PtyProcess) -> None:
    fake.send("half-typed")
    fake.expect(r"half-typed")
    fake.signal(signal.SIGINT)  # not from the keyboard: ignored, the node stays
    fake.expect(r"interrupt ignored")
    time.sleep(0.8)  # the fake's trio loop counts 50 ms ticks meanwhile
    fake.signal(signal.SIGTERM)
    fake.expect(r"console closed; ticks>10: True; terminal cooked: True")
    assert fake.wait() == 0
