"""Console commands on testbed hosts, each recorded as an operation of a :class:`History`.

A client is a host: its commands run as ``python -m console`` inside that host's network
namespace against its own node (:meth:`NetnsCluster.console`), so a client is cut off
with its host.  Every call is recorded before it is made and completed after it: ``ok``
with the reply, ``fail`` when the cluster said no in a way that guarantees no effect
(a refusal naming the missing ``majority``), ``info`` for anything else (a timeout, a
lost connection, any other error), whose effect is unknown.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scripts.localcluster import ConsoleError
from tests.helpers.console_server import ConsoleProcess
from tests.helpers.history import FAIL, INFO, OK, History, Op, digest
from tests.helpers.netns import PORT, NetnsCluster

# What a refused operation says: the cluster definitely did nothing; unless it says
# its outcome is unknown (a commit that reached too few replicas).
DEFINITE = ("majority",)
UNKNOWN = ("unknown",)
DELIMITER = re.compile(rb"^===== (.+) version (\d+) =====$")


def outcome_of(error: ConsoleError) -> str:
    said = str(error)
    if error.returncode in (None, 0) or any(w in said for w in UNKNOWN):
        return INFO
    return FAIL if any(w in said for w in DEFINITE) else INFO


class Client:
    """One host's client: each method makes one recorded console call.

    With ``resident=True`` the commands go through one long-lived console process in
    the host's namespace (:class:`~tests.helpers.console_server.ConsoleProcess`)
    instead of a ``python -m console`` process each; :meth:`close` stops it.
    """

    def __init__(
        self,
        c: NetnsCluster,
        history: History,
        host: str,
        *,
        timeout: float = 20.0,
        resident: bool = False,
    ) -> None:
        self.c = c
        self.history = history
        self.host = host
        self.timeout = timeout
        self.dir = c.workdir / "clients" / host
        self.dir.mkdir(parents=True, exist_ok=True)
        self._seq = itertools.count()
        self.resident = (
            ConsoleProcess(
                ["ip", "netns", "exec", c.ns(host)],
                f"{c.addr(host)}:{PORT}",
                c.config_path,
                self.dir / "console.log",
            )
            if resident
            else None
        )

    def close(self) -> None:
        if self.resident is not None:
            self.resident.close()

    def _call(self, op: Op, *args: str, timeout: float | None = None) -> Any:
        try:
            if self.resident is not None:
                return self.resident.call(*args, timeout=timeout or self.timeout)
            return self.c.console(self.host, *args, timeout=timeout or self.timeout)
        except ConsoleError as e:
            line = str(e).splitlines()[0] if str(e) else repr(e)
            self.history.complete(op, outcome_of(e), error=line)
            return None

    def put(self, name: str, data: bytes | None = None) -> Op:
        """Put ``data`` (default: a new line naming this client and op) as ``name``."""
        seq = next(self._seq)
        if data is None:
            data = f"{self.host} {seq} {name} {self.history.clock():.6f}\n".encode()
        local = self.dir / f"put-{seq}"
        local.write_bytes(data)
        op = self.history.invoke(self.host, "put", name, digest(data))
        reply = self._call(op, "put", str(local), name)
        if reply is not None:
            self.history.complete(op, OK, version=reply["version"], replicas=reply["replicas"])
        local.unlink()
        return op

    def get(self, name: str) -> Op:
        local = self.dir / f"get-{next(self._seq)}"
        op = self.history.invoke(self.host, "get", name)
        reply = self._call(op, "get", name, str(local))
        if reply is not None:
            data = local.read_bytes()
            self.history.complete(op, OK, version=reply["version"], digest=digest(data))
            local.unlink()
        return op

    def get_versions(self, name: str, count: int, *, final: bool = False) -> Op:
        local = self.dir / f"versions-{next(self._seq)}"
        op = self.history.invoke(self.host, "get-versions", name, final=final)
        reply = self._call(op, "get-versions", name, str(count), str(local))
        if reply is not None:
            parts = split_versions(local.read_bytes())
            self.history.complete(
                op,
                OK,
                versions=reply["versions"],
                digests={str(v): digest(b) for v, b in parts.items()},
                delimited=list(parts),
                asked=count,
            )
            local.unlink()
        return op

    def ls(self, name: str) -> Op:
        op = self.history.invoke(self.host, "ls", name)
        reply = self._call(op, "ls", name)
        if reply is not None:
            self.history.complete(op, OK, versions=reply["versions"], replicas=reply["replicas"])
        return op

    def submit_job(self, model: str, glob: str, inputs: list[str]) -> Op:
        """``C4 submit-job``; ``inputs`` are the queries the job must answer."""
        op = self.history.invoke(self.host, "submit-job", model)
        reply = self._call(op, "C4", "submit-job", model, glob)
        if reply is not None:
            self.history.complete(
                op, OK, job_id=reply["job_id"], queries=reply["queries"], inputs=sorted(inputs)
            )
        return op

    def get_output(self, job_id: str, *, final: bool = False) -> Op:
        local = self.dir / f"output-{next(self._seq)}.jsonl"
        op = self.history.invoke(self.host, "get-output", job_id, final=final)
        reply = self._call(op, "C4", "get-output", job_id, str(local), timeout=60)
        if reply is not None:
            rows = [json.loads(line) for line in local.read_text().splitlines() if line]
            self.history.complete(
                op, OK, job_id=job_id, results=reply["results"], inputs=[r["input"] for r in rows]
            )
            local.unlink()
        return op


def until_ok(attempt: Callable[[], Op], within: float = 30.0, pause: float = 1.0) -> Op:
    """``attempt()`` again until it ends ``ok`` or ``within`` seconds pass (each try is
    recorded): the reads after a heal, while the merged side's leader takes the lease
    back (it waits for the other side's promises to run out, then rebuilds)."""
    deadline = time.monotonic() + within
    while True:
        op = attempt()
        if op.outcome == OK or time.monotonic() >= deadline:
            return op
        time.sleep(pause)


def split_versions(data: bytes) -> dict[int, bytes]:
    """A get-versions file's parts: version -> its bytes (the writer's lines end in
    a newline, so none was added), in the file's order."""
    parts: dict[int, bytes] = {}
    current: int | None = None
    for line in data.splitlines(keepends=True):
        m = DELIMITER.match(line.rstrip(b"\n"))
        if m:
            current = int(m.group(2))
            parts[current] = b""
        elif current is not None:
            parts[current] += line
    return parts


def write_artifacts(directory: Path, history: History, nemesis_log: list[str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    history.dump(directory / "history.jsonl")
    (directory / "nemesis.log").write_text("".join(line + "\n" for line in nemesis_log))
