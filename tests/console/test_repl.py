"""The interactive console's line handling and completion, without a terminal."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import trio
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from trio.testing import wait_all_tasks_blocked

from console.repl import CommandCompleter, InteractiveConsole
from node.commands import CommandError, Parsed, Where, parse

pytestmark = pytest.mark.timeout(10)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, parsed: Parsed, progress: Any = None) -> dict[str, Any]:
        command = parsed.command.name
        self.calls.append((command, [str(v) for v in parsed.values]))
        if command == "leave":
            raise CommandError("H1 is not a member; use 'join'")
        if command == "list_mem":
            raise ZeroDivisionError("division by zero")
        if command == "join":
            await trio.sleep_forever()
        return {"name": "H1", "host": "127.0.0.1", "port": 8001, "incarnation": 0}


def make_console(tmp_path: Path) -> tuple[InteractiveConsole, Recorder, io.StringIO]:
    execute = Recorder()
    console = InteractiveConsole(execute, "H1", tmp_path / "history")
    out = io.StringIO()
    console._out = out
    return console, execute, out


async def test_commands_run_on_the_node_and_are_rendered(tmp_path: Path) -> None:
    console, execute, out = make_console(tmp_path)
    assert await console.handle_line("  list_self  ") is True
    assert execute.calls == [("list_self", [])]
    assert out.getvalue() == "H1  127.0.0.1:8001  incarnation 0\n"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("bogus", "error: unknown command 'bogus'; type 'help' for the list"),
        ("list_self now", "error: usage: list_self"),
        ("help bogus", "error: unknown command 'bogus'; type 'help' for the list"),
        ('list_self "unclosed', "error: cannot parse the line: No closing quotation"),
        ("exit now", "error: usage: exit"),
        ("leave", "error: H1 is not a member; use 'join'"),
    ],
)
async def test_mistakes_are_one_line_errors(tmp_path: Path, line: str, error: str) -> None:
    console, _, out = make_console(tmp_path)
    assert await console.handle_line(line) is True
    assert out.getvalue() == error + "\n"


async def test_a_handler_bug_is_one_line_on_the_console_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    console, _, out = make_console(tmp_path)
    assert await console.handle_line("list_mem") is True
    assert out.getvalue() == "error: list_mem failed: ZeroDivisionError: division by zero\n"
    assert "console command 'list_mem' failed" in caplog.text
    assert "Traceback" in caplog.text  # the traceback goes to the log, not the console


async def test_help_and_blank_lines_stay_local(tmp_path: Path) -> None:
    console, execute, out = make_console(tmp_path)
    assert await console.handle_line("") is True
    assert await console.handle_line("help") is True
    assert await console.handle_line("help list_mem") is True
    assert execute.calls == []
    text = out.getvalue()
    assert "list_self" in text and "exit" in text and "quit" in text
    assert "list_mem\n  list the live members" in text


@pytest.mark.parametrize("line", ["exit", "quit", " quit "])
async def test_exit_and_quit_end_the_console(tmp_path: Path, line: str) -> None:
    console, execute, out = make_console(tmp_path)
    assert await console.handle_line(line) is False
    assert execute.calls == [] and out.getvalue() == ""


def test_exit_and_quit_are_console_commands() -> None:
    assert parse("exit", []).where is Where.SHELL and parse("quit", []).where is Where.SHELL


async def test_a_cancelled_command_reports_the_interrupt(tmp_path: Path) -> None:
    console, _, out = make_console(tmp_path)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(console.handle_line, "join")
        await wait_all_tasks_blocked()
        assert console._command_scope is not None
        console._command_scope.cancel()  # what SIGINT does while a command runs
    assert out.getvalue() == "error: join interrupted\n"
    assert console._command_scope is None


def completions(text: str) -> list[str]:
    doc = Document(text, len(text))
    return [c.text for c in CommandCompleter().get_completions(doc, CompleteEvent())]


def test_completion_of_command_names() -> None:
    assert completions("list_") == ["list_mem", "list_self"]
    assert completions("") == sorted(completions(""))
    assert {"join", "leave", "help", "exit", "quit"} <= set(completions(""))
    assert completions("he") == ["help"]
    assert completions("zz") == []


def test_completion_of_arguments() -> None:
    assert completions("help li") == ["list_mem", "list_self"]
    assert "join" in completions("help ")
    assert completions("list_self ") == []  # it takes no arguments
    assert completions("help list_mem ") == []  # only one
    assert completions("bogus ") == []


def test_local_path_arguments_complete_to_paths(tmp_path: Path) -> None:
    # No command takes a LOCAL argument yet (put/get will); build one to check.
    from node.commands import COMMANDS, Arg, Command

    COMMANDS["put_test"] = Command("put_test", "x", (Arg("LOCAL", "a file"),))
    try:
        (tmp_path / "photo.jpg").write_text("x")
        got = completions(f"put_test {tmp_path}/ph")
        assert got == ["oto.jpg"]
    finally:
        del COMMANDS["put_test"]
