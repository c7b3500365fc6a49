"""SDFS at scale: ls-all, store and a leader change over many files, as JSON.

Starts a real 5-node cluster on 127.0.0.1 (``scripts/localcluster.py``) whose nodes
already hold ``--files`` files of ``--size`` bytes, ``--replication`` copies each,
then measures what a user sees:

  ls_all_s:   ``python -m console ls-all`` (every name, through the leader, in pages)
  store_s:    ``python -m console store`` on a node holding every file
  rebuild_s:  the first leader's and, after a ``kill -9`` of it, the next leader's
              metadata rebuild (from its log line "... rebuilt from N nodes (F files)
              in T s"), and the time from the kill to that line
  leader RSS: VmRSS of the leader process once it is READY

Writing the files through a put at ~56 files/s would take half an hour at 100,000,
so each node's data directory is filled before the nodes start, through the store's
own API (``ReplicaStore.ingest`` of a checked arrival, with fsync turned off for the
fill only) and its own layout; the leader learns them by its rebuild, as after any
restart.  By default the first leader (H1) holds no copy, so killing it measures the
rebuild alone rather than the re-replication of the copies it held
(``--leader-holds`` changes that).

    python bench/sdfs_scale.py [--files 20000] [--size 300] [--keep]

Everything shares this machine's cores; absolute times are what they are here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.localcluster import LocalCluster, interrupt_on_sigterm, wait_for, wait_for_tcp

REBUILT = re.compile(
    r"(\S+) is the SDFS leader: metadata rebuilt from (\d+) nodes \((\d+) files\) in ([\d.]+) s"
)


def file_name(i: int) -> str:
    return f"scale/d{i // 1000:03d}/file-{i:06d}.bin"


def fill(root: str, names: list[str], size: int) -> int:
    """Store ``names`` (``size`` bytes each, version 1, committed) in the store at
    ``root`` through ReplicaStore.ingest, without fsyncs (a bench fill, not a put)."""
    import hashlib
    import uuid

    import sdfs.store as store_module
    from net.messages import VersionRecord, VersionState

    def no_sync(*_: Any) -> None:
        return None

    setattr(store_module, "fsync_dir", no_sync)  # noqa: B010
    setattr(store_module, "fsync_file", no_sync)  # noqa: B010
    setattr(os, "fsync", no_sync)  # noqa: B010 (this worker process only)
    store = store_module.ReplicaStore(Path(root))
    for name in names:
        data = (name.encode() * (size // len(name) + 1))[:size]
        arrival = store.incoming / f"fill-{uuid.uuid4().hex}"
        arrival.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        store.arrivals.note(arrival, digest)
        record = VersionRecord(
            name,
            1,
            hashlib.md5(name.encode()).hexdigest(),  # one put: the same id on every holder
            size,
            digest,
            int(VersionState.COMMITTED),
        )
        store.ingest(record, arrival.name)
    return len(store.records())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rebuilt_lines(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        m = REBUILT.search(line)
        if m:
            out.append(
                {
                    "leader": m[1],
                    "nodes": int(m[2]),
                    "files": int(m[3]),
                    "rebuild_s": float(m[4]),
                }
            )
    return out


def timed_console(c: LocalCluster, node: str, *args: str, timeout: float) -> tuple[float, Any]:
    t = time.monotonic()
    out = c.console(node, *args, timeout=timeout)
    return round(time.monotonic() - t, 2), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=20_000)
    p.add_argument("--size", type=int, default=300)
    p.add_argument("--replication", type=int, default=4)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--leader-holds", action="store_true", help="H1 holds copies too")
    p.add_argument("--keep", action="store_true", help="keep the cluster directory")
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args()
    interrupt_on_sigterm()

    names = [file_name(i) for i in range(args.files)]
    c = LocalCluster(
        args.nodes,
        cluster={"replication": args.replication, "transfer": "tcp"},
        keep=args.keep,
        start_nodes=False,
    )
    result: dict[str, Any] = {
        "files": args.files,
        "size": args.size,
        "replication": args.replication,
        "nodes": args.nodes,
        "leader_holds": args.leader_holds,
        "load_before": os.getloadavg(),
    }
    try:
        all_nodes = [n.name for n in c.nodes]
        holders = all_nodes if args.leader_holds else all_nodes[1:]
        # File i goes to `replication` consecutive holders starting at i.
        per_node: dict[str, list[str]] = {h: [] for h in holders}
        for i, name in enumerate(names):
            for k in range(args.replication):
                per_node[holders[(i + k) % len(holders)]].append(name)
        t = time.monotonic()
        with ProcessPoolExecutor(max_workers=2) as pool:
            jobs = {
                h: pool.submit(fill, str(c.workdir / "data" / h / "sdfs"), ns, args.size)
                for h, ns in per_node.items()
            }
            result["held"] = {h: j.result() for h, j in jobs.items()}
        result["fill_s"] = round(time.monotonic() - t, 1)

        # The holders first (each opens its store before it serves), then H1, which
        # leads and rebuilds from all of them.
        t = time.monotonic()
        c.start_introducer()
        for h in all_nodes[1:]:
            c.start_node(h, wait=None)
        for h in all_nodes[1:]:
            spec = c.node(h)
            wait_for_tcp(spec.host, spec.port, args.timeout, c.procs[h])
        result["holders_open_s"] = round(time.monotonic() - t, 1)
        first = all_nodes[0]
        time.sleep(3)  # their membership settles
        t = time.monotonic()
        c.start_node(first, wait=args.timeout)
        wait_for(
            lambda: bool(rebuilt_lines(c.log_path(first))),
            args.timeout,
            f"{first} to rebuild",
            interval=1.0,
        )
        result["first_rebuild"] = rebuilt_lines(c.log_path(first))[0]
        result["start_to_ready_s"] = round(time.monotonic() - t, 1)
        result["leader_rss_mb"] = round(rss_mb(c.procs[first].pid), 1)

        took, listed = timed_console(c, all_nodes[1], "ls-all", timeout=args.timeout)
        assert listed["files"] == sorted(names), "ls-all did not list every file"
        result["ls_all_s"] = took
        took, stored = timed_console(c, holders[0], "store", timeout=args.timeout)
        assert len(stored["files"]) == len(per_node[holders[0]]), "store missed files"
        result["store_s"] = took
        result["store_files"] = len(stored["files"])
        result["leader_rss_mb_after_listing"] = round(rss_mb(c.procs[first].pid), 1)

        second = all_nodes[1]
        before = len(rebuilt_lines(c.log_path(second)))  # it led before H1 started
        c.kill(first)
        killed = time.monotonic()
        wait_for(
            lambda: len(rebuilt_lines(c.log_path(second))) > before,
            args.timeout,
            f"{second} to take over",
            interval=0.5,
        )
        result["kill_to_ready_s"] = round(time.monotonic() - killed, 1)
        result["second_rebuild"] = rebuilt_lines(c.log_path(second))[before]
        result["new_leader_rss_mb"] = round(rss_mb(c.procs[second].pid), 1)
        took, listed = timed_console(c, all_nodes[2], "ls-all", timeout=args.timeout)
        assert len(listed["files"]) == len(names)
        result["ls_all_after_change_s"] = took
        result["load_after"] = os.getloadavg()
    except Exception as e:  # report what was measured, and where it stopped
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        c.close()
        if args.keep:
            result["workdir"] = str(c.workdir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
