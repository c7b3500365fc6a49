"""What the SDFS roles accept from a peer: names, version numbers, sizes, records.

Every SDFS request, and every record a node sends (Ingest, ReplicateOrder, PutDone,
an Inventory the leader folds in), is checked here before it reaches the store or
the metadata: a bad one is refused as :class:`~net.errors.Invalid` (one line), so a
tombstone at 2**64 - 1 can never make the next grant overflow and a name like
``../x`` never becomes a file the leader lists and orders copied.
"""

from __future__ import annotations

from net.errors import Invalid
from net.limits import MAX_SIZE, MAX_VERSION, check_range
from net.messages import VersionRecord, VersionState
from sdfs.names import check_name

_STATES = frozenset(int(s) for s in VersionState)


def check_version(version: int, what: str = "version") -> int:
    return check_range(version, 1, MAX_VERSION, what)


def check_size(size: int, what: str = "size") -> int:
    return check_range(size, 0, MAX_SIZE, what)


def check_record(record: VersionRecord) -> VersionRecord:
    """``record`` if its name, version, size and state are usable; Invalid otherwise."""
    check_name(record.name)
    where = f"{record.name} v{record.version}"
    check_version(record.version, f"{record.name}: version")
    check_size(record.size, f"{where}: size")
    if record.state not in _STATES:
        raise Invalid(f"{where}: unknown state {record.state}")
    return record


def usable_records(
    records: tuple[VersionRecord, ...] | list[VersionRecord],
) -> tuple[list[VersionRecord], list[str]]:
    """(the records that pass :func:`check_record`, why each other one was refused)."""
    good: list[VersionRecord] = []
    refused: list[str] = []
    for r in records:
        try:
            good.append(check_record(r))
        except Invalid as e:
            refused.append(str(e))
    return good, refused
