"""The checker's resident console (tests/helpers/console_server.py): one process runs
console commands one after another, with the one-shot console's exit statuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.localcluster import ConsoleError
from tests.helpers.console_server import ConsoleProcess


def test_commands_run_in_one_process_with_the_console_s_exit_statuses(tmp_path: Path) -> None:
    config = tmp_path / "cluster.toml"
    config.write_text('[[nodes]]\nname = "H1"\nhost = "127.0.0.1"\nport = 1\n')
    proc = ConsoleProcess([], "127.0.0.1:1", config, tmp_path / "console.log")
    try:
        assert "put" in proc.call("help")["help"]
        first = proc.proc
        with pytest.raises(ConsoleError) as usage:
            proc.call("put")  # missing arguments: a usage error
        assert usage.value.returncode == 2 and "put" in str(usage.value)
        with pytest.raises(ConsoleError) as unreachable:
            proc.call("list_mem", timeout=2)  # nobody listens on port 1
        assert unreachable.value.returncode == 3
        assert proc.proc is first and first is not None and first.poll() is None
    finally:
        proc.close()
    assert proc.proc is None
