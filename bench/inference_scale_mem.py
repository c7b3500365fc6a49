"""Issue 10 (scale), inference side, in one process: a ``noop`` job of 100,000 queries
through four real inference services (leader, hot standby, workers) on the in-memory
network, the leader crashed halfway; prints JSON.

What bench/inference_scale.py measures with node processes, without what a loaded
two-core machine cannot start today: four nodes each holding 100,000 SDFS files
(their stores' metadata rebuilds block their event loops long enough for SWIM to
declare them failed).  Here the file store is a dictionary
(:class:`tests.helpers.dictfiles.DictFiles`), membership is real SWIM on
:mod:`net.memory`, and requests go through :class:`net.memrpc.MemoryRpc` with both
codecs (the 16 MiB frame limit applies), on the real clock.

Reported: the job's time and queries/s, the exactly-once check (each input once in
the output, in order), the bytes each leader's replicator sent its standby (per
query), the biggest snapshot, and the scheduler's state at the crash as one message
(what the old code had to send in one frame).

    python bench/inference_scale_mem.py [--queries 100000] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inference.client import InferenceClient
from inference.service import InferenceService
from net import wire
from net.messages import StandbySnapshot
from tests.helpers.dictfiles import DictFiles
from tests.helpers.memrpc_cluster import RpcCluster


async def poll(predicate: Any, timeout: float, interval: float = 0.05) -> None:
    with trio.fail_after(timeout):
        while True:
            if predicate():
                return
            await trio.sleep(interval)


async def bench(n: int, batch: int, data: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"queries": n, "batch": batch}
    async with trio.open_nursery() as nursery:
        rpc = RpcCluster(nursery, 4)
        await rpc.start_all()
        await rpc.wait_until(rpc.converged, timeout=60)
        files = DictFiles()
        inputs = [f"scale/q{i:06d}" for i in range(n)]
        for name in inputs:
            files.data[name] = b"x"
        services: dict[str, InferenceService] = {}
        for node in rpc.live():
            s = InferenceService(
                rpc.config,
                node.member.node,
                node.core,
                node.frames,
                files,
                data / node.name,
                clock=time.time,
                view=node.peers,
            )
            services[node.name] = s
            node.serve(s.handle)
            node.member.service.listeners.append(s.on_membership_event)
        for node in rpc.live():
            await node.nursery.start(services[node.name].run)
        leader, standby = services["H1"], services["H2"]
        client = InferenceClient(rpc.node("H3").peers, files)
        await client.set_batch_size("noop", batch)
        t0 = time.time()
        job = (await client.submit("noop", pattern="scale/*")).job_id
        sched = leader.leader.sched
        assert sched is not None
        await poll(lambda: sched.status(job)["done"] >= n // 2, 3600)
        whole = len(wire.encode(StandbySnapshot("H1", 0, sched.snapshot())))
        out["at_crash"] = {
            "done": sched.status(job)["done"],
            "after_s": round(time.time() - t0, 2),
            "state_as_one_message_bytes": whole,
            "standby_event": standby.copy.seq,
            "leader_event": leader.leader.seq,
        }
        rpc.crash("H1")
        await poll(lambda: standby.leader.sched is not None, 120)
        new = standby.leader.sched
        assert new is not None
        await poll(lambda: new.forgotten(job), 3600, 0.2)
        status = new.status(job)
        lines = files.data[f"outputs/{job}.jsonl"].decode().splitlines()
        got = [json.loads(x)["input"] for x in lines]
        out.update(
            state=status["state"],
            job_s=round(status["finished_at"] - status["submitted_at"], 2),
            queries_per_s=round(n / (status["finished_at"] - status["submitted_at"]), 1),
            exactly_once=got == inputs,
            duplicates_ignored=new.duplicates,
        )
        for name, s in (("H1", leader), ("H2", standby)):
            # Summed over the leader's standbys (a majority with it, and a spare).
            sents = [r.sent for r in s.replicators]
            out[f"sent_to_standbys_by_{name}"] = {
                "standbys": len(sents),
                "bytes": sum(x.bytes for x in sents),
                "event_bytes": sum(x.event_bytes for x in sents),
                "events": sum(x.events for x in sents),
                "snapshots": sum(x.snapshots for x in sents),
                "snapshot_bytes": sum(x.snapshot_bytes for x in sents),
                "requests": sum(x.requests for x in sents),
            }
        total = sum(r.sent.bytes for s in (leader, standby) for r in s.replicators)
        out["bytes_to_standby_per_query"] = round(total / n, 1)
        out["process_max_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        nursery.cancel_scope.cancel()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=8)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="infscale-") as tmp:
        result = trio.run(bench, args.queries, args.batch, Path(tmp))
    result["load"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
