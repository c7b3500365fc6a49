"""The queue of membership news waiting to be piggybacked.

Each update is sent a limited number of times (``limit``, O(log N)) to random
members, fewest-sent first, so fresh news goes out before news that has already
spread.  While it waits, it also rides on pings and acks (``count=False``): those
go to the same few ring neighbours every round, so counting them would spend the
budget on members that already know and leave too few random transmissions for
the epidemic to reach everyone.  A newer
update about a member replaces the queued one: there is never a reason to keep
telling people a member is suspect once it has refuted.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import msgpack

from net.messages import Update
from net.wire import to_plain


def encoded_size(update: Update) -> int:
    """Bytes this update adds to a message's update array."""
    return len(msgpack.packb(to_plain(update), use_bin_type=True))


@dataclass(order=True)
class _Item:
    transmits: int
    order: int  # newer first among equals: -(insertion counter)
    update: Update = field(compare=False)
    size: int = field(compare=False)


class BroadcastQueue:
    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def push(self, update: Update) -> None:
        self._items[update.name] = _Item(0, -next(self._counter), update, encoded_size(update))

    def has_fresh(self) -> bool:
        """True if some update has not been sent at all yet."""
        return any(item.transmits == 0 for item in self._items.values())

    def fresh(self) -> frozenset[str]:
        """Members whose queued update has not been sent at all yet."""
        return frozenset(name for name, item in self._items.items() if item.transmits == 0)

    def take(
        self,
        budget: int,
        limit: int,
        prefer: str | None = None,
        count: bool = True,
        only: frozenset[str] | None = None,
    ) -> tuple[Update, ...]:
        """Updates that fit in ``budget`` bytes; with ``count``, each counts as sent once more.

        News about ``prefer`` (the destination) goes first, so a suspect hears of
        its suspicion on the next ping it receives.  ``only`` restricts the choice
        to the updates about those members.
        """
        if not self._items:
            return ()
        ordered = sorted(self._items.values())
        if prefer is not None and prefer in self._items:
            first = self._items[prefer]
            ordered.remove(first)
            ordered.insert(0, first)
        chosen: list[Update] = []
        used = 0
        for item in ordered:
            if only is not None and item.update.name not in only:
                continue
            if used + item.size > budget:
                continue
            used += item.size
            chosen.append(item.update)
            if not count:
                continue
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.update.name]
        return tuple(chosen)

    def clear(self) -> None:
        self._items.clear()
