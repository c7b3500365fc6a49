"""The Python client of an IDunno cluster: files, jobs and every console command.

::

    from idunno import Client

    with Client("cluster.toml") as c:          # or Client.connect(..., node="H2")
        c.put_dir("photos", "images")
        job = c.submit("resnet50", "images/*")
        for row in job.results():               # rows as their queries complete
            print(row["input"], row["top5"][:1])
        job.wait()                              # a progress bar on stderr

:class:`AsyncClient` is the same API for trio programs (``await``, ``async for``);
``python -m console`` is built on it.  Errors are :class:`ClusterError` subclasses
with one-line messages (:mod:`idunno.errors`).

The names below are imported when first used: ``python -m console``, which scripts
call in loops, imports :mod:`idunno.client` and only what its command needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from idunno.client import AsyncClient, AsyncJob
    from idunno.errors import (
        ClusterError,
        Conflict,
        Invalid,
        NoQuorum,
        NotFound,
        NotReady,
        Refused,
        Unreachable,
        UsageError,
    )
    from idunno.sync import Client, Job
    from idunno.types import Assignment, Member, Members, ModelLatency, ModelRate, Row
    from inference.client import Output
    from net.messages import BatchSizeSet, JobStatus
    from sdfs.client import FileStatus, GetResult, PutResult, VersionsResult

# Where each public name lives.
_WHERE = {
    "AsyncClient": "idunno.client",
    "AsyncJob": "idunno.client",
    "Client": "idunno.sync",
    "Job": "idunno.sync",
    **dict.fromkeys(
        (
            "ClusterError",
            "Conflict",
            "Invalid",
            "NoQuorum",
            "NotFound",
            "NotReady",
            "Refused",
            "Unreachable",
            "UsageError",
        ),
        "idunno.errors",
    ),
    **dict.fromkeys(
        ("Assignment", "Member", "Members", "ModelLatency", "ModelRate", "Row"), "idunno.types"
    ),
    "Output": "inference.client",
    "BatchSizeSet": "net.messages",
    "JobStatus": "net.messages",
    **dict.fromkeys(("FileStatus", "GetResult", "PutResult", "VersionsResult"), "sdfs.client"),
}

__all__ = [
    "Assignment",
    "AsyncClient",
    "AsyncJob",
    "BatchSizeSet",
    "Client",
    "ClusterError",
    "Conflict",
    "FileStatus",
    "GetResult",
    "Invalid",
    "Job",
    "JobStatus",
    "Member",
    "Members",
    "ModelLatency",
    "ModelRate",
    "NoQuorum",
    "NotFound",
    "NotReady",
    "Output",
    "PutResult",
    "Refused",
    "Row",
    "Unreachable",
    "UsageError",
    "VersionsResult",
]


assert sorted(_WHERE) == __all__


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'idunno' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
