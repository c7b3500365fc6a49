"""Paged listings: a name-keyed table that also keeps its names sorted, and pages of it.

Every listing that may hold every file (a node's inventory, ``ls-all``, ``store``)
travels in pages, so no reply nears the frame limit (``net.rpc.MAX_FRAME``, 16 MiB)
however many files there are; a 100,000-name store answers in tens of pages.

A page is taken in name order after a cursor: the last name of the page before
(``""`` to start; names are never empty).  Taking the next page from the name
after the cursor, rather than from a position, means a page can never skip or
repeat a name that exists across the whole scan, even when names come and go
between pages: a name added behind the cursor is one the scan missed, exactly as if
it had been added after a one-shot listing was taken.  (HDFS lists a directory the
same way: ``getListing(src, startAfter)`` with ``dfs.ls.limit`` entries a call.)

:class:`NameIndex` is a dict, so the code that fills it stays as it is, with the
sorted name list kept beside it: adding or removing a name costs a binary search
and a list insert (a memmove, microseconds at 10^5 names), and a page costs a
binary search plus its own length, rather than a sort of every name per page.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

V = TypeVar("V")

# Records in one inventory page (and names in one listing page).  A record is at most
# a 200-byte name, a 64-character digest, a 32-character put id and three numbers:
# 4,096 of them stay under about 1.5 MiB encoded, a tenth of the frame limit.
PAGE_RECORDS = 4096
PAGE_NAMES = 8192  # names of at most 200 bytes: at most about 1.6 MiB
# Names a glob page scans at most before answering (maybe with no name in it), so a
# glob that matches little over many names never holds the leader's loop for long.
SCAN_LIMIT = 50_000


class NameIndex(dict[str, V]):
    """A dict keyed by name that also keeps its keys in a sorted list."""

    def __init__(self) -> None:
        super().__init__()
        self._sorted: list[str] = []

    def __setitem__(self, key: str, value: V) -> None:
        if key not in self:
            bisect.insort(self._sorted, key)
        super().__setitem__(key, value)

    def setdefault(self, key: str, default: Any = None) -> V:
        if key not in self:
            self[key] = default
        return self[key]

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        del self._sorted[bisect.bisect_left(self._sorted, key)]

    _MISSING: Any = object()

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default is NameIndex._MISSING:
            raise KeyError(key)
        return default

    def clear(self) -> None:
        super().clear()
        self._sorted.clear()

    def popitem(self) -> tuple[str, V]:
        raise NotImplementedError("NameIndex keeps no order to pop from")

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Add many at once: one sort, not an insert each (a store opening 10^5 names)."""
        super().update(*args, **kwargs)
        self._sorted = sorted(self.keys())

    def names_after(self, after: str, prefix: str = "") -> Iterator[str]:
        """Names after ``after`` (and from ``prefix`` on), in order, while they start
        with ``prefix``.  Do not change the index while iterating."""
        start = bisect.bisect_right(self._sorted, after)
        if prefix:
            start = max(start, bisect.bisect_left(self._sorted, prefix))
        for i in range(start, len(self._sorted)):
            name = self._sorted[i]
            if not name.startswith(prefix):
                return
            yield name


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard: every match starts with it."""
    m = re.search(r"[*?\[]", pattern)
    return pattern if m is None else pattern[: m.start()]


def glob_page(
    index: NameIndex[V],
    pattern: str,
    after: str,
    limit: int,
    keep: Callable[[V], bool],
) -> tuple[list[str], str]:
    """Up to ``limit`` names after ``after`` that match ``pattern`` and whose value
    ``keep`` accepts; and the cursor for the next page ("" when there is none).

    At most SCAN_LIMIT names are looked at: a page can come back short, or empty,
    with a cursor to go on from."""
    match = re.compile(fnmatch.translate(pattern)).match
    prefix = literal_prefix(pattern)
    out: list[str] = []
    last = ""
    for scanned, name in enumerate(index.names_after(after, prefix)):
        if len(out) >= limit or scanned >= SCAN_LIMIT:
            return out, last
        last = name
        if match(name) and keep(index[name]):
            out.append(name)
    return out, ""


def take_page(
    names: Iterable[str], size: Callable[[str], int], limit: int
) -> tuple[list[str], str]:
    """Names from ``names`` whose ``size`` (records each) adds up to about ``limit``
    (a name is never split; the first is always taken); and the next cursor."""
    out: list[str] = []
    total = 0
    for name in names:
        if out and total >= limit:
            return out, out[-1]
        out.append(name)
        total += size(name)
    return out, ""
