"""The console's inference commands (C1-C5) on a node: arguments in, JSON out.

Parses the console's words into typed calls of :class:`inference.client.InferenceClient`
and shapes the answers into the JSON of shared/INTERFACE.md; a typed failure
(:mod:`net.errors`) becomes the console's one-line ``CommandError``.  This is console
vocabulary, so it lives on the node's side, never in inference/.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from console.commands import CommandError
from inference.client import InferenceClient
from net.errors import ClusterError
from net.progress import Progress


async def inference_command(
    client: InferenceClient, command: str, args: list[str], progress: Progress | None = None
) -> dict[str, Any]:
    try:
        return await _run(client, command, args, progress)
    except ClusterError as e:
        raise CommandError(str(e)) from None


async def _run(
    client: InferenceClient, command: str, args: list[str], progress: Progress | None
) -> dict[str, Any]:
    if command == "C1":
        return {"models": await client.rates()}
    if command == "C2":
        return {"models": await client.latency()}
    if command == "C3":
        if not args[1].isdigit() or int(args[1]) < 1:
            raise CommandError(f"BATCH must be a whole number of at least 1, got {args[1]!r}")
        size = await client.set_batch_size(args[0], int(args[1]))
        return {"model": size.model, "batch_size": size.batch_size}
    if command == "C5":
        return {"jobs": await client.assignments()}
    if command == "C4":
        action = args[0]
        if action == "get-output":
            if len(args) != 3:
                raise CommandError("usage: C4 get-output JOB_ID LOCAL")
            out = await client.get_output(args[1], Path(args[2]).expanduser(), progress)
            return {"job_id": out.job_id, "results": out.results, "state": out.state}
        if action == "status":
            if len(args) != 2:
                raise CommandError("usage: C4 status JOB_ID")
            return dataclasses.asdict(await client.status(args[1]))
        if action == "submit-job":
            which = args[2] if len(args) > 2 else None
            count = int(which) if which is not None and which.isdigit() else None
            pattern = which if count is None else None
            job = await client.submit(args[1], pattern, count)
            return {"job_id": job.job_id, "model": job.model, "queries": job.queries}
        raise CommandError(f"unknown C4 action {action!r}: submit-job, status or get-output")
    raise CommandError(f"{command} is not an inference command")
