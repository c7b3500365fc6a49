"""RPC call latency on loopback: one request per new connection (net.rpc.call), as JSON.

Measures what the per-connection handshake (the server's hello, the client's nonce in
front of its first frame) costs a call: the median and 90th percentile of ``--calls``
sequential calls to an RpcServer in the same process, and of a TCP connect alone.

    python bench/rpc_call.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from net.messages import ConsoleReply, ConsoleRequest
from net.rpc import RpcServer, call, frame_codec


async def echo(request: Any, addr: Any) -> Any:
    return ConsoleReply(True, {"n": 1})


def summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "median_us": round(statistics.median(times) * 1e6, 1),
        "p90_us": round(times[int(len(times) * 0.9)] * 1e6, 1),
    }


async def run(calls: int) -> dict[str, Any]:
    codec = frame_codec(b"bench-secret")
    server = RpcServer(codec, echo)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(server.serve, "127.0.0.1", 0)
        addr = listeners[0].socket.getsockname()[:2]
        connects, rpcs = [], []
        for _ in range(calls):
            t = time.perf_counter()
            stream = await trio.open_tcp_stream(*addr)
            connects.append(time.perf_counter() - t)
            await stream.aclose()
        for _ in range(calls):
            t = time.perf_counter()
            await call(addr, codec, ConsoleRequest("ls", ("x",)))
            rpcs.append(time.perf_counter() - t)
        nursery.cancel_scope.cancel()
    return {
        "benchmark": "rpc_call",
        "calls": calls,
        "connect": summary(connects),
        "call": summary(rpcs),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    args = p.parse_args()
    print(json.dumps(trio.run(run, args.calls), indent=2))


if __name__ == "__main__":
    main()
