"""Big console replies in pieces: a list too long for one frame goes ahead of the reply.

``ls-all`` over 100,000 names, or ``store`` on a node holding them, is a list of
megabytes (names are up to 200 bytes: 20 MB at 10^5, over the 16 MiB frame limit).
The node sends such a list's items in :class:`~net.messages.ConsoleItems` frames of
at most ITEMS_PER_FRAME items before the :class:`~net.messages.ConsoleReply`, whose
own list keeps the last piece; the console puts the pieces back in order, so what it
prints is exactly the reply the command made (/work/shared/INTERFACE.md).
"""

from __future__ import annotations

from typing import Any

from net.messages import ConsoleItems

# Items per frame: 2,048 names of at most 200 bytes stay under half a MiB.
ITEMS_PER_FRAME = 2048


def split(
    data: dict[str, Any], per_frame: int = ITEMS_PER_FRAME
) -> tuple[list[ConsoleItems], dict[str, Any]]:
    """(the pieces to send first, the reply's data with only the last piece of each
    long list)."""
    pieces: list[ConsoleItems] = []
    rest = dict(data)
    for key, value in data.items():
        if isinstance(value, list) and len(value) > per_frame:
            cut = len(value) - (len(value) - 1) % per_frame - 1  # the last piece: 1..per_frame
            pieces += [
                ConsoleItems(key, tuple(value[i : i + per_frame])) for i in range(0, cut, per_frame)
            ]
            rest[key] = value[cut:]
    return pieces, rest


def merge(pieces: list[ConsoleItems], data: dict[str, Any]) -> dict[str, Any]:
    """The reply's data with the pieces that came before it put back in front."""
    if not pieces:
        return data
    out = dict(data)
    gathered: dict[str, list[Any]] = {}
    for piece in pieces:
        gathered.setdefault(piece.key, []).extend(piece.items)
    for key, items in gathered.items():
        tail = out.get(key, [])
        out[key] = items + (tail if isinstance(tail, list) else [])
    return out
