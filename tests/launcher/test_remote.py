"""The script the launcher runs on each host: its pid-file rules, without starting anything.

A pid file counts only when its process is alive and has exactly the command line
that started it: a pid reused by another program is never taken for a node, nor
signalled.  (Starting and stopping real processes is tested on the testbed:
tests/integration/test_launcher.py.)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from launcher import remote


def test_expand_only_touches_this_users_home() -> None:
    home = os.path.expanduser("~")
    assert remote.expand("~") == home
    assert remote.expand("~/.idunno/x") == os.path.join(home, ".idunno/x")
    assert remote.expand("/abs/~/x") == "/abs/~/x"
    assert remote.expand("~bob/x") == "~bob/x"


def test_read_pid(tmp_path: Path) -> None:
    f = tmp_path / "H1.pid"
    assert remote.read_pid(str(f)) is None
    f.write_text("1234\n")
    assert remote.read_pid(str(f)) == 1234
    for junk in ("", "12ab", "-5", "0"):
        f.write_text(junk)
        assert remote.read_pid(str(f)) is None


def test_cmdline_of_this_process_and_of_none() -> None:
    assert remote.cmdline(os.getpid()) == sys.orig_argv
    assert remote.cmdline(2**22 + 12345) is None  # above any pid_max


def test_a_pid_file_counts_only_for_the_exact_command_line(tmp_path: Path) -> None:
    pid_file = tmp_path / "H1.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    mine = {"name": "H1", "argv": list(sys.orig_argv), "pid_file": str(pid_file)}
    assert remote.running(mine) == os.getpid()
    reused = {**mine, "argv": ["/usr/bin/python3", "main.py", "--port", "7000"]}
    assert remote.running(reused) is None


def test_stop_never_signals_a_process_that_is_not_the_one_started(tmp_path: Path) -> None:
    # The pid file names this very test process, under another command line: stop must
    # leave it alone (this test would not finish otherwise) and drop the stale file.
    pid_file = tmp_path / "H1.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    proc = {"name": "H1", "argv": ["python", "main.py"], "pid_file": str(pid_file)}
    got = remote.stop({"procs": [proc], "grace": 1})
    assert got == {"procs": {"H1": {"state": "not running", "pid": os.getpid()}}}
    assert not pid_file.exists()


def test_status_of_a_process_never_started(tmp_path: Path) -> None:
    proc = {
        "name": "H2",
        "argv": ["python", "main.py"],
        "pid_file": str(tmp_path / "pids" / "H2.pid"),
        "log": str(tmp_path / "logs" / "H2.log"),
    }
    got = remote.status({"procs": [proc], "tail": 5})
    assert got == {
        "procs": {"H2": {"state": "stopped", "pid": None, "log": proc["log"], "log_tail": []}}
    }


def test_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "H1.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert remote.tail(str(log), 3) == ["line 997", "line 998", "line 999"]
    assert remote.tail(str(log), 0) == []
    assert remote.tail(str(tmp_path / "none.log"), 3) == []


def test_prepare_makes_private_directories(tmp_path: Path) -> None:
    run = tmp_path / "run"
    got = remote.prepare({"dirs": [str(run), str(run / "logs")]})
    assert got["home"] == os.path.expanduser("~")
    assert (run / "logs").is_dir() and (run.stat().st_mode & 0o777) == 0o700


def test_main_answers_one_json_line_even_for_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert remote.main(["-", "not json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {"error"} and "\n" not in answer["error"]
    assert remote.main(["-", json.dumps({"action": "format-disk"})]) == 1
    assert "format-disk" in json.loads(capsys.readouterr().out)["error"]
