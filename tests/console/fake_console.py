"""The interactive console over a scripted ``execute``, for the pseudo-terminal tests.

``python tests/console/fake_console.py HISTORY_FILE``: ``join`` takes 30 s (to be
interrupted), ``list_self`` answers, ``leave`` is refused.  When the console ends it
prints whether the terminal is back in cooked mode, so a test can see that the
prompt thread restored it.
"""

from __future__ import annotations

import sys
import termios
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from console.repl import run_interactive
from node.commands import CommandError, Parsed


async def execute(parsed: Parsed, progress: Any = None) -> dict[str, Any]:
    command = parsed.command.name
    if command == "join":
        await trio.sleep(30)
        return {"ok": True}
    if command == "list_self":
        return {"name": "T1", "host": "127.0.0.1", "port": 1, "incarnation": 7}
    if command == "list_mem":
        raise RuntimeError("a bug in a handler")
    raise CommandError(f"{command} refused")


async def amain(history: Path) -> None:
    async with trio.open_nursery() as nursery:
        ticks = 0

        async def tick() -> None:
            # Proof that the trio loop runs while the prompt waits for keys.
            nonlocal ticks
            while True:
                await trio.sleep(0.05)
                ticks += 1

        nursery.start_soon(tick)
        await run_interactive(execute, "T1", history)
        nursery.cancel_scope.cancel()
    lflag = termios.tcgetattr(0)[3]
    cooked = bool(lflag & termios.ICANON) and bool(lflag & termios.ECHO)
    print(f"console closed; ticks>10: {ticks > 10}; terminal cooked: {cooked}")


if __name__ == "__main__":
    trio.run(amain, Path(sys.argv[1]))
