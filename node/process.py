"""Start-up helpers shared by the node and introducer processes."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s"
DATEFMT = "%H:%M:%S"


def setup_logging(level: str, log_file: Path | None, console_level: str | None = None) -> None:
    """Log to stderr at ``console_level`` (default ``level``) and, if given, to a file."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    fmt = logging.Formatter(FORMAT, DATEFMT)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(console_level or level)
    stderr.setFormatter(fmt)
    root.addHandler(stderr)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setLevel(level)
        fh.setFormatter(fmt)
        root.addHandler(fh)


def first_os_error(exc: BaseException) -> OSError | None:
    """The OSError inside ``exc`` (trio wraps task errors in exception groups)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_os_error(inner)
            if found is not None:
                return found
    return None
