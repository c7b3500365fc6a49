"""The interactive console a node opens on its own terminal.

Theory of operation
-------------------
The node's trio loop must keep serving membership while a person types, and
prompt_toolkit's reader is blocking (it runs an asyncio loop of its own).  So the
console is a trio task that reads one line at a time through a worker thread
(``trio.to_thread.run_sync(session.prompt, abandon_on_cancel=True)``) and runs the
command back on the trio side, where ``execute`` lives.  Only one of the two is
active at any moment:

* at the prompt, the terminal is in raw mode and owned by the prompt thread; Ctrl-C
  and Ctrl-D arrive as keys (Ctrl-C clears the line, Ctrl-D on an empty line ends
  the console);
* while a command runs, the terminal is back in cooked mode, so Ctrl-C arrives as
  SIGINT; the console holds a trio signal receiver and answers it by cancelling
  the command, not the node.  SIGTERM (or SIGHUP, the terminal closing) ends the
  console at any time, after which the caller (main.py) leaves the cluster and stops.

If the console task is cancelled while the prompt thread waits for a key, the
prompt application is told to exit from its own loop, so the terminal is restored
before the process goes on.  Output from other threads and from logging goes
through prompt_toolkit's ``patch_stdout`` proxy and appears above the prompt;
command results are written straight to the terminal, in order, between prompts.

Mistakes (unknown commands, wrong arguments, a refused command) print one line,
``error: ...``; only a bug in a command's handler is logged with its traceback.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import trio
from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from console.render import render, show_progress
from node.commands import COMMANDS, CommandError, Parsed, help_text, parse, parse_line

log = logging.getLogger("console")

# execute(parsed, progress=callback): runs a command parsed by node.commands; the
# callback gets (done, total, label) while a long command (a copy) runs.
Execute = Callable[..., Awaitable[dict[str, Any]]]

EXIT_COMMANDS = ("exit", "quit")
# SIGINT cancels a running command; the others (a kill, a closed terminal window)
# end the console, so that the node can still leave the cluster politely.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))
# How long a cancelled console waits for the prompt thread to restore the terminal.
PROMPT_EXIT_GRACE = 2.0


class _Eof:
    """The prompt ended: Ctrl-D on an empty line, or the console was told to stop."""


class _Interrupted:
    """Ctrl-C at the prompt: drop the line and prompt again."""


ReadResult = str | type[_Eof] | type[_Interrupted]


class CommandCompleter(Completer):
    """Completes command names, and each argument by what the command table says it is.

    ``COMMAND`` arguments complete to command names; arguments named ``LOCAL...``
    (local files and directories) complete to paths.
    """

    def __init__(self, commands: Iterable[str] | None = None) -> None:
        self.commands = sorted(commands if commands is not None else COMMANDS)
        self.paths = PathCompleter(expanduser=True)

    def _names(self, prefix: str) -> Iterator[Completion]:
        for name in self.commands:
            if name.startswith(prefix):
                cmd = COMMANDS.get(name)
                yield Completion(
                    name, start_position=-len(prefix), display_meta=cmd.summary if cmd else ""
                )

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        words = text.split()
        if text[-1:].isspace() or not words:
            words.append("")
        current = words[-1]
        if len(words) == 1:
            yield from self._names(current)
            return
        cmd = COMMANDS.get(words[0])
        index = len(words) - 2
        if cmd is None or index >= len(cmd.args):
            return
        arg = cmd.args[index]
        if arg.name == "COMMAND":
            yield from self._names(current)
        elif arg.name.startswith("LOCAL"):
            sub = Document(current, len(current))
            yield from self.paths.get_completions(sub, complete_event)


@contextlib.contextmanager
def _logging_to(stream: TextIO, replaced: tuple[Any, ...]) -> Iterator[None]:
    """Point the root logger's terminal handlers at ``stream`` for a while.

    Handlers made before ``patch_stdout`` hold the real stderr, which would write
    through the prompt; the proxy draws log lines above it instead.
    """
    moved: list[tuple[logging.StreamHandler[Any], Any]] = []
    for handler in logging.getLogger().handlers:
        if (
            isinstance(handler, logging.StreamHandler)
            and not isinstance(handler, logging.FileHandler)
            and handler.stream in replaced
        ):
            moved.append((handler, handler.setStream(stream)))
    try:
        yield
    finally:
        for handler, old in moved:
            handler.setStream(old)


class InteractiveConsole:
    def __init__(self, execute: Execute, name: str, history_path: Path) -> None:
        self.execute = execute
        self.name = name
        self.history_path = history_path
        self.session: PromptSession[str] | None = None
        # Set once the console is ending; the prompt thread checks it before it
        # draws a prompt, so a late prompt cannot grab the terminal.
        self._closing = threading.Event()
        self._command_scope: trio.CancelScope | None = None
        self._out: TextIO = sys.stdout

    # --- output ---------------------------------------------------------------------

    def say(self, text: str, *, above_prompt: bool = False) -> None:
        """Write a result or message to the terminal.

        Results go straight to the terminal, between prompts, so they keep their
        order; ``above_prompt`` goes through the patch_stdout proxy instead, for
        what may arrive while a prompt is drawn.
        """
        out = sys.stdout if above_prompt else self._out
        try:
            out.write(text + "\n")
            out.flush()
        except (OSError, ValueError):  # the terminal went away
            pass

    def error(self, message: str) -> None:
        self.say(f"error: {message}")

    def _progress(self, done: int, total: int, label: str) -> None:
        show_progress(self._out, done, total, label)

    # --- the prompt thread -------------------------------------------------------------

    def _history(self) -> History:
        try:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            self.history_path.touch(exist_ok=True)
        except OSError as e:
            log.warning("console history not kept: %s: %s", self.history_path, e.strerror)
            return InMemoryHistory()
        return FileHistory(str(self.history_path))

    def _pre_run(self) -> None:
        # Runs in the prompt thread's loop once the prompt application is live.
        if self._closing.is_set() and self.session is not None:
            self.session.app.exit(exception=EOFError)

    def _prompt_blocking(self, done: threading.Event) -> ReadResult:
        try:
            if self._closing.is_set() or self.session is None:
                return _Eof
            return self.session.prompt(pre_run=self._pre_run, handle_sigint=False)
        except KeyboardInterrupt:
            return _Interrupted
        except EOFError:
            return _Eof
        except Exception:
            # A broken terminal must not take the node down without a polite leave.
            log.exception("the console's prompt failed; closing the console")
            return _Eof
        finally:
            done.set()

    def _stop_prompt(self) -> None:
        """Make a running prompt return (from any thread)."""
        self._closing.set()
        if self.session is None:
            return
        app = self.session.app
        loop = app.loop

        def exit_if_running() -> None:
            if app.future is not None and not app.future.done():
                app.exit(exception=EOFError)

        if loop is not None:
            with contextlib.suppress(RuntimeError):  # its loop just closed
                loop.call_soon_threadsafe(exit_if_running)

    async def read_line(self) -> ReadResult:
        done = threading.Event()
        try:
            return await trio.to_thread.run_sync(
                self._prompt_blocking, done, abandon_on_cancel=True
            )
        except trio.Cancelled:
            self._stop_prompt()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(done.wait, PROMPT_EXIT_GRACE)
            raise

    # --- commands ------------------------------------------------------------------------

    async def run_command(self, parsed: Parsed, args: list[str]) -> None:
        command = parsed.command.name.split()[0]  # C4, not "C4 status": renderers by name
        with trio.CancelScope() as scope:
            self._command_scope = scope
            try:
                data = await self.execute(parsed, progress=self._progress)
            except CommandError as e:
                self.error(str(e))
                return
            except Exception as e:
                log.exception("console command %r failed", " ".join([command, *args]))
                self.error(f"{command} failed: {type(e).__name__}: {e}")
                return
            finally:
                self._command_scope = None
            self.say(render(command, data))
        if scope.cancelled_caught:
            self.error(f"{command} interrupted")

    async def handle_line(self, line: str) -> bool:
        """Run one line; False once the console should end."""
        try:
            parsed = parse_line(line)
            if parsed is None:
                return True
            command, args = parsed
            parsed_command = parse(command, args)
            if command in EXIT_COMMANDS:
                return False
            if command == "help":
                self.say(render("help", {"help": help_text(*parsed_command.values)}))
                return True
        except CommandError as e:
            self.error(str(e))
            return True
        await self.run_command(parsed_command, args)
        return True

    # --- signals -------------------------------------------------------------------------

    async def _watch_signals(self, signals: AsyncIterator[int], stop: trio.CancelScope) -> None:
        async for signum in signals:
            if signum == signal.SIGINT and self._command_scope is not None:
                self._command_scope.cancel()
            elif signum == signal.SIGINT:
                # At the prompt the terminal sends Ctrl-C as a key, so this came
                # from elsewhere; a stray interrupt must not stop the node.
                self.say(
                    "(interrupt ignored: type 'exit', or send SIGTERM, to stop the node)",
                    above_prompt=True,
                )
            else:
                log.warning("%s: closing the console", signal.Signals(signum).name)
                stop.cancel()

    # --- the whole session ---------------------------------------------------------------

    async def run(self) -> None:
        real_out, real_err = sys.stdout, sys.stderr
        self._out = real_out
        self.session = PromptSession(
            f"{self.name}> ",
            history=self._history(),
            completer=CommandCompleter(),
            complete_while_typing=False,
            auto_suggest=AutoSuggestFromHistory(),
        )
        with (
            patch_stdout(raw=True),
            _logging_to(sys.stdout, (real_out, real_err)),
            trio.open_signal_receiver(*_SIGNALS) as signals,
        ):
            self.say(f"{self.name} console; 'help' lists the commands, 'exit' leaves")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, signals, nursery.cancel_scope)
                try:
                    while True:
                        line = await self.read_line()
                        if line is _Eof:
                            break
                        if line is _Interrupted or not isinstance(line, str):
                            continue
                        if not await self.handle_line(line):
                            break
                finally:
                    self._closing.set()
                nursery.cancel_scope.cancel()


async def run_interactive(execute: Execute, name: str, history_path: Path) -> None:
    """Run the console on this process's terminal until exit, quit, Ctrl-D or SIGTERM."""
    await InteractiveConsole(execute, name, history_path).run()
