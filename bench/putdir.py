"""put-dir benchmark: small files per second and a directory of images' MB/s, as JSON.

Starts a 5-node cluster on 127.0.0.1 (``transfer = "tcp"`` by default; the cluster
file's own default is scp, which a ``python -m console`` client never uses: it
streams over tcp and sends small files inline) and times, as a user sees it:

  small:  ``python -m console put-dir`` of ``--files`` files of 0.3-1 KB (100 per
          directory) to 4 replicas: files/s (target >= 1,000/s); and OpenSSH
          ``scp -r`` of the same tree to one directory on this host, for comparison
  images: ``put-dir`` of ``--images`` files of 200 KB: MB/s, against one ``put`` of
          a single file of the same total size
  huge:   with ``--huge N``, one put-dir of N small files: time, files/s, and each
          node's resident memory afterwards

Every put is checked: the reply names every file, and a sample of files has 4
replicas.  The machine's load average is reported before and after, since a shared
machine makes every figure noisy.

    python bench/putdir.py [--files 5000] [--images 200] [--huge 100000] [--no-scp]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.localcluster import LocalCluster, interrupt_on_sigterm, wait_for
from scripts.samples import random_file
from tests.helpers.sshd import PrivateSshd, private_sshd

MB = 1_000_000


def small_tree(root: Path, count: int, seed: int = 1) -> int:
    """``count`` files of 300-1000 random bytes, 100 per directory; their total size."""
    rng = random.Random(seed)
    total = 0
    for i in range(count):
        d = root / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        size = rng.randint(300, 1000)
        (d / f"f{i:06d}.bin").write_bytes(rng.randbytes(size))
        total += size
    return total


def image_tree(root: Path, count: int, size: int) -> int:
    root.mkdir(parents=True)
    for i in range(count):
        random_file(root / f"img{i:04d}.jpg", size)
    return count * size


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def settle() -> None:
    os.sync()
    time.sleep(0.5)


def put_dir(c: LocalCluster, src: Path, prefix: str, count: int) -> float:
    settle()
    t = time.monotonic()
    reply = c.console("H2", "put-dir", str(src), prefix, timeout=3600)
    took = time.monotonic() - t
    if len(reply["files"]) != count:
        raise RuntimeError(f"put-dir stored {len(reply['files'])} of {count} files")
    for name in random.Random(0).sample(reply["files"], min(5, count)):
        replicas = c.console("H1", "ls", name)["replicas"]
        if len(replicas) != 4:
            raise RuntimeError(f"{name} has {len(replicas)} replicas, not 4")
    return took


def scp_r(sshd: PrivateSshd, src: Path, dst: Path) -> float:
    settle()
    t = time.monotonic()
    subprocess.run(
        [
            "scp", "-q", "-r", "-P", str(sshd.port), "-i", str(sshd.user_key),
            "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", str(src), f"{sshd.user}@127.0.0.1:{dst}",
        ],
        check=True,
    )  # fmt: skip
    return time.monotonic() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=5000)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--image-kb", type=int, default=200)
    p.add_argument("--huge", type=int, default=0, help="also one put-dir of this many files")
    p.add_argument("--transfer", default="tcp")
    p.add_argument("--no-scp", action="store_true", help="skip the OpenSSH scp -r baseline")
    p.add_argument("--keep", type=Path, help="work in this directory and keep it (node logs)")
    args = p.parse_args()
    interrupt_on_sigterm()
    out: dict[str, Any] = {
        "benchmark": "putdir",
        "nodes": 5,
        "replication": 4,
        "transfer": args.transfer,
        "cpus": os.cpu_count(),
        "load_before": load(),
    }
    wall = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="putdir-bench-") as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        # The cluster's files in this run's own directory (like everything it writes).
        with LocalCluster(5, workdir=work / "cluster", cluster={"transfer": args.transfer}) as c:
            c.wait_converged(timeout=30)
            time.sleep(1.5)  # the leader's first rebuild
            wait_for(lambda: c.console("H1", "ls-all") is not None, 30, "a leader")
            if args.files:
                src = work / "small"
                total = small_tree(src, args.files)
                took = put_dir(c, src, "small", args.files)
                out["small"] = {
                    "files": args.files,
                    "bytes": total,
                    "put_dir_s": round(took, 2),
                    "files_per_s": round(args.files / took, 1),
                    "target_1000_per_s": args.files / took >= 1000,
                    "load_after": load(),
                }
                if not args.no_scp:
                    with private_sshd(work / "sshd") as sshd:
                        dst = work / "scp-target"
                        dst.mkdir()
                        s = scp_r(sshd, src, dst)
                    out["small"]["openssh_scp_r_one_host_s"] = round(s, 2)
                    out["small"]["openssh_scp_r_files_per_s"] = round(args.files / s, 1)
            if args.images:
                src = work / "images"
                size = args.image_kb * 1000
                total = image_tree(src, args.images, size)
                took = put_dir(c, src, "images", args.images)
                one = random_file(work / "one.bin", total)
                settle()
                t = time.monotonic()
                c.console("H2", "put", str(one), "one.bin", timeout=600)
                single = time.monotonic() - t
                out["images"] = {
                    "files": args.images,
                    "bytes": total,
                    "put_dir_s": round(took, 2),
                    "put_dir_MBps": round(total / MB / took, 1),
                    "single_file_put_s": round(single, 2),
                    "single_file_MBps": round(total / MB / single, 1),
                    "put_dir_over_single": round(took / single, 2),
                    "load_after": load(),
                }
            if args.huge:
                src = work / "huge"
                small_tree(src, args.huge, seed=2)
                took = put_dir(c, src, "huge", args.huge)
                out["huge"] = {
                    "files": args.huge,
                    "put_dir_s": round(took, 1),
                    "files_per_s": round(args.huge / took, 1),
                    "node_rss_MB": {n: rss_mb(proc.pid) for n, proc in c.procs.items()},
                    "load_after": load(),
                }
    out["wall_s"] = round(time.monotonic() - wall, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
