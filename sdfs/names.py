"""SDFS file names: what is allowed, and how a name maps to the disk.

SDFS names look like relative POSIX paths (``images/cat.jpg``,
``models/resnet50.pth``).  They never reach the filesystem as given: every name
is quoted into one directory name, so no name can point outside the store, and
the rules below make the error message say what is wrong rather than how we
escaped it.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from net.errors import Invalid

MAX_NAME_BYTES = 200  # quoted, plus a version suffix, stays under NAME_MAX (255)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What quote(name, safe="") leaves as it is; every other byte becomes %XX.
_UNQUOTED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"


class BadName(Invalid, ValueError):
    """An SDFS name that cannot be used; the message is one line for a person."""


def check_name(name: str) -> str:
    """``name`` if it is a valid SDFS name; BadName otherwise."""
    if not name:
        raise BadName("an SDFS name must not be empty")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. undecodable bytes from sys.argv
        raise BadName(f"SDFS name {name!r} is not valid UTF-8 text") from None
    # (Checked once per record of every inventory: a rebuild of 10^5 files checks
    # 4 x 10^5 names, so these are C-speed scans rather than loops over characters.)
    if _CONTROL.search(name):
        raise BadName(f"SDFS name {name!r} contains a NUL or control character")
    if name.startswith("/"):
        raise BadName(f"SDFS name {name!r} is absolute; use a relative name like images/a.jpg")
    if "\\" in name:
        raise BadName(f"SDFS name {name!r} contains a backslash; use / between parts")
    parts = name.split("/")
    if any(p in ("..", ".") for p in parts):
        raise BadName(f"SDFS name {name!r} contains a '.' or '..' part")
    if any(p == "" for p in parts):
        raise BadName(f"SDFS name {name!r} has an empty part (a leading, trailing or double /)")
    # len(quote(name, safe="")): one byte for each unquoted byte, three for the rest.
    if len(encoded) + 2 * len(encoded.translate(None, _UNQUOTED)) > MAX_NAME_BYTES:
        raise BadName(f"SDFS name {name[:40]!r}... is too long (limit {MAX_NAME_BYTES} bytes)")
    return name


def disk_name(name: str) -> str:
    """The one directory name that holds ``name``'s versions."""
    return quote(name, safe="")


def from_disk_name(entry: str) -> str:
    return unquote(entry)
