"""A writer of a chain over scp, as a node's client is in a put, for tests on the testbed:

    python -m tests.helpers.scp_chain_writer CLUSTER_FILE SRC NODE...

(where each node keeps its incoming files is asked once and kept beside CLUSTER_FILE,
as a node's PeerDirectory keeps it: a later run reaches a node whose process died)

copies SRC into the incoming directories of NODE... with ``ScpTransfer.push_chain``
(the cluster file's ``[ssh]`` key and known_hosts; each hop's node is told by a
RelayFile over its RPC port to pass the file on by its own scp) and prints, as JSON,
one result per node: ``{"node", "ok", "sha256", "name"}`` or ``{"node", "ok", "error"}``.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import trio

from config.topology import load_config
from net.messages import PeerInfo, PeerInfoRequest, RelayFile
from net.rpc import call, frame_codec
from sdfs.transfer import Peer, TransferResult
from sdfs.transfer.scp import ScpTransfer


async def run(config_path: str, src: str, nodes: list[str]) -> list[dict[str, Any]]:
    config = load_config(config_path)
    codec = frame_codec(config.secret_bytes)
    cache = Path(config_path).with_name("peer-dirs.json")
    known = json.loads(cache.read_text()) if cache.exists() else {}
    peers = []
    for name in nodes:
        node = config.node_named(name)
        assert node is not None, name
        if name not in known:
            info = await call((node.host, node.port), codec, PeerInfoRequest())
            assert isinstance(info, PeerInfo)
            known[name] = [info.incoming_dir, info.store_dir]
        peers.append(Peer.from_node(node, *known[name]))
    cache.write_text(json.dumps(known))

    async def relay(peer: Peer, request: RelayFile, timeout: float) -> Any:
        return await call(peer.address, codec, request, timeout)

    scp = ScpTransfer(config.ssh)
    scp.relay = relay
    names = [f"chain-{uuid.uuid4().hex[:8]}" for _ in peers]
    try:
        results = await scp.push_chain(Path(src), list(zip(peers, names, strict=True)))
    finally:
        await scp.aclose()
    return [
        {"node": p.name, "ok": True, "sha256": r.sha256, "name": n}
        if isinstance(r, TransferResult)
        else {"node": p.name, "ok": False, "error": str(r)}
        for p, n, r in zip(peers, names, results, strict=True)
    ]


if __name__ == "__main__":
    print(json.dumps(trio.run(run, sys.argv[1], sys.argv[2], sys.argv[3:])))
