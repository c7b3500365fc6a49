"""A long-lived console client: ``python -m console`` runs, without a process each.

``python -m tests.helpers.console_server`` reads one JSON array per line on stdin (a
console command line, as ``python -m console`` takes it), runs it through the console's
own ``main`` in this process, and writes one JSON object per line on stdout: ``rc``
(the exit status it would have had), ``stdout`` and ``stderr``.  The checker's clients
run one per host, inside the host's namespace, because a one-shot console costs a
Python start-up and its imports per command, which on two busy cores is most of an
operation's time.  :class:`ConsoleProcess` is the caller's side.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.localcluster import REPO_ROOT, ConsoleError, _child_env


def serve() -> None:
    from console.__main__ import main

    for line in sys.stdin:
        argv = json.loads(line)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main([str(a) for a in argv])
            except SystemExit as e:  # argparse's usage errors
                rc = e.code if isinstance(e.code, int) else 2
            except Exception as e:  # a console bug: report it as the console would die
                print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
                rc = 1
        reply = {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}
        sys.__stdout__.write(json.dumps(reply) + "\n")  # type: ignore[union-attr]
        sys.__stdout__.flush()  # type: ignore[union-attr]


class ConsoleProcess:
    """One :func:`serve` process behind ``prefix`` (e.g. ``ip netns exec NS``).

    :meth:`call` behaves as :func:`scripts.localcluster.console`: the parsed JSON, or
    :class:`ConsoleError` with the console's last stderr line; on a timeout the
    process is killed (a command may be stuck in it) and the next call starts another.
    """

    def __init__(self, prefix: Sequence[str], node: str, config: Path, log: Path) -> None:
        self.prefix, self.node, self.config, self.log = list(prefix), node, config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self.proc is None or self.proc.poll() is not None:
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [*self.prefix, sys.executable, "-m", "tests.helpers.console_server"],
                    cwd=REPO_ROOT,
                    env=_child_env(),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    start_new_session=True,
                )
        return self.proc

    def call(self, *args: str, timeout: float = 20.0) -> Any:
        what = f"console {' '.join(args)} on {self.node}"
        proc = self._start()
        argv = ["--node", self.node, "--config", str(self.config), "--json"]
        argv += ["--timeout", f"{timeout:g}", *args]
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write((json.dumps(argv) + "\n").encode())
            proc.stdin.flush()
            line = self._readline(proc, timeout + 5.0)
        except (OSError, EOFError, TimeoutError) as e:
            self.close()
            raise ConsoleError(f"{what}: no answer ({e or 'timed out'})") from None
        reply = json.loads(line)
        if reply["rc"] != 0:
            reason = reply["stderr"].strip().splitlines()[-1:] or ["(nothing on stderr)"]
            raise ConsoleError(
                f"{what}: exit status {reply['rc']}: {reason[0]}", reply["rc"], reply["stderr"]
            )
        try:
            return json.loads(reply["stdout"])
        except ValueError:
            raise ConsoleError(f"{what}: not JSON: {reply['stdout'][:200]!r}") from None

    @staticmethod
    def _readline(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buf = b""
        while not buf.endswith(b"\n"):
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError(f"nothing within {timeout:.0f} s")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise EOFError("the console process exited")
            buf += chunk
        return buf

    def close(self) -> None:
        """Stop the process (killed: it may be inside a command) and close its pipes."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


if __name__ == "__main__":
    serve()
