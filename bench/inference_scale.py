"""Issue 10 (scale), inference side: a job of N queries with the leader killed, and
many jobs one after another; prints JSON.

(a) One ``noop`` job over ``--queries`` SDFS files (100,000 by default) on a local
    cluster of 4 nodes; once half of it is done the leader is ``kill -9``ed
    (watched in its query_timings.csv).  Reported:
    the job's time and queries/s, the exactly-once check (each input once in the
    output file), the leader's and the standby's memory (VmRSS / VmHWM from
    /proc/PID/status) before the kill and the new leader's after, and the bytes the
    leader sent its standbys (its replicators' "replication to standby K: sent ..."
    lines) per query.  The inputs are written into every node's data directory before the nodes
    start, through the real store (:class:`sdfs.store.ReplicaStore`, the on-disk
    format the nodes read at start), on all 4 nodes with replication 3, since putting
    100,000 files would take the run's whole time.
(b) ``--jobs`` noop jobs over ``--job-glob`` (10 inputs) submitted one after another
    (each waited for) on the same cluster: the leader's VmRSS every ``--every`` jobs.

    python bench/inference_scale.py [--queries 100000] [--jobs 2000] [--batch 64]

Each console command is a process of its own, so (b) is slow (about a second a job on
a busy machine); ``--jobs 200`` shows the trend.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from net.messages import VersionRecord, VersionState
from scripts.localcluster import LocalCluster, interrupt_on_sigterm, wait_for
from sdfs.store import ReplicaStore

NODES = ("H1", "H2", "H3", "H4")
PREFIX = "scale"
_SENT = re.compile(
    r"replication to standby (\d+): sent (\d+) bytes in (\d+) requests: (\d+) events "
    r"\((\d+) bytes\)"
)
_SNAP = re.compile(r"snapshot at event (\d+), (\d+) bytes in (\d+) parts")
_TAKEOVER = re.compile(r"takes over scheduling .* \((\d+) jobs, (\d+) queries done\)")


def populate(work: Path, n: int, cache: Path | None, copies: int) -> float:
    """``scale/q000000`` .. in H1's store through the real API, then copied to the others.

    Without the store's fsyncs (about 10 ms a file here): the nodes start after this
    and read the same files, durable or not, and 100,000 fsynced files would take a
    quarter of an hour."""
    import sdfs.store

    for name in ("fsync_file", "fsync_dir"):
        setattr(sdfs.store, name, lambda path: None)
    t = time.time()
    built = (cache / f"{PREFIX}-{n}") if cache is not None else work / "data" / NODES[0] / "sdfs"
    if cache is None or not built.is_dir():
        _build(built, n)
    for node in NODES[:copies]:
        target = work / "data" / node / "sdfs"
        if target != built:
            shutil.copytree(built, target)
    return time.time() - t


def _build(root: Path, n: int) -> None:
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    store = ReplicaStore(tmp, node=NODES[0])
    sha = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"  # of b"x"
    for i in range(n):
        name = f"{PREFIX}/q{i:06d}"
        incoming = f"bench-{i}"
        (store.incoming / incoming).write_bytes(b"x")
        put_id = uuid.uuid4().hex
        store.ingest(VersionRecord(name, 1, put_id, 1, sha, int(VersionState.PENDING)), incoming)
        store.commit(name, 1, put_id)
    tmp.rename(root)


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key.lower() + "_kib"] = int(value.split()[0])
    return out


def replication(log: Path) -> dict[str, int]:
    """The last "replication to standby K: sent ..." figures of each standby, summed,
    and the snapshots in ``log``."""
    text = log.read_text(errors="replace")
    last: dict[str, tuple[str, ...]] = {}
    for rank, *figures in _SENT.findall(text):
        last[rank] = tuple(figures)
    snaps = _SNAP.findall(text)
    biggest = max((int(s[1]) for s in snaps), default=0)
    out = {"snapshots": len(snaps), "snapshot_bytes_max": biggest, "standbys": len(last)}
    if last:
        keys = ("bytes", "requests", "events", "event_bytes")
        out.update({k: sum(int(f[i]) for f in last.values()) for i, k in enumerate(keys)})
    return out


def finished(log: Path, job: str, since: int = 0) -> bool:
    """Whether ``log`` says ``job`` finished (reading from byte ``since`` on)."""
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return re.search(rf" {job} (?:done|failed)$", text, re.M) is not None


def big_job(c: LocalCluster, n: int, batch: int, kill: bool) -> dict[str, Any]:
    c.console("H3", "C3", "noop", str(batch))
    # The store's leader learns the files from the nodes' inventories at start.
    t0 = time.time()
    job = wait_for(lambda: _submit_all(c, n), 300, f"all {n} inputs listed", interval=2.0)
    out: dict[str, Any] = {"job": job, "queries": n, "batch": batch}
    if kill:
        # The leader's timing log has a row per query answered: cheaper to watch than
        # the console (a process per look), so the kill lands near the middle.
        answered = _row_counter(c.workdir / "data" / "H1" / "query_timings.csv")
        wait_for(lambda: answered() >= n // 2, 900, "half the job", interval=0.01)
        out["before_kill"] = {
            "leader_H1": memory(c.procs["H1"].pid),
            "standby_H2": memory(c.procs["H2"].pid),
            "done": c.console("H3", "C4", "status", job)["done"],
        }
        c.kill("H1")
        out["killed_at_s"] = round(time.time() - t0, 2)
    wait_for(
        lambda: any(finished(c.log_path(x), job) for x in NODES), 1800, f"{job} done", interval=1.0
    )
    status = c.console("H3", "C4", "status", job)
    local = c.workdir / "out.jsonl"
    c.console("H3", "C4", "get-output", job, str(local), timeout=120)
    inputs = [json.loads(line)["input"] for line in local.read_text().splitlines() if line]
    expected = [f"{PREFIX}/q{i:06d}" for i in range(n)]
    leader = "H2" if kill else "H1"
    out.update(
        state=status["state"],
        job_s=round(status["finished_at"] - status["submitted_at"], 2),
        queries_per_s=round(n / (status["finished_at"] - status["submitted_at"]), 1),
        exactly_once=sorted(inputs) == expected and len(inputs) == n,
        output_lines=len(inputs),
        after={
            f"leader_{leader}": memory(c.procs[leader].pid),
            "standby_H3": memory(c.procs["H3"].pid),
        },
        replication_from_H1=replication(c.log_path("H1")),
    )
    if kill:
        h2 = out["replication_from_H2"] = replication(c.log_path("H2"))
        took = _TAKEOVER.findall(c.log_path("H2").read_text(errors="replace"))
        if took and h2.get("event_bytes"):
            # The new leader ran the queries not done at the takeover; its events
            # (every BatchDone, Tick, ...) went to its standby, H3.
            run_by_h2 = n - int(took[-1][1])
            out["queries_done_at_takeover"] = int(took[-1][1])
            out["event_bytes_per_query_H2"] = round(h2["event_bytes"] / max(run_by_h2, 1), 1)
    h1 = out["replication_from_H1"]
    if h1.get("event_bytes"):
        # Up to its last report (once a second) before the kill.
        done = out.get("before_kill", {}).get("done", n)
        out["event_bytes_per_query_H1_approx"] = round(h1["event_bytes"] / max(done, 1), 1)
    return out


def _row_counter(path: Path) -> Callable[[], int]:
    """Counts ``path``'s rows (less the header) as it grows, reading only what is new."""
    seen, rows = 0, 0

    def count() -> int:
        nonlocal seen, rows
        try:
            with path.open("rb") as f:
                f.seek(seen)
                data = f.read()
        except FileNotFoundError:
            return 0
        seen += len(data)
        rows += data.count(b"\n")
        return rows - 1

    return count


def _submit_all(c: LocalCluster, n: int) -> str | None:
    reply = c.console("H3", "C4", "submit-job", "noop", f"{PREFIX}/*", timeout=120)
    if reply["queries"] == n:
        return str(reply["job_id"])
    return None  # not every file listed yet (that job finishes quickly)


def many_jobs(c: LocalCluster, jobs: int, glob: str, every: int, leader: str) -> dict[str, Any]:
    rss: list[list[int]] = []
    t = time.time()
    for k in range(1, jobs + 1):
        log = c.log_path(leader)
        mark = log.stat().st_size
        job = c.console("H3", "C4", "submit-job", "noop", glob)["job_id"]
        wait_for(lambda: finished(log, job, mark), 120, f"{job} done", interval=0.05)  # noqa: B023
        if k % every == 0 or k == 1:
            rss.append([k, memory(c.procs[leader].pid)["vmrss_kib"]])
    wall = round(time.time() - t, 1)
    return {"jobs": jobs, "inputs": glob, "wall_s": wall, "leader_rss_kib": rss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--job-glob", default=f"{PREFIX}/q00000*", help="each job's inputs")
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--no-kill", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the cluster's directory (logs)")
    p.add_argument("--store-cache", type=Path, help="keep the built store here for reruns")
    # SWIM's defaults (1 s, 3 s) take a loaded shared machine's pauses for failures.
    p.add_argument("--ping-timeout", type=float, default=2.0)
    # Every file is on all 4 nodes: with 3 copies wanted, killing one node leaves every
    # file fully replicated (no repairs to measure around) and outputs writable.
    p.add_argument("--replication", type=int, default=3)
    p.add_argument("--cleanup-time", type=float, default=6.0)
    args = p.parse_args()
    interrupt_on_sigterm()
    out: dict[str, Any] = {"uptime": Path("/proc/loadavg").read_text().split()[:3]}
    try:
        timings = {"ping_timeout": args.ping_timeout, "cleanup_time": args.cleanup_time}
        cluster: dict[str, Any] = {
            "transfer": "tcp",
            "replication": args.replication,
            **timings,
        }
        out["membership"] = timings
        with LocalCluster(len(NODES), cluster=cluster, start_nodes=False, keep=args.keep) as c:
            out["workdir"] = str(c.workdir) if args.keep else None
            out["populate_s"] = round(
                populate(c.workdir, args.queries, args.store_cache, len(NODES)), 1
            )
            # H1 (first in ring order: the store's and the scheduler's leader) last, so
            # that its store metadata is rebuilt from every node's inventory at once.
            for node in NODES[1:]:
                c.start_node(node, wait=None)
            c.wait_converged(NODES[1:], timeout=180)
            c.start_node(NODES[0], wait=None)
            c.wait_converged(timeout=180)
            out["a_big_job"] = big_job(c, args.queries, args.batch, not args.no_kill)
            if args.jobs:
                leader = "H1" if args.no_kill else "H2"
                out["b_many_jobs"] = many_jobs(c, args.jobs, args.job_glob, args.every, leader)
    finally:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
