"""The membership demo: five nodes on 127.0.0.1, one crashes, the others notice.

Run with ``make demo`` (or ``.venv/bin/python scripts/demo.py``).  It uses only the
command-line contract of ``shared/INTERFACE.md``: it writes a cluster file, starts
``python -m introducer`` and five ``python main.py --no-console`` processes, and
watches them with the one-shot ``python -m console``.  It exits 0 when every step
worked and non-zero, with the reason and the logs' last lines, when one did not.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

# `python scripts/demo.py` puts scripts/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.localcluster import (
    ConsoleError,
    LocalCluster,
    ProcessDied,
    WaitTimeout,
    console_many,
    member_names,
    wait_for,
)


class DemoFailed(Exception):
    """A step did not give what it should; the message says which and why."""


class Steps:
    def __init__(self, total: int) -> None:
        self.total = total
        self.n = 0

    def __call__(self, title: str) -> None:
        self.n += 1
        print(f"\n=== Step {self.n}/{self.total}: {title} ===", flush=True)


def info(text: str) -> None:
    print(f"    {text}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        print(f"    | {line}")
    sys.stdout.flush()


def describe_views(views: Mapping[str, set[str] | ConsoleError], want: int) -> str:
    parts = []
    for name, view in views.items():
        parts.append(f"{name}:{'?' if isinstance(view, ConsoleError) else len(view)}/{want}")
    return " ".join(parts)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    p.add_argument("--victim", default="H3", help="node to kill -9 (default H3; never the leader)")
    p.add_argument(
        "--join-timeout", type=float, default=60.0, help="seconds for all nodes to see each other"
    )
    p.add_argument(
        "--detect-timeout",
        type=float,
        default=30.0,
        help="seconds for the survivors to drop the killed node",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory and its logs")
    return p.parse_args(argv)


def run(args: argparse.Namespace, cluster: LocalCluster, step: Steps) -> None:
    n = args.nodes
    names = [node.name for node in cluster.nodes]

    step("write the cluster file")
    info(f"{cluster.config_path} ({n} nodes on 127.0.0.1, default timings)")
    for node in cluster.nodes:
        info(f"{node.name} = {node.addr}")
    info(f"introducer = {cluster.introducer.addr}")

    step("start the introducer")
    proc = cluster.start_introducer()
    info(f"python -m introducer --port {cluster.introducer.port} --config ...  (pid {proc.pid})")

    step(f"start {n} nodes")
    for name in names:
        node = cluster.node(name)
        proc = cluster.start_node(name)
        info(f"{name}: python main.py --hostname {node.host} --port {node.port} (pid {proc.pid})")

    step(f"wait until every node lists all {n} members")
    started = time.monotonic()
    last_line = ""

    def progress(views: Mapping[str, set[str] | ConsoleError]) -> None:
        nonlocal last_line
        line = describe_views(views, n)
        if line != last_line:
            info(f"t={time.monotonic() - started:4.1f} s  {line}")
            last_line = line

    cluster.wait_converged(set(names), timeout=args.join_timeout, on_poll=progress)
    info(f"all {n} nodes agree after {time.monotonic() - started:.1f} s")

    step(f"list_mem from {names[0]} and {names[1]}")
    for name in names[:2]:
        info(f"python -m console --node {cluster.node(name).addr} list_mem")
        show(cluster.console(name, "list_mem", json=False))

    leader = cluster.list_mem(names[0])["leader"]
    victim = args.victim
    if victim == leader:
        victim = next(x for x in reversed(names) if x != leader)
        info(f"{args.victim} is the leader; killing {victim} instead")
    survivors = [x for x in names if x != victim]

    step(f"kill -9 {victim} (the leader is {leader})")
    killed_at = time.monotonic()
    cluster.kill(victim)
    info(f"{victim} killed; its peers get no goodbye")

    step(f"wait until the survivors no longer list {victim}")
    gone_at: dict[str, float] = {}
    suspected: dict[str, float] = {}

    def removed_everywhere() -> bool:
        answers = console_many(
            [(cluster.node(s), ["list_mem"]) for s in survivors if s not in gone_at],
            cluster.config_path,
        )
        now = time.monotonic() - killed_at
        pending = [s for s in survivors if s not in gone_at]
        for name, answer in zip(pending, answers, strict=True):
            if isinstance(answer, ConsoleError):
                info(f"t={now:4.1f} s  {name}: {answer}")
                continue
            status = {m["name"]: m["status"] for m in answer["members"]}
            if victim not in status:
                gone_at[name] = now
                info(f"t={now:4.1f} s  {name} no longer lists {victim}")
            elif status[victim] == "suspect" and name not in suspected:
                suspected[name] = now
                info(f"t={now:4.1f} s  {name} suspects {victim}")
        return len(gone_at) == len(survivors)

    wait_for(
        removed_everywhere,
        args.detect_timeout,
        f"{', '.join(survivors)} to drop {victim}",
        interval=0.05,
    )
    first, last = min(gone_at.values()), max(gone_at.values())
    info(
        f"{victim} removed by every survivor {last:.1f} s after the kill "
        f"(first {first:.1f} s); polling resolution is one console call"
    )

    step(f"list_mem from {survivors[0]} after the failure")
    info(f"python -m console --node {cluster.node(survivors[0]).addr} list_mem")
    show(cluster.console(survivors[0], "list_mem", json=False))
    left = member_names(cluster.list_mem(survivors[0]))
    if left != set(survivors):
        raise DemoFailed(f"{survivors[0]} lists {sorted(left)}, expected {survivors}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.nodes < 3:
        print("demo: --nodes must be at least 3", file=sys.stderr)
        return 2
    names = [f"H{i}" for i in range(1, args.nodes + 1)]
    if args.victim not in names:
        print(
            f"demo: --victim {args.victim}: no such node (have {', '.join(names)})", file=sys.stderr
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="idunno-demo-"))
    cluster = LocalCluster(args.nodes, workdir=workdir, start_nodes=False)
    step = Steps(total=9)
    ok = interrupted = False
    try:
        run(args, cluster, step)
        ok = True
    except (DemoFailed, WaitTimeout, ConsoleError, ProcessDied, OSError) as e:
        print(f"\nDEMO FAILED in step {step.n}: {e}", file=sys.stderr)
        for name, proc in [("introducer", cluster.introducer_proc), *cluster.procs.items()]:
            if proc is not None:
                state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
                print(f"\n--- {name} ({state}): last lines of {proc.log_path}", file=sys.stderr)
                print(proc.log_tail(15), file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted", file=sys.stderr)
    finally:
        step("stop everything")
        cluster.close()
        info("nodes stopped with SIGTERM (they leave politely), then the introducer")
        procs = [*cluster.procs.items(), ("introducer", cluster.introducer_proc)]
        codes = [f"{name}={p.popen.returncode}" for name, p in procs if p is not None]
        if codes:
            info(f"exit statuses (-9: killed): {' '.join(codes)}")
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            info(f"logs and the cluster file are kept in {workdir}")
    print("\nDemo finished: OK" if ok else "\nDemo finished: FAILED", flush=True)
    return 0 if ok else 130 if interrupted else 1


if __name__ == "__main__":
    sys.exit(main())
