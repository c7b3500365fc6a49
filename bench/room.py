"""SDFS between distinct hosts on 1 Gbit/s links, against OpenSSH scp (issue 12).

Five nodes on five testbed hosts (:mod:`scripts.testbed`: namespaces, links shaped
to 1 Gbit/s both ways, an sshd each), ``transfer = "scp"``.  For each size it times:

* ``scp``: one OpenSSH ``scp`` of the file from the writer's host to another over the
  same kind of link (the baseline: one copy through the writer's link);
* ``put``: ``put`` from a console on the writer's host (the one host of five that
  holds no replica of the name, so every copy crosses its link) to the 4 replicas,
  once per ``--modes``: ``fanout`` (``pipeline_min_bytes = 0``: the console sends
  every replica its copy, 4 copies over one link) and ``pipeline`` (the default: one
  copy to the first replica, which forwards it down the chain while it arrives,
  sdfs.transfer.chain);
* ``get``: ``get`` to a console on the writer's host from the cluster (a remote holder).

Each step starts after a ``sync``, so no step pays for the write-back of the one before.

It prints JSON: seconds and MB/s for each, and the ratios the issue sets targets for
(a pipelined put <= 1.3x scp; get >= 0.9x scp's throughput).  The console streams
over the nodes' tcp port whatever the cluster's transfer; the nodes copy among
themselves (repairs) with scp.  Needs root (it builds the testbed); ``--sizes 40,500``
in MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.testbed import TestbedError, check_host
from sdfs.metadata import placement
from tests.helpers.netns import NetnsCluster


def mb_per_s(size: int, seconds: float) -> float:
    return round(size / seconds / 1e6, 1)


def settle() -> None:
    """Write back what earlier steps left dirty, so it is not billed to the next one."""
    os.sync()
    time.sleep(0.5)


def use_mode(config: Path, mode: str) -> None:
    """Make the cluster file's consoles put in ``mode`` (the nodes need not restart: a
    console's put decides the route; every node forwards a chain it is sent)."""
    lines = [x for x in config.read_text().splitlines() if not x.startswith("pipeline_min_bytes")]
    if mode == "fanout":
        lines.insert(lines.index("[cluster]") + 1, "pipeline_min_bytes = 0")
    config.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="40,500", help="file sizes in MB (default 40,500)")
    parser.add_argument(
        "--modes", default="fanout,pipeline", help="put modes to time (default fanout,pipeline)"
    )
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    modes = args.modes.split(",")
    if not set(modes) <= {"fanout", "pipeline"} or not modes:
        parser.error("--modes: fanout and/or pipeline")
    try:
        check_host()
    except TestbedError as e:
        print(f"bench/room.py: {e}", file=sys.stderr)
        return 1
    began = time.monotonic()
    c = NetnsCluster(5, scp=True)
    results: dict[str, object] = {
        "benchmark": "room",
        "hosts": 5,
        "link": c.bed.rate,
        "load_before": os.getloadavg()[0],
    }
    try:
        c.build()
        c.start()
        c.wait_views({n: set(c.names) for n in c.names}, 60, "the five hosts to converge")
        results["setup_s"] = round(time.monotonic() - began, 2)
        ssh = [
            *("-i", str(c.bed.operator_key)),
            *("-o", f"UserKnownHostsFile={c.bed.known_hosts}"),
            *("-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"),
        ]
        rows = []
        for mb in sizes:
            size = mb * 1_000_000
            src = c.workdir / f"file-{mb}"
            with src.open("wb") as f:
                for _ in range(mb):
                    f.write(os.urandom(1_000_000))
            name = f"bench/file-{mb}"
            # The writer and reader is the one host that holds no replica: every copy
            # of a put, and the get, cross its link (none is a loopback shortcut).
            chain = placement(name, c.names, 4)
            (writer,) = set(c.names) - set(chain)
            print(f"{mb} MB: scp {writer} -> {chain[0]}", file=sys.stderr)
            target = f"root@{c.addr(chain[0])}:{c.workdir / f'scp-{mb}'}"
            settle()
            t = time.monotonic()
            subprocess.run(
                c.bed.command(c.host(writer), ["scp", "-q", *ssh, str(src), target]), check=True
            )
            scp_s = time.monotonic() - t
            row: dict[str, object] = {"mb": mb, "writer": writer, "replicas": chain}
            for mode in modes:
                use_mode(c.config_path, mode)
                print(f"{mb} MB: put from {writer} ({mode})", file=sys.stderr)
                settle()
                t = time.monotonic()
                c.console(writer, "put", str(src), name, timeout=600)
                put_s = time.monotonic() - t
                row[f"put_{mode}_s"] = round(put_s, 2)
                row[f"put_{mode}_mb_s"] = mb_per_s(size, put_s)
                row[f"put_{mode}_over_scp"] = round(put_s / scp_s, 2)
            back = c.workdir / f"back-{mb}"
            print(f"{mb} MB: get to {writer}", file=sys.stderr)
            settle()
            t = time.monotonic()
            c.console(writer, "get", name, str(back), timeout=600)
            get_s = time.monotonic() - t
            assert back.stat().st_size == size
            for p in (src, back, Path(target.split(":", 1)[1])):
                p.unlink(missing_ok=True)
            row.update(
                {
                    "scp_s": round(scp_s, 2),
                    "scp_mb_s": mb_per_s(size, scp_s),
                    "get_s": round(get_s, 2),
                    "get_mb_s": mb_per_s(size, get_s),
                    "get_throughput_over_scp": round(scp_s / get_s, 2),
                }
            )
            rows.append(row)
        results["sizes"] = rows
    finally:
        t = time.monotonic()
        c.close()
        results["teardown_s"] = round(time.monotonic() - t, 2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
