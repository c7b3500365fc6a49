"""The leader's side of inventories: asking a node for its pages, and folding them.

A node's inventory comes in pages (sdfs.pages); each is asked for with its own
RPC_TIMEOUT, so a node holding 10^5 versions answers in tens of small frames, and
the rebuild waits for as long as its pages keep coming.  What a page holds is
checked (sdfs.checks) before it is folded.  A node that was away longer than the
tombstone grace period (``outdated``, sdfs.tombstones) only confirms copies that
the leader already knows of; the rest it must drop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from membership.peers import ClusterView
from net.messages import Inventory, InventoryRequest, VersionRecord
from net.rpc import RPC_TIMEOUT, RpcError
from sdfs.checks import usable_records
from sdfs.metadata import Metadata


def usable(
    node: str, records: tuple[VersionRecord, ...] | list[VersionRecord], log: logging.Logger
) -> list[VersionRecord]:
    """The records of ``node``'s inventory that may be folded in (sdfs.checks);
    a bad one (a name like ../x, a version beyond 2**53) is left out and logged."""
    good, refused = usable_records(records)
    if refused:
        log.warning(
            "left %d record%s of %s's inventory out: %s",
            len(refused),
            "" if len(refused) == 1 else "s",
            node,
            refused[0],
        )
    return good


async def inventory_pages(
    view: ClusterView, node: str, after: str, log: logging.Logger
) -> AsyncIterator[tuple[list[VersionRecord], bool]]:
    """``node``'s inventory from ``after`` on, page by page: (its usable records,
    whether the node is outdated).  RpcError if a page gets no answer within
    RPC_TIMEOUT (each page has its own), or a reply that is not a page after the
    last one."""
    while True:
        reply = await view.call(node, InventoryRequest(after), RPC_TIMEOUT)
        if not isinstance(reply, Inventory):
            raise RpcError(f"{node} answered the inventory with {type(reply).__name__}")
        yield usable(node, reply.records, log), reply.outdated
        if not reply.next_after:
            return
        if reply.next_after <= after:
            raise RpcError(f"{node}'s inventory pages went backwards")
        after = reply.next_after


def fold_outdated(
    metadata: Metadata,
    node: str,
    records: list[VersionRecord],
    everyone: bool,
    now: float,
    log: logging.Logger,
) -> tuple[list[tuple[str, int]], list[VersionRecord]]:
    """Fold what an outdated node holds (sdfs.tombstones): only copies the leader
    already knows of (or, if ``everyone`` is outdated, all of it).  Returns the
    tombstones it missed, and the copies it must drop: a name only it knows may be
    a delete it missed whose tombstones have since been purged, and a version the
    others do not know may come from before such a delete."""
    if everyone:
        return metadata.add_inventory(node, records, now), []
    keep = [r for r in records if metadata.known(r)]
    drop = [r for r in records if not metadata.known(r)]
    stale = metadata.add_inventory(node, keep, now)
    if drop:
        log.warning(
            "%s was away longer than the tombstone grace period: dropping %d of its "
            "copies nobody else vouches for (first: %s v%d)",
            node,
            len(drop),
            drop[0].name,
            drop[0].version,
        )
    return stale, drop
