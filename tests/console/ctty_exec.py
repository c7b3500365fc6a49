"""Exec a command with its terminal (fd 0) as the controlling terminal.

Run by :class:`tests.console.ptyproc.PtyProcess` in a fresh session, so that Ctrl-C
typed while the terminal is in cooked mode becomes SIGINT, as at a real terminal.
Usage: ``python ctty_exec.py PROGRAM [ARG ...]``.
"""

import fcntl
import os
import sys
import termios

fcntl.ioctl(0, termios.TIOCSCTTY, 0)
os.execv(sys.argv[1], sys.argv[1:])
