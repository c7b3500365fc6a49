"""The SDFS leader's majority lease and grant journal: one writer, even when the network splits.

Theory of operation
-------------------
The SDFS leader is the first live member in ring order (``membership``), so when the
network splits each side has one.  Two leaders must never both hand out versions of
the same name, and a version acknowledged on one side must not be handed out again
by the other.  Two rules, as a Chubby master's lease and an HDFS NameNode's quorum
journal do it:

* **The lease.**  A leader may grant versions (puts and deletes) only while a
  majority of the configured nodes (the cluster file's ``[[nodes]]``, itself
  included) have promised, within the last lease period, that it leads.  A leader
  asks for the promise in a numbered *term*; a member promises one leader at a time
  and, while a promise to one leader is running, refuses every other (a new leader
  waits for the old promises to run out, at most ``LEASE`` seconds after the old
  leader last renewed them).  Promises last ``LEASE`` from when the member made
  them; the leader counts its lease from before it asked, and only
  ``LEASE_SAFETY`` of it, so it gives it up before any member could promise another
  (local monotonic clocks; only their rates need to agree, within that margin).  A
  member refuses a term lower than the one it promised, so terms only grow.  A node
  that has just started promises nobody for ``LEASE`` (it may have promised someone
  before it crashed).
* **The journal.**  Every version number the leader grants is first recorded, with
  its name, on a majority (the *floor* of the name: the highest version granted).
  The round that records it is the same round that renews the lease.  A new lease
  holder reads the floors of the majority that promised it before it grants anything,
  and never grants a number at or below a floor.  Any two majorities share a member,
  and a member records floors only for a leader whose lease it keeps up, so every
  number any earlier leader granted is seen by every later one: the versions of a
  name are unique and totally ordered, across any change of leader and any partition.

A leader whose side holds fewer than a majority of the configured nodes cannot renew:
its lease runs out and it refuses puts and deletes with a one-line "no majority"
error.  It keeps answering reads from what it knows (they may be stale on that side).
When it holds the lease again (the partition healed, or it is first in ring order of
the merged membership) it rebuilds its metadata before it grants (sdfs.leader).

What this module holds is pure: :class:`Follower` (every member's promise and its
floors) and :func:`majority`; the rounds themselves are sdfs.leader's.

Invariants
----------
1. A member's promise names one (leader, term); it changes to another leader only
   after ``until`` has passed, and never to a lower term or the same term of another.
2. Floors only grow, and are recorded only from the leader the member promised.
3. A leader treats its lease as valid only until ``asked + LEASE * LEASE_SAFETY``
   after a round that a majority accepted, where ``asked`` is when it sent the round.

Limits
------
Floors are kept in memory, one per name ever written (about the size of the leader's
own metadata); a member that restarts comes back without them.  If more than a
minority of the members restart at once and then a partition hides every holder of a
version's copies from the next leader, that leader may grant the number again (the
replicas still refuse a second put of one number that they already hold).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from net.errors import Invalid
from net.messages import Floor, FloorsPage, LeaseReply
from sdfs.names import check_name
from sdfs.pages import PAGE_NAMES, NameIndex

# How long a member's promise lasts, from when it makes it.
LEASE = 3.0
# The share of LEASE a leader counts on, from when it asked: the margin covers clock
# rates that differ (by up to 1 - LEASE_SAFETY) and the time a round spends in flight.
LEASE_SAFETY = 0.8
# How often the leader renews its lease (a grant renews it as well).
RENEW_INTERVAL = 0.5
# How long the leader waits for answers to one round.
ROUND_TIMEOUT = 1.0
# Floors per FloorsPage: a name is at most 200 bytes, so a page stays under 2 MiB.
FLOORS_PAGE = PAGE_NAMES


def majority(configured: int) -> int:
    """Members that make a majority of ``configured`` nodes."""
    return configured // 2 + 1


@dataclass
class Promise:
    leader: str | None
    term: int
    until: float


class Follower:
    """One member's side of the lease: whom it promised, and the floors it recorded."""

    def __init__(self, booted: float) -> None:
        # Just started: it may have promised someone before a crash; nobody for LEASE.
        self.promise = Promise(None, 0, booted + LEASE)
        self.floors: NameIndex[int] = NameIndex()

    def renew(self, leader: str, term: int, floors: Iterable[Floor], now: float) -> LeaseReply:
        """A lease round from ``leader`` in ``term``: promise and record, or refuse."""
        p = self.promise
        if term < 0 or not leader:
            raise Invalid(f"a lease needs a leader and a term >= 0, got {leader!r}, {term}")
        same = p.leader == leader
        if term < p.term or (term == p.term and not same) or (not same and now < p.until):
            return LeaseReply(False, p.term, p.leader or "")
        checked = [(check_name(f.name), f.version) for f in floors]
        for name, version in checked:
            if version < 1:
                raise Invalid(f"a floor of {name} must be a version >= 1, got {version}")
        self.promise = Promise(leader, term, now + LEASE)
        for name, version in checked:
            if version > self.floors.get(name, 0):
                self.floors[name] = version
        return LeaseReply(True, term, leader)

    def page(self, after: str) -> FloorsPage:
        names = []
        for name in self.floors.names_after(after):
            names.append(name)
            if len(names) >= FLOORS_PAGE:
                break
        floors = tuple(Floor(n, self.floors[n]) for n in names)
        more = len(names) >= FLOORS_PAGE
        return FloorsPage(floors, names[-1] if more else "")

    def promised(self, leader: str, now: float) -> bool:
        """Whether a promise to ``leader`` is running."""
        return self.promise.leader == leader and now < self.promise.until
