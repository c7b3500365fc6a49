"""Tombstones expire: the grace period, and nodes that come back after it.

A delete leaves a DELETED record (a tombstone) on every node and an entry in the
leader, so that a copy the delete missed (on a node that was down) is recognised as
deleted when it shows up again, rather than brought back.  Kept forever, they grow
with every name ever deleted; so, like Cassandra's ``gc_grace_seconds`` (and its
default, 10 days), a tombstone is purged once it is older than the grace period
(``cluster.tombstone_grace``): by each node from its disk (its age is the age of
its ``.meta`` file), at open and every GC interval after; by the leader once its
entry has not changed for the grace period plus an hour (sdfs.metadata.purge: the
leader learned of or sent every tombstone no earlier than the node wrote it, so
no node still holds a tombstone the leader forgot, and a later put of the name can
restart at version 1 without meeting one).

The danger is the node that was away longer than that, holding a copy of a file
deleted meanwhile: every tombstone that would have marked its copy as stale may be
gone.  Cassandra's answer is an operator's rule (never bring such a node back
without wiping it).  Here the node knows: its store keeps a stamp (the mtime of
``<store>/alive``), refreshed every GC interval while the node runs.  A store that
opens with a stamp older than the grace period is **outdated**: the node says so in
every inventory page, and the leader folds from it only copies it already knows of
(same name, version and put), i.e. copies some up-to-date node vouches for; every
other copy it tells the node to drop (``DropReplica``: no tombstone, which could
shadow a later put of the name).  Nothing it holds can then resurrect a deleted
file, or bring an old version back over a name that was deleted and written anew.
Its own tombstones are all past the grace period and purged at open.

When every node that answers a rebuild is outdated, the whole cluster was down
longer than the grace period; nobody purged a tombstone since they all stopped, so
their holdings are folded as they are (a node that was away longer still before
that outage is the one case this cannot tell: documented, as in Cassandra).

A node stops being outdated one GC interval after it has served a whole inventory
(its last page), by which time the leader has sent it its drops; only then is its
stamp refreshed, so a crash before that leaves it outdated at its next start.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

STAMP = "alive"


def stamp_age(root: Path, now: float | None = None) -> float | None:
    """Seconds since the store at ``root`` was last stamped; None if never."""
    try:
        at = (root / STAMP).stat().st_mtime
    except OSError:
        return None
    return (time.time() if now is None else now) - at


def stamp(root: Path) -> None:
    """Mark the store at ``root`` as in the cluster now (best effort: a failed stamp
    only makes the node look outdated after a restart, which is safe)."""
    path = root / STAMP
    with contextlib.suppress(OSError):
        path.touch()
        os.utime(path)


def is_outdated(root: Path, grace: float, now: float | None = None) -> bool:
    """Whether the store at ``root`` was last in the cluster more than ``grace`` ago.
    A store never stamped (new, or from before stamps) is not."""
    age = stamp_age(root, now)
    return age is not None and age > grace
