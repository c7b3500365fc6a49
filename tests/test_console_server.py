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


def test_only_a_refusal_naming_the_majority_is_definite() -> None:
    from tests.helpers.history import FAIL, INFO
    from tests.helpers.recorded import outcome_of

    def err(text: str, rc: int | None = 1) -> ConsoleError:
        return ConsoleError(f"console put a b on h:1: exit status {rc}: error: {text}", rc)

    assert outcome_of(err("no majority: H1 reaches 2 of 5 configured nodes")) == FAIL
    assert outcome_of(err("put a: only 2 live nodes; a put needs 3 (the write quorum)")) == INFO
    unknown = "commit reached 2 of 3 replicas (outcome unknown: ...) no majority"
    assert outcome_of(err(unknown)) == INFO
    assert outcome_of(err("no majority", rc=None)) == INFO  # a timeout says nothing
