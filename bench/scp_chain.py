"""The scp transfer on loopback against OpenSSH scp: one copy, fan-out to 4, chain of 4.

Starts 4 real nodes on 127.0.0.1 with ``transfer = "scp"`` and a private OpenSSH
server (every node's scp logs in to it with its key, host key checked), and times,
for each size, medians of ``--repeats`` interleaved runs:

* ``openssh_scp_s``: one OpenSSH ``scp`` of the file into a directory;
* ``one_s``: :class:`sdfs.transfer.scp.ScpTransfer` ``push`` of it to one node;
* ``fanout_s``: ``push_many`` to the 4 nodes (4 copies leave this process);
* ``chain_s``: ``push_chain`` to the 4 nodes (sdfs.transfer.chain): one copy to the
  first, whose node, told by a RelayFile over its RPC port, copies it on by its own
  scp while it arrives, and so on.

This process is the writer, as a node's client is in a put (a console streams over
tcp instead).  Everything shares this machine's cores: the ratios are the figure.

    python -m bench.scp_chain [--sizes 40,200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.sdfs import median, openssh_scp, options, settle
from config.topology import load_config
from net.messages import PeerInfo, PeerInfoRequest, RelayFile
from net.rpc import call, frame_codec
from scripts.localcluster import LocalCluster, interrupt_on_sigterm
from scripts.samples import random_file
from sdfs.transfer import Peer, TransferResult
from sdfs.transfer.scp import ScpTransfer
from tests.helpers.sshd import PrivateSshd, private_sshd

MB = 1_000_000


async def measure(
    c: LocalCluster, sshd: PrivateSshd, src: Path, repeats: int, work: Path
) -> dict[str, Any]:
    config = load_config(c.config_path)
    codec = frame_codec(config.secret_bytes)
    peers = []
    for node in c.nodes[:4]:
        info = await call((node.host, node.port), codec, PeerInfoRequest())
        assert isinstance(info, PeerInfo)
        peers.append(Peer(node.name, node.host, node.port, None, info.incoming_dir, info.store_dir))

    async def relay(peer: Peer, request: RelayFile, timeout: float) -> Any:
        return await call(peer.address, codec, request, timeout)

    scp = ScpTransfer(config.ssh)
    scp.relay = relay
    size = src.stat().st_size
    times: dict[str, list[float]] = {"openssh_scp": [], "one": [], "fanout": [], "chain": []}
    target = work / "scp-target"
    target.mkdir(exist_ok=True)
    try:
        await scp.push(src, peers[0], "warm-up")  # the SSH connection, as a node keeps it
        for rep in range(repeats):
            names = {p.name: f"bench-{rep}-{p.name}" for p in peers}
            steps = ["openssh_scp", "one", "fanout", "chain"]
            if rep % 2:
                steps.reverse()
            for step in steps:
                await trio.to_thread.run_sync(settle)
                t = time.monotonic()
                if step == "openssh_scp":
                    dst = f"{sshd.user}@127.0.0.1:{target}/f.bin"
                    await trio.to_thread.run_sync(openssh_scp, sshd, str(src), dst)
                    results: list[Any] = []
                elif step == "one":
                    results = [await scp.push(src, peers[0], names["H1"] + "-one")]
                elif step == "fanout":
                    pairs = [(p, names[p.name] + "-fan") for p in peers]
                    results = await scp.push_many(src, pairs)
                else:
                    pairs = [(p, names[p.name] + "-chain") for p in peers]
                    results = await scp.push_chain(src, pairs)
                times[step].append(time.monotonic() - t)
                bad = [r for r in results if not isinstance(r, TransferResult)]
                if bad:
                    raise RuntimeError(f"{step}: {bad[0]}")
            for p in peers:  # the copies are nobody's: clear them for the next run
                for f in Path(p.incoming_dir).iterdir():
                    f.unlink()
            (target / "f.bin").unlink()
    finally:
        await scp.aclose()
    m = {k: median(v) for k, v in times.items()}
    return {
        "bytes": size,
        "repeats": repeats,
        **{f"{k}_s": round(v, 3) for k, v in m.items()},
        "one_over_openssh": round(m["one"] / m["openssh_scp"], 2),
        "fanout_over_openssh": round(m["fanout"] / m["openssh_scp"], 2),
        "chain_over_openssh": round(m["chain"] / m["openssh_scp"], 2),
        "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="40,200", help="file sizes in MB")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    interrupt_on_sigterm()
    out: dict[str, Any] = {"benchmark": "scp_chain", "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="scp-chain-") as tmp:
        work = Path(tmp)
        with private_sshd(work / "sshd") as sshd, LocalCluster(4, **options("scp", sshd)) as c:
            c.wait_converged(timeout=30)
            rows = []
            for mb in (int(x) for x in args.sizes.split(",")):
                src = random_file(work / f"f{mb}.bin", mb * MB)
                rows.append(trio.run(measure, c, sshd, src, args.repeats, work))
                src.unlink()
            out["sizes"] = rows
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
