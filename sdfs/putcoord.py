"""One SDFS put as a state machine: grant, copies, quorum reached or not, commit or abort.

Theory of operation
-------------------
A put is two-phase.  Under a grant from the leader (a version number, a ``put_id``
and the replicas to use) the writer sends the bytes to every replica, where they
land PENDING (``Ingest``); once at least W replicas hold them it commits them there
(``CommitVersion``) and only then reports success, so a put reported failed never
becomes visible anywhere, and an acknowledged one is on W nodes' disks before its
user hears of it.  W is the write quorum (:func:`sdfs.metadata.write_quorum`), or
every replica when the ring has fewer than W.

How the bytes reach the replicas (fan-out from the writer, or a chain through them
for a big file: sdfs.copies.push, sdfs.transfer.chain) is the shell's business: either
way ``sent`` hears, per replica, the SHA-256 of the bytes it holds or why it holds
none, so the rules below are the same for both.

This class decides; it does no I/O and reads no clock.  The shell (``sdfs.client``)
feeds it what happened and carries out the :class:`Step`\\ s it returns:

    granted(grant)           -> [Send(grant)]
    sent(digests, errors)    -> [Ingest(record, nodes)]           the bytes arrived somewhere
                              | [Abort(...), Regrant | Fail]      nowhere, or they changed
    ingested(stored, errors) -> [Commit(record, stored)]          W or more hold it
                              | [Abort(record, stored), Regrant | Fail]
    committed(nodes)         -> [Report(record, nodes), Succeed]  W or more committed
                              | [Abort(record, stored), Fail]

Invariants:

1. Commit is only ever sent to nodes that ingested this put's bytes, and only when
   at least W of them did.
2. Every attempt that does not succeed ends with an Abort naming every node that may
   hold a pending copy, and the grant itself (the leader gives the number back).
3. A replica that refuses because the version already belongs to another put
   (a put that raced a change of leader got the same number) makes the attempt end
   in Regrant, not Fail: the writer asks for a fresh number, at most
   ``max_attempts`` times in all.  Any other shortfall is a Fail with every reason.
4. The digest in the record is that of the bytes sent; copies that disagree (the
   local file changed while it was read) are never ingested.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from net.errors import ErrorKind
from net.messages import PutGrant, VersionRecord, VersionState

MAX_ATTEMPTS = 3
# Said of a put whose commit reached some replicas but too few: those keep the version
# (an abort cannot take back a commit it does not reach), so it is not known to have
# failed.  A history checker counts it as an operation of unknown outcome.
UNKNOWN = " (outcome unknown: the replicas that committed keep it, so it may appear)"


@dataclass(frozen=True)
class NodeError:
    """Why one replica did not take its copy: the failure's kind and a line for a person."""

    kind: ErrorKind
    text: str


# --- steps the shell carries out ------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send the bytes to every replica of ``grant`` (they land in incoming/)."""

    grant: PutGrant


@dataclass(frozen=True)
class Ingest:
    """Ask ``nodes`` to store what arrived as ``record`` (PENDING)."""

    record: VersionRecord
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Commit:
    record: VersionRecord
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Abort:
    """Drop the pending copies on ``nodes`` and give the version number back to the leader."""

    name: str
    version: int
    put_id: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class Regrant:
    """Ask the leader for a fresh grant and start again."""

    reason: str


@dataclass(frozen=True)
class Report:
    """Tell the leader the put is committed on ``holders``."""

    record: VersionRecord
    holders: tuple[str, ...]


@dataclass(frozen=True)
class Succeed:
    record: VersionRecord
    holders: tuple[str, ...]


@dataclass(frozen=True)
class Fail:
    reason: str
    kind: ErrorKind = ErrorKind.NO_QUORUM


Step = Send | Ingest | Commit | Abort | Regrant | Report | Succeed | Fail


class Phase(enum.Enum):
    WAITING_GRANT = "waiting for a grant"
    SENDING = "sending"
    INGESTING = "ingesting"
    COMMITTING = "committing"
    DONE = "done"
    FAILED = "failed"


@dataclass
class PutCoordinator:
    """Decides one put of ``size`` bytes of ``name``, across at most ``max_attempts`` grants."""

    name: str
    size: int
    write_quorum: int
    max_attempts: int = MAX_ATTEMPTS
    phase: Phase = Phase.WAITING_GRANT
    attempts: int = 0
    grant: PutGrant | None = None
    record: VersionRecord | None = None
    stored: tuple[str, ...] = ()
    # Every reason a replica gave in this attempt, by node.
    errors: dict[str, NodeError] = field(default_factory=dict)
    # When each phase began (``now`` as the shell passed it), for the log line.
    times: dict[str, float] = field(default_factory=dict)

    def quorum(self) -> int:
        assert self.grant is not None
        return min(self.write_quorum, len(self.grant.replicas))

    # --- events ----------------------------------------------------------------

    def granted(self, grant: PutGrant, now: float) -> list[Step]:
        self._expect(Phase.WAITING_GRANT)
        if grant.name != self.name:
            raise ValueError(f"a grant for {grant.name}, not {self.name}")
        self.attempts += 1
        self.grant, self.record, self.stored, self.errors = grant, None, (), {}
        self.times.setdefault("start", now)
        self.times["granted"] = now
        self.phase = Phase.SENDING
        return [Send(grant)]

    def sent(self, digests: Mapping[str, str], errors: Mapping[str, NodeError]) -> list[Step]:
        """The bytes' SHA-256 as each replica received them, and why the rest did not."""
        self._expect(Phase.SENDING)
        grant = self._grant()
        self.errors.update(errors)
        distinct = set(digests.values())
        if len(distinct) > 1:
            changed = NodeError(ErrorKind.FAILED, "the local file changed while it was sent")
            self.errors.update({n: changed for n in digests})
            return self._end(
                list(digests), "the local file changed while it was sent", ErrorKind.FAILED
            )
        if not distinct:
            return self._end([], "no replica received the bytes")
        self.record = VersionRecord(
            grant.name,
            grant.version,
            grant.put_id,
            self.size,
            distinct.pop(),
            int(VersionState.PENDING),
        )
        self.phase = Phase.INGESTING
        return [Ingest(self.record, tuple(sorted(digests)))]

    def ingested(self, stored: Sequence[str], errors: Mapping[str, NodeError]) -> list[Step]:
        self._expect(Phase.INGESTING)
        assert self.record is not None
        self.errors.update(errors)
        self.stored = tuple(sorted(stored))
        # Nodes that failed to ingest may still hold a pending copy (the reply was lost).
        maybe = sorted({*stored, *errors})
        if len(self.stored) < self.quorum():
            return self._end(maybe, f"fewer than {self.quorum()} replicas stored it")
        self.phase = Phase.COMMITTING
        return [Commit(self.record, self.stored)]

    def committed(self, nodes: Sequence[str], now: float) -> list[Step]:
        self._expect(Phase.COMMITTING)
        assert self.record is not None
        self.times["committed"] = now
        holders = tuple(sorted(set(nodes) & set(self.stored)))
        if len(holders) < self.quorum():
            return self._end(
                list(self.stored),
                f"commit reached {len(holders)} of {self.quorum()} replicas{UNKNOWN}",
            )
        self.phase = Phase.DONE
        record = VersionRecord(
            self.record.name,
            self.record.version,
            self.record.put_id,
            self.record.size,
            self.record.sha256,
            int(VersionState.COMMITTED),
        )
        return [Report(record, holders), Succeed(record, holders)]

    def refused(self, reason: str, kind: ErrorKind) -> list[Step]:
        """The leader did not grant the put (too few live nodes, a bad name, ...)."""
        self._expect(Phase.WAITING_GRANT)
        self.phase = Phase.FAILED
        return [Fail(f"put {self.name}: {reason}", kind)]

    # --- helpers ---------------------------------------------------------------

    def _grant(self) -> PutGrant:
        assert self.grant is not None
        return self.grant

    def _end(
        self, nodes: Sequence[str], why: str, kind: ErrorKind = ErrorKind.NO_QUORUM
    ) -> list[Step]:
        """This attempt failed: abort it, then try a fresh grant or give up."""
        grant = self._grant()
        abort = Abort(grant.name, grant.version, grant.put_id, tuple(sorted(set(nodes))))
        conflicts = [e for e in self.errors.values() if e.kind == ErrorKind.CONFLICT]
        if conflicts and self.attempts < self.max_attempts:
            self.phase = Phase.WAITING_GRANT
            return [abort, Regrant(conflicts[0].text)]
        self.phase = Phase.FAILED
        detail = "; ".join(f"{n}: {e.text}" for n, e in sorted(self.errors.items()))
        reason = f"put {self.name} failed: {why}" + (f" ({detail})" if detail else "")
        return [abort, Fail(reason, kind)]

    def _expect(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise RuntimeError(f"put {self.name}: event in phase {self.phase.value!r}")
