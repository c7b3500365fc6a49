"""A process on a pseudo-terminal, driven like a person at a keyboard (stdlib only).

A small stand-in for pexpect: start a command with a pty as its stdin, stdout and
stderr, send keys, and wait for text to appear in what it drew (ANSI escapes and
carriage returns removed).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# CSI and OSC sequences, other two-character escapes, and bare control bytes.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, modes
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC: window title
    r"|\x1b[@-Z\\-_=>]"  # two-character escapes
    r"|[\x00-\x08\x0e-\x1f]"  # other control bytes (tab and newline stay)
)


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text).replace("\r", "")


class PtyProcess:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        rows: int = 40,
        cols: int = 120,
    ) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("TERM", "xterm-256color")
        # Our fake terminal does not answer cursor-position requests; say so, or
        # prompt_toolkit waits for the answer and then warns about it.
        full_env["PROMPT_TOOLKIT_NO_CPR"] = "1"
        # Make the pty the child's controlling terminal, so that Ctrl-C in cooked
        # mode is a real SIGINT (a new session has no controlling terminal).
        launcher = [sys.executable, str(Path(__file__).with_name("ctty_exec.py"))]
        self.proc = subprocess.Popen(
            [*launcher, *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=full_env,
            close_fds=True,
            start_new_session=True,
        )
        os.close(slave)
        self.fd = master
        self.raw = b""
        self._pos = 0  # where the next expect() starts looking, in the stripped text

    @property
    def text(self) -> str:
        return strip_ansi(self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not chunk:
            return False
        self.raw += chunk
        return True

    def expect(self, pattern: str, timeout: float = 5.0) -> re.Match[str]:
        """Wait for ``pattern`` (a regex) in output not yet matched; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.text, self._pos)
            if m:
                self._pos = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {pattern!r}; output so far:\n"
                    + self.text[-3000:]
                )
            if not self._read(min(left, 0.1)) and self.proc.poll() is not None:
                # Drain what is left, then give up if it still is not there.
                while self._read(0.05):
                    pass
                m = regex.search(self.text, self._pos)
                if m:
                    self._pos = m.end()
                    return m
                raise AssertionError(
                    f"process exited ({self.proc.returncode}) before {pattern!r}; output:\n"
                    + self.text[-3000:]
                )

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def sendline(self, line: str) -> None:
        self.send(line + "\r")

    def wait(self, timeout: float = 5.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        while self._read(0.01):
            pass
        return self.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        os.close(self.fd)
