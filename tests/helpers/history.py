"""A recorded history of client operations and a checker over it, in the spirit of Jepsen.

Clients on several hosts run console commands against the cluster while a nemesis cuts
and heals the network; every operation is recorded as an :class:`Op` (who, what, when it
was invoked and when it completed, and how it ended).  As in Jepsen, an operation ends
in one of three ways:

* ``ok``: the cluster acknowledged it (the console exited 0), with its result;
* ``fail``: the cluster definitely refused it (it said so: e.g. no majority), so it must
  have had no effect;
* ``info``: unknown (a timeout, a lost connection, any other error): it may or may not
  have taken effect, and the checker allows both.

:func:`check` is pure: it takes the operations (those read back after the final heal
marked ``final``) and returns the anomalies it finds.  For the file store the model is
a register per name whose versions are granted by one authority at a time (Knossos
would search linearizations; here the system itself names every write's version, so
the check is direct, as Elle infers order from versions it can see):

* ``lost``: an acknowledged put whose (name, version) a final read does not list;
* ``replaced``: a final read lists an acknowledged put's (name, version) with other
  content;
* ``duplicate``: two acknowledged puts got the same (name, version);
* ``conflict``: a read during the run saw an acknowledged (name, version) with other
  content;
* ``phantom-read``: a read returned content that no put of that name wrote;
* ``aborted-read``: a read returned content that only a definitely failed put wrote;
* ``order``: a final read's versions of a name are not strictly ordered (newest first);
* for jobs (``submit-job`` acknowledged, ``get-output`` read back after the heal):
  ``job-missing`` (a query without a row), ``job-duplicate`` (a query with several
  rows), ``job-unexpected`` (a row for no query of the job), ``job-lost`` (no final
  output at all), ``job-id-reused`` (two acknowledged submissions got one job id: each
  is also checked against that id's output).

Given the nemesis' cuts (:class:`Cut`: when, and which hosts were on the minority
side), it also checks the partition rules for the operations a minority client invoked
once the cut had settled (``settle`` seconds: failure detection, a lease running out)
and that completed before the heal:

* ``minority-write``: a put acknowledged there, or ``minority-job``: a job submission
  acknowledged there (only a majority grants versions and schedules);
* ``vague-refusal``: a put or submission there that did not end with the definite
  refusal (``fail``: a line naming the "majority").

A history is written as JSON Lines, one completed operation per line
(:meth:`History.dump`, :func:`load`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OK, FAIL, INFO = "ok", "fail", "info"
OUTCOMES = (OK, FAIL, INFO)
READS = ("get", "get-versions")


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Op:
    """One client operation.

    ``digest`` is the SHA-256 of what a put wrote.  ``result`` holds what came back: a
    put's or get's ``version``, a get's ``digest``, a get-versions' ``versions`` (newest
    first) and ``digests`` (version -> SHA-256, as strings: JSON keys), how many it
    asked for (``asked``), a job's ``job_id`` and ``inputs``, a get-output's ``inputs``
    (one per row), or the ``error`` line.
    """

    id: int
    client: str
    kind: str
    name: str | None = None
    digest: str | None = None
    invoke: float = 0.0
    complete: float | None = None
    outcome: str = INFO
    result: dict[str, Any] = field(default_factory=dict)
    final: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Op:
        return cls(**json.loads(line))


class History:
    """A thread-safe recorder: :meth:`invoke` before a call, :meth:`complete` after it."""

    def __init__(self, clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self.clock = clock
        self.ops: list[Op] = []

    def invoke(
        self,
        client: str,
        kind: str,
        name: str | None = None,
        digest: str | None = None,
        *,
        final: bool = False,
    ) -> Op:
        with self._lock:
            op = Op(len(self.ops), client, kind, name, digest, self.clock(), final=final)
            self.ops.append(op)
            return op

    def complete(self, op: Op, outcome: str, **result: Any) -> Op:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {OUTCOMES}")
        with self._lock:
            op.complete = self.clock()
            op.outcome = outcome
            op.result = result
        return op

    def dump(self, path: Path) -> None:
        """Every operation, one JSON line each; those never completed stay ``info``."""
        with self._lock:
            lines = [op.to_json() for op in self.ops]
        path.write_text("".join(line + "\n" for line in lines))


def load(path: Path) -> list[Op]:
    return [Op.from_json(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Anomaly:
    kind: str
    name: str | None
    version: int | None
    ops: tuple[int, ...]
    detail: str

    def __str__(self) -> str:
        where = f"{self.name} v{self.version}" if self.version is not None else f"{self.name}"
        return f"{self.kind}: {where}: {self.detail} (ops {list(self.ops)})"


@dataclass(frozen=True)
class Cut:
    """A partition: from ``start`` to ``end`` (the history's clock), ``minority`` were
    the hosts on a side without a majority of the configured nodes."""

    start: float
    end: float
    minority: tuple[str, ...]
    kind: str = ""


def _read_contents(op: Op) -> list[tuple[int, str]]:
    """The (version, digest) pairs a successful read returned."""
    if op.outcome != OK:
        return []
    if op.kind == "get" and "digest" in op.result:
        return [(int(op.result["version"]), str(op.result["digest"]))]
    if op.kind == "get-versions":
        digests = op.result.get("digests", {})
        # A version listed without content reads as content nobody wrote.
        return [(int(v), str(digests.get(str(v), ""))) for v in op.result.get("versions", [])]
    return []


def check(ops: Sequence[Op], cuts: Sequence[Cut] = (), settle: float = 0.0) -> list[Anomaly]:
    """Every anomaly in ``ops``, in a stable order (see the module's docstring)."""
    found = _check_files(ops)
    found.extend(_check_jobs(ops))
    found.extend(_check_cuts(ops, cuts, settle))
    return found


def _check_files(ops: Sequence[Op]) -> list[Anomaly]:
    found: list[Anomaly] = []
    puts = [op for op in ops if op.kind == "put"]
    acked: dict[tuple[str, int], list[Op]] = defaultdict(list)
    for op in puts:
        if op.outcome == OK and op.name is not None:
            acked[(op.name, int(op.result["version"]))].append(op)
    written: dict[str, dict[str, list[Op]]] = defaultdict(lambda: defaultdict(list))
    for op in puts:
        if op.name is not None and op.digest is not None:
            written[op.name][op.digest].append(op)

    for (name, version), same in sorted(acked.items()):
        if len(same) > 1:
            found.append(
                Anomaly(
                    "duplicate",
                    name,
                    version,
                    tuple(op.id for op in same),
                    f"{len(same)} acknowledged puts were granted the same version",
                )
            )

    reads = [op for op in ops if op.kind in READS and op.name is not None]
    for op in reads:
        assert op.name is not None
        for version, seen in _read_contents(op):
            writers = written[op.name].get(seen, [])
            if not writers:
                found.append(
                    Anomaly(
                        "phantom-read",
                        op.name,
                        version,
                        (op.id,),
                        f"{op.client} read content {seen[:12]} that no put wrote",
                    )
                )
            elif all(w.outcome == FAIL for w in writers):
                found.append(
                    Anomaly(
                        "aborted-read",
                        op.name,
                        version,
                        (op.id, *(w.id for w in writers)),
                        f"{op.client} read content of a put the cluster refused",
                    )
                )
            if op.final:
                continue  # a final read's disagreement is "replaced", below
            for put in acked.get((op.name, version), []):
                if put.digest != seen:
                    found.append(
                        Anomaly(
                            "conflict",
                            op.name,
                            version,
                            (put.id, op.id),
                            f"{op.client} read other content than the acknowledged put",
                        )
                    )

    finals: dict[str, list[Op]] = defaultdict(list)
    for op in reads:
        if op.final and op.kind == "get-versions" and op.outcome == OK and op.name is not None:
            finals[op.name].append(op)
    for op in (op for ops_ in finals.values() for op in ops_):
        listed = [int(v) for v in op.result.get("versions", [])]
        if any(a <= b for a, b in itertools.pairwise(listed)):
            found.append(
                Anomaly(
                    "order",
                    op.name,
                    None,
                    (op.id,),
                    f"{op.client} listed versions {listed}, not strictly newest first",
                )
            )

    for (name, version), same in sorted(acked.items()):
        if not finals.get(name):
            found.append(
                Anomaly(
                    "lost",
                    name,
                    version,
                    tuple(p.id for p in same),
                    "no read of the name succeeded after the heal",
                )
            )
            continue
        for final in finals[name]:
            listed = [int(v) for v in final.result.get("versions", [])]
            asked = int(final.result.get("asked", len(listed)))
            if version not in listed:
                if len(listed) < asked or (listed and version > min(listed)):
                    found.append(
                        Anomaly(
                            "lost",
                            name,
                            version,
                            (*(p.id for p in same), final.id),
                            f"not among the versions {final.client} read after the heal",
                        )
                    )
                continue
            there = str(final.result.get("digests", {}).get(str(version), ""))
            for put in same:
                if put.digest != there:
                    found.append(
                        Anomaly(
                            "replaced",
                            name,
                            version,
                            (put.id, final.id),
                            f"{final.client} read other content after the heal",
                        )
                    )

    return found


def _check_jobs(ops: Sequence[Op]) -> list[Anomaly]:
    found: list[Anomaly] = []
    outputs: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == "get-output" and op.final and op.outcome == OK:
            outputs[str(op.result["job_id"])].append(op)
    submitted: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if op.kind == "submit-job" and op.outcome == OK:
            submitted[str(op.result["job_id"])].append(op)
    for job_id, same in sorted(submitted.items()):
        if len(same) > 1:
            found.append(
                Anomaly(
                    "job-id-reused",
                    job_id,
                    None,
                    tuple(op.id for op in same),
                    f"{len(same)} acknowledged submissions got the same job id",
                )
            )
    for job in (op for op in ops if op.kind == "submit-job" and op.outcome == OK):
        job_id = str(job.result["job_id"])
        expected = set(job.result["inputs"])
        if not outputs.get(job_id):
            found.append(Anomaly("job-lost", job_id, None, (job.id,), "no output after the heal"))
            continue
        for out in outputs[job_id]:
            rows = Counter(out.result["inputs"])
            ids = (job.id, out.id)
            for query in sorted(expected - rows.keys()):
                found.append(
                    Anomaly("job-missing", job_id, None, ids, f"{out.client}: no row for {query}")
                )
            for query, n in sorted(rows.items()):
                if query not in expected:
                    found.append(
                        Anomaly("job-unexpected", job_id, None, ids, f"{out.client}: {query}")
                    )
                elif n > 1:
                    found.append(
                        Anomaly(
                            "job-duplicate", job_id, None, ids, f"{out.client}: {query} {n} times"
                        )
                    )
    return found


def _check_cuts(ops: Sequence[Op], cuts: Sequence[Cut], settle: float) -> list[Anomaly]:
    found: list[Anomaly] = []
    for op in ops:
        if op.kind not in ("put", "submit-job") or op.complete is None:
            continue
        for cut in cuts:
            inside = cut.start + settle <= op.invoke and op.complete <= cut.end
            if not inside or op.client not in cut.minority:
                continue
            what = f"{op.client} on the minority {list(cut.minority)} of a {cut.kind or 'cut'}"
            if op.outcome == OK:
                kind = "minority-write" if op.kind == "put" else "minority-job"
                found.append(Anomaly(kind, op.name, op.result.get("version"), (op.id,), what))
            elif op.outcome == INFO:
                error = op.result.get("error", "no answer")
                found.append(Anomaly("vague-refusal", op.name, None, (op.id,), f"{what}: {error}"))
    return found


def summary(ops: Iterable[Op], anomalies: Sequence[Anomaly], per_kind: int = 5) -> str:
    """Operations by kind and outcome, and the anomalies by kind (the first
    ``per_kind`` of each spelled out), in a few lines."""
    ops = list(ops)
    by: dict[str, Counter[str]] = defaultdict(Counter)
    for op in ops:
        by[op.kind][op.outcome] += 1
    lines = [f"{len(ops)} operations"]
    for kind in sorted(by):
        counts = ", ".join(f"{o} {by[kind][o]}" for o in OUTCOMES if by[kind][o])
        lines.append(f"  {kind}: {counts}")
    kinds = Counter(a.kind for a in anomalies)
    lines.append(
        f"{len(anomalies)} anomalies"
        + (": " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) if kinds else "")
    )
    for kind, n in sorted(kinds.items()):
        shown = [a for a in anomalies if a.kind == kind][:per_kind]
        lines += [f"  {a}" for a in shown]
        if n > len(shown):
            lines.append(f"  ... and {n - len(shown)} more {kind}")
    return "\n".join(lines)
