"""Issue 10 (scale), inference side: a job of N queries with the leader killed, and
many jobs one after another; prints JSON.

(a) One ``noop`` job over ``--queries`` SDFS files (100,000 by default) on a local
    cluster of 4 nodes; once half of it is done the leader is ``kill -9``ed
    (the console's status takes about half a second, so the kill lands later).  Reported:
    the job's time and queries/s, the exactly-once check (each input once in the
    output file), the leader's and the standby's memory (VmRSS / VmHWM from
    /proc/PID/status) before the kill and the new leader's after, and the bytes the
    leader sent its standby (its replicator's "replication: sent ..." log lines) per
    query.  The inputs are written into every node's data directory before the nodes
    start, through the real store (:class:`sdfs.store.ReplicaStore`, the on-disk
    format the nodes read at start; replication 4 on 4 nodes puts every file on every
    node), since putting 100,000 files would take the run's whole time.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from net.messages import VersionRecord, VersionState
from scripts.localcluster import LocalCluster, interrupt_on_sigterm, wait_for
from sdfs.store import ReplicaStore

NODES = ("H1", "H2", "H3", "H4")
PREFIX = "scale"
_SENT = re.compile(r"replication: sent (\d+) bytes in (\d+) requests: (\d+) events")
_SNAP = re.compile(r"snapshot at event (\d+), (\d+) bytes in (\d+) parts")
_EVENT_BYTES = re.compile(r"events \((\d+) bytes\)")
_TAKEOVER = re.compile(r"takes over scheduling .* \((\d+) jobs, (\d+) queries done\)")


def populate(work: Path, n: int) -> float:
    """``scale/q000000`` .. in H1's store through the real API, then copied to the others.

    Without the store's fsyncs (about 10 ms a file here): the nodes start after this
    and read the same files, durable or not, and 100,000 fsynced files would take a
    quarter of an hour."""
    import sdfs.store

    for name in ("fsync_file", "fsync_dir"):
        setattr(sdfs.store, name, lambda path: None)
    t = time.time()
    store = ReplicaStore(work / "data" / NODES[0] / "sdfs", node=NODES[0])
    sha = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"  # of b"x"
    for i in range(n):
        name = f"{PREFIX}/q{i:06d}"
        incoming = f"bench-{i}"
        (store.incoming / incoming).write_bytes(b"x")
        put_id = uuid.uuid4().hex
        store.ingest(VersionRecord(name, 1, put_id, 1, sha, int(VersionState.PENDING)), incoming)
        store.commit(name, 1, put_id)
    for node in NODES[1:]:
        shutil.copytree(work / "data" / NODES[0] / "sdfs", work / "data" / node / "sdfs")
    return time.time() - t


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key.lower() + "_kib"] = int(value.split()[0])
    return out


def replication(log: Path) -> dict[str, int]:
    """The last "replication: sent ..." figures and the snapshots in ``log``."""
    text = log.read_text(errors="replace")
    sent = _SENT.findall(text)
    snaps = _SNAP.findall(text)
    biggest = max((int(s[1]) for s in snaps), default=0)
    out = {"snapshots": len(snaps), "snapshot_bytes_max": biggest}
    if sent:
        b, r, e = sent[-1]
        event_bytes = _EVENT_BYTES.findall(text)[-1]
        out.update(bytes=int(b), requests=int(r), events=int(e), event_bytes=int(event_bytes))
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
        wait_for(
            lambda: c.console("H3", "C4", "status", job)["done"] >= n // 2,
            900,
            "half the job",
            interval=0.1,
        )
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
    args = p.parse_args()
    interrupt_on_sigterm()
    out: dict[str, Any] = {"uptime": Path("/proc/loadavg").read_text().split()[:3]}
    try:
        with LocalCluster(
            len(NODES), cluster={"transfer": "tcp"}, start_nodes=False, keep=args.keep
        ) as c:
            out["workdir"] = str(c.workdir) if args.keep else None
            out["populate_s"] = round(populate(c.workdir, args.queries), 1)
            for node in NODES:
                c.start_node(node)
            c.wait_converged(timeout=60)
            out["a_big_job"] = big_job(c, args.queries, args.batch, not args.no_kill)
            if args.jobs:
                leader = "H1" if args.no_kill else "H2"
                out["b_many_jobs"] = many_jobs(c, args.jobs, args.job_glob, args.every, leader)
    finally:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
