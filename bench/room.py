"""SDFS between distinct hosts on 1 Gbit/s links, against OpenSSH scp (issue 12).

Five nodes on five testbed hosts (:mod:`scripts.testbed`: namespaces, links shaped
to 1 Gbit/s both ways, an sshd each), ``transfer = "scp"``.  For each size it times:

* ``scp``: one OpenSSH ``scp`` of the file from h1 to h2 over the same kind of link
  (the baseline: one copy through h1's link);
* ``put``: ``put`` from a console on h1 (its bytes leave h1 for the 4 replicas);
* ``get``: ``get`` to a console on h1 from the cluster.

It prints JSON: seconds and MB/s for each, and the ratios the issue sets targets for
(put <= 1.3x scp once the put is pipelined; get >= 0.9x scp's throughput).  Today a
put fans out from the writer, so it sends 4 copies over the writer's one link: expect
about 4x.  Needs root (it builds the testbed); ``--sizes 40,500`` in MB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from scripts.testbed import TestbedError, check_host
from tests.helpers.netns import NetnsCluster


def mb_per_s(size: int, seconds: float) -> float:
    return round(size / seconds / 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="40,500", help="file sizes in MB (default 40,500)")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    try:
        check_host()
    except TestbedError as e:
        print(f"bench/room.py: {e}", file=sys.stderr)
        return 1
    began = time.monotonic()
    c = NetnsCluster(5, scp=True)
    results: dict[str, object] = {"benchmark": "room", "hosts": 5, "link": c.bed.rate}
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
            print(f"{mb} MB: scp h1 -> h2", file=sys.stderr)
            target = f"root@{c.addr('H2')}:{c.workdir / f'scp-{mb}'}"
            t = time.monotonic()
            subprocess.run(
                c.bed.command(c.host("H1"), ["scp", "-q", *ssh, str(src), target]), check=True
            )
            scp_s = time.monotonic() - t
            print(f"{mb} MB: put from h1", file=sys.stderr)
            t = time.monotonic()
            c.console("H1", "put", str(src), f"bench/file-{mb}", timeout=600)
            put_s = time.monotonic() - t
            back = c.workdir / f"back-{mb}"
            print(f"{mb} MB: get to h1", file=sys.stderr)
            t = time.monotonic()
            c.console("H1", "get", f"bench/file-{mb}", str(back), timeout=600)
            get_s = time.monotonic() - t
            assert back.stat().st_size == size
            for p in (src, back, Path(target.split(":", 1)[1])):
                p.unlink(missing_ok=True)
            rows.append(
                {
                    "mb": mb,
                    "scp_s": round(scp_s, 2),
                    "scp_mb_s": mb_per_s(size, scp_s),
                    "put_s": round(put_s, 2),
                    "put_mb_s": mb_per_s(size, put_s),
                    "get_s": round(get_s, 2),
                    "get_mb_s": mb_per_s(size, get_s),
                    "put_over_scp": round(put_s / scp_s, 2),
                    "get_throughput_over_scp": round(scp_s / get_s, 2),
                }
            )
        results["sizes"] = rows
    finally:
        t = time.monotonic()
        c.close()
        results["teardown_s"] = round(time.monotonic() - t, 2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
