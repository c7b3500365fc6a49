"""The Python client of an IDunno cluster: files, jobs and every console command.

::

    from idunno import Client

    with Client("cluster.toml") as c:          # or Client.connect(..., node="H2")
        c.put_dir("photos", "images")
        job = c.submit("resnet50", "images/*")
        for row in job.results():               # rows as their queries complete
            print(row["input"], row["top5"][0])
        job.wait()                              # a progress bar on stderr

:class:`AsyncClient` is the same API for trio programs (``await``, ``async for``);
``python -m console`` is built on it.  Errors are :class:`ClusterError` subclasses
with one-line messages (:mod:`idunno.errors`).
"""

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
from idunno.types import (
    Assignment,
    BatchSizeSet,
    FileStatus,
    GetResult,
    JobStatus,
    Member,
    Members,
    ModelLatency,
    ModelRate,
    Output,
    PutResult,
    Row,
    VersionsResult,
)

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
