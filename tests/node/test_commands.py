"""The command table (node.commands): parsing once, ranges, where commands run, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from net.errors import NotFound
from node import commands
from node.commands import COMMANDS, CommandError, Context, Where, parse


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["bogus"], "unknown command 'bogus'; type 'help' for the list"),
        (["list_self", "extra"], "usage: list_self"),
        (["put", "only-one"], "usage: put LOCAL SDFSNAME"),
        (
            ["C4"],
            "usage: C4 submit-job MODEL [GLOB|COUNT] | status JOB_ID | get-output JOB_ID LOCAL",
        ),
        (["C4", "cancel", "x"], "unknown C4 action 'cancel': submit-job, status, get-output"),
        (["C4", "status"], "usage: C4 status JOB_ID"),
    ],
)
def test_words_that_do_not_fit_are_usage_errors(words: list[str], message: str) -> None:
    with pytest.raises(CommandError) as err:
        parse(words[0], words[1:])
    assert str(err.value) == message and err.value.usage


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["C3", "resnet50", "99999999999999999999"], "BATCH must be a whole number from 1 to 4096"),
        (["C3", "resnet50", "0"], "BATCH must be a whole number from 1 to 4096, got '0'"),
        (["C3", "resnet50", "²"], "BATCH must be a whole number from 1 to 4096, got '²'"),
        (["C3", "resnet50", "-3"], "BATCH must be a whole number"),
        (["get-versions", "a", "many", "out"], "N must be a whole number from 1 to 1000"),
        (["get-versions", "a", "٣", "out"], "N must be a whole number"),  # Arabic-Indic 3
        (["C4", "submit-job", "resnet50", "0"], "GLOB|COUNT must be a whole number from 1"),
        (["C4", "submit-job", "resnet50", "³"], "GLOB|COUNT must be a whole number"),
        (["put", "a\0b", "x"], "LOCAL local path contains a NUL character"),
        (["ls", "../escape"], "'..'"),
        (["get", "/abs", "out"], "absolute"),
    ],
)
def test_values_out_of_range_are_one_line_errors(words: list[str], message: str) -> None:
    with pytest.raises(CommandError) as err:
        parse(words[0], words[1:])
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not err.value.usage


def test_arguments_are_typed_once() -> None:
    assert parse("C3", ["resnet50", "16"]).values == ("resnet50", 16)
    assert parse("get-versions", ["a/b", "3", "~/out"]).values == (
        "a/b",
        3,
        Path("~/out").expanduser(),
    )
    submit = parse("C4", ["submit-job", "resnet50", "25"])
    assert submit.command.name == "C4 submit-job" and submit.values == ("resnet50", 25)
    assert parse("C4", ["submit-job", "resnet50", "images/*.jpg"]).values[1] == "images/*.jpg"


def test_where_each_command_runs() -> None:
    local = {"put", "put-dir", "get", "get-versions", "plot"}
    for name, cmd in COMMANDS.items():
        if name in local:
            assert cmd.where is Where.CONSOLE, name
            assert any(a.local_path for a in cmd.args), name
        elif cmd.where is Where.CONSOLE:
            raise AssertionError(f"{name} runs at the console but names no LOCAL path")
    actions = COMMANDS["C4"].actions
    assert actions["get-output"].where is Where.CONSOLE
    assert actions["submit-job"].where is actions["status"].where is Where.LEADER
    assert COMMANDS["C4"].local_path_args(["get-output", "job-1", "out"]) == {2}
    assert COMMANDS["C4"].local_path_args(["status", "job-1"]) == set()
    assert COMMANDS["get"].local_path_args(["a", "b"]) == {1}


class FakeSdfs:
    async def ls(self, name: str) -> Any:
        raise NotFound(f"no such SDFS file: {name}")


async def test_a_typed_error_from_a_handler_becomes_one_console_line() -> None:
    async def inference(command: str, args: list[str]) -> dict[str, Any]:
        raise AssertionError("not called")

    ctx = Context(FakeSdfs(), None, inference)  # type: ignore[arg-type]
    with pytest.raises(CommandError, match=r"^no such SDFS file: a/b$") as err:
        await commands.run(parse("ls", ["a/b"]), ctx)
    assert not err.value.usage


def test_help_lists_every_command_and_explains_actions() -> None:
    text = commands.help_text()
    for name in COMMANDS:
        assert f"  {name}" in text
    c4 = commands.help_text("C4")
    assert "C4 get-output JOB_ID LOCAL: write a finished job's results" in c4
    assert "LOCAL: the local file for the results" in c4
    with pytest.raises(CommandError, match="unknown command 'nope'"):
        commands.help_text("nope")
