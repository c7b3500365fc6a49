"""Many puts at once (a put-dir batch) as a state machine: the per-file rules of
:mod:`sdfs.putcoord`, decided for a whole batch so that each replica gets one
request per step instead of one per file.

Theory of operation
-------------------
The leader grants every file of the batch at once (PutBeginBatch).  The writer reads
each file (small ones travel inline in the StoreBatch frame; large ones are streamed
to each replica's incoming directory first), then asks every replica, in one
StoreBatch, to store what it was sent as PENDING; once a file is PENDING on at least
W of its replicas it is committed there, in one CommitBatch per replica, and only a
file committed on W replicas is reported done (PutDoneBatch) and to the user.

This class decides; it does no I/O and reads no clock.  The shell
(:mod:`sdfs.putdir`) feeds it what happened::

    read(i, size, sha256) | unread(i, why)      the bytes of file i, or why not
    sent(i, digests, errors)                    a streamed file reached these replicas
    store_plan()          -> {node: [i...]}     what each replica is asked to store
    stored(node, [i...], [error | None...])     its answer (or one error for all)
    commit_plan()         -> {node: [i...]}     files with W copies, where they are
    committed(node, [i...], [error | None...])
    finish()              -> Outcome            done, aborts, retries, failures

Invariants (those of sdfs.putcoord, per file):

1. A file is committed only on replicas that stored this put's bytes, and only when
   at least W of its replicas did.
2. A file that does not end committed on W replicas ends with an Abort naming every
   replica that may hold a copy of it and its grant, and is never reported done.
3. A file that fails for a cluster reason (a replica died, a version raced a change
   of leader) is handed back for a retry with a fresh grant (the single put's own
   state machine, which regrants on CONFLICT); one that fails for a local reason
   (unreadable, changed while it was read) fails at once, with its reason.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from net.errors import error_kind
from net.messages import Grant, VersionRecord, VersionState
from sdfs.putcoord import UNKNOWN, Abort, NodeError


class FileState(enum.Enum):
    GRANTED = "granted"
    READ = "read"
    STORING = "storing"
    COMMITTING = "committing"
    DONE = "done"
    ENDED = "ended"  # aborted: retried or failed


@dataclass
class _File:
    grant: Grant
    state: FileState = FileState.GRANTED
    size: int = 0
    sha256: str = ""
    # Replicas the bytes reached (all of them for an inline file, until one refuses).
    targets: set[str] = field(default_factory=set)
    stored: set[str] = field(default_factory=set)
    committed: set[str] = field(default_factory=set)
    errors: dict[str, NodeError] = field(default_factory=dict)
    why: str = ""
    local: bool = False  # failed for a reason of the writer's own


@dataclass(frozen=True)
class Outcome:
    succeeded: list[tuple[int, VersionRecord, tuple[str, ...]]]  # (index, record, holders)
    aborts: list[Abort]
    retry: list[tuple[int, str]]  # (index, why this attempt failed)
    failed: list[tuple[int, str]]  # (index, why), not to be retried


class BatchCoordinator:
    def __init__(self, grants: Sequence[Grant], write_quorum: int) -> None:
        self.files = [_File(g) for g in grants]
        self.write_quorum = write_quorum

    def quorum(self, i: int) -> int:
        return min(self.write_quorum, len(self.files[i].grant.replicas))

    def record(self, i: int, state: VersionState = VersionState.PENDING) -> VersionRecord:
        f = self.files[i]
        g = f.grant
        return VersionRecord(g.name, g.version, g.put_id, f.size, f.sha256, int(state))

    # --- events -----------------------------------------------------------------

    def read(self, i: int, size: int, sha256: str) -> None:
        """File ``i`` was read whole (it goes inline to every replica)."""
        f = self._expect(i, FileState.GRANTED)
        f.size, f.sha256, f.state = size, sha256, FileState.READ
        f.targets = set(f.grant.replicas)

    def unread(self, i: int, why: str) -> None:
        """File ``i`` could not be read here: it fails, and its grant is given back."""
        f = self._expect(i, FileState.GRANTED)
        self._end(f, why, local=True)

    def sent(
        self, i: int, size: int, digests: Mapping[str, str], errors: Mapping[str, NodeError]
    ) -> None:
        """File ``i`` was streamed: the SHA-256 each replica got, and why the rest did not."""
        f = self._expect(i, FileState.GRANTED)
        f.errors.update(errors)
        distinct = set(digests.values())
        f.size = size
        if len(distinct) > 1:
            f.targets = set(digests)  # copies may be in incoming/: gc'd, never stored
            self._end(f, "the local file changed while it was sent", local=True)
        elif not distinct:
            self._end(f, "no replica received the bytes")
        else:
            f.sha256, f.state, f.targets = distinct.pop(), FileState.READ, set(digests)

    def store_plan(self) -> dict[str, list[int]]:
        plan: dict[str, list[int]] = {}
        for i, f in enumerate(self.files):
            if f.state is FileState.READ:
                f.state = FileState.STORING
                for node in sorted(f.targets):
                    plan.setdefault(node, []).append(i)
        return plan

    def stored(
        self, node: str, indices: Sequence[int], results: Sequence[NodeError | None] | NodeError
    ) -> None:
        """``node``'s answer to its StoreBatch: one per index, or one error for all."""
        for f, error in self._answers(indices, results, FileState.STORING):
            if error is None:
                f.stored.add(node)
            else:
                f.errors[node] = error

    def commit_plan(self) -> dict[str, list[int]]:
        """Files stored on W replicas are committed there; the others end."""
        plan: dict[str, list[int]] = {}
        for i, f in enumerate(self.files):
            if f.state is not FileState.STORING:
                continue
            if len(f.stored) < self.quorum(i):
                self._end(f, f"fewer than {self.quorum(i)} replicas stored it")
                continue
            f.state = FileState.COMMITTING
            for node in sorted(f.stored):
                plan.setdefault(node, []).append(i)
        return plan

    def committed(
        self, node: str, indices: Sequence[int], results: Sequence[NodeError | None] | NodeError
    ) -> None:
        """``node``'s answer to its CommitBatch: one per index, or one error for all."""
        for f, error in self._answers(indices, results, FileState.COMMITTING):
            if error is None:
                f.committed.add(node)
            else:
                f.errors[node] = error

    def _answers(
        self,
        indices: Sequence[int],
        results: Sequence[NodeError | None] | NodeError,
        state: FileState,
    ) -> list[tuple[_File, NodeError | None]]:
        """Each file of ``indices`` (each must be in ``state``) with its answer."""
        return [
            (self._expect(i, state), results if isinstance(results, NodeError) else results[k])
            for k, i in enumerate(indices)
        ]

    def finish(self) -> Outcome:
        succeeded: list[tuple[int, VersionRecord, tuple[str, ...]]] = []
        for i, f in enumerate(self.files):
            if f.state is FileState.COMMITTING:
                if len(f.committed) >= self.quorum(i):
                    f.state = FileState.DONE
                    holders = tuple(sorted(f.committed))
                    succeeded.append((i, self.record(i, VersionState.COMMITTED), holders))
                else:
                    n, q = len(f.committed), self.quorum(i)
                    self._end(f, f"commit reached {n} of {q} replicas{UNKNOWN}")
            elif f.state is not FileState.ENDED and f.state is not FileState.DONE:
                self._end(f, "never stored")  # a step did not run (the shell was cut short)
        aborts: list[Abort] = []
        retry: list[tuple[int, str]] = []
        failed: list[tuple[int, str]] = []
        for i, f in enumerate(self.files):
            if f.state is not FileState.ENDED:
                continue
            g = f.grant
            # Every replica that may hold a copy: stored, refused (the answer may have
            # been lost after it stored), or reached by a stream.
            maybe = tuple(sorted({*f.stored, *f.errors, *f.targets} & set(g.replicas)))
            aborts.append(Abort(g.name, g.version, g.put_id, maybe))
            detail = "; ".join(f"{n}: {e.text}" for n, e in sorted(f.errors.items()))
            why = f"put {g.name} failed: {f.why}" + (f" ({detail})" if detail else "")
            (failed if f.local else retry).append((i, why))
        return Outcome(succeeded, aborts, retry, failed)

    # --- helpers ---------------------------------------------------------------

    def _end(self, f: _File, why: str, *, local: bool = False) -> None:
        f.state, f.why, f.local = FileState.ENDED, why, local

    def _expect(self, i: int, state: FileState) -> _File:
        f = self.files[i]
        if f.state is not state:
            raise RuntimeError(f"put {f.grant.name}: event in state {f.state.value!r}")
        return f


def node_errors(kinds: Sequence[int], errors: Sequence[str]) -> list[NodeError | None]:
    """A BatchAck's items as NodeErrors (None for done)."""
    return [
        None if kind < 0 else NodeError(error_kind(kind), text)
        for kind, text in zip(kinds, errors, strict=True)
    ]
