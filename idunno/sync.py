"""The synchronous Python client: :class:`Client` and :class:`Job`, for scripts.

Each call runs the :class:`~idunno.client.AsyncClient` method of the same name in its
own ``trio.run``.  Why not one background trio thread fed through
``trio.from_thread``: the async client holds no connection or task between calls (it
opens one per request, as the console does), so there is nothing a thread would keep
alive; without one there is no thread to start, share or stop (no ``close()`` to
forget, nothing left running when a script ends or forks), Ctrl-C interrupts a call
as it does any blocking call, and an error's traceback is the caller's own.  What it
costs is a trio.run per call, well under a millisecond beside the request itself.
``for row in job.results()`` runs one trio.run per batch of rows that came in.  Inside
a running trio program, use :class:`~idunno.client.AsyncClient` instead (trio.run
refuses to nest).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TextIO, TypeVar

import trio

from config.topology import ClusterConfig
from idunno.client import (
    DEFAULT_TIMEOUT,
    RESULTS_POLL,
    WAIT_POLL,
    AsyncClient,
    AsyncJob,
    LocalPath,
    ProgressArg,
)
from idunno.types import Assignment, Members, ModelLatency, ModelRate, Row
from net.transport import Address

if TYPE_CHECKING:
    from inference.client import Output
    from net.messages import BatchSizeSet, JobStatus
    from sdfs.client import FileStatus, GetResult, PutResult, VersionsResult

P = ParamSpec("P")
T = TypeVar("T")


def _run(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    return trio.run(functools.partial(fn, *args, **kwargs))


class Client:
    """A blocking client of one cluster: ``Client.connect("cluster.toml")``.

    The arguments are :class:`~idunno.client.AsyncClient`'s; so are the methods, the
    values they return and the errors they raise (:mod:`idunno.errors`)."""

    def __init__(
        self,
        config: str | Path | ClusterConfig | None = None,
        node: str | Address | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.aio = AsyncClient(config, node, timeout=timeout)

    @classmethod
    def connect(
        cls,
        config: str | Path | ClusterConfig | None = None,
        node: str | Address | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Client:
        client = cls(config, node, timeout=timeout)
        client.open()
        return client

    def __enter__(self) -> Client:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @property
    def config(self) -> ClusterConfig:
        return self.aio.config

    @property
    def node(self) -> Address | None:
        return self.aio.node

    def open(self) -> None:
        _run(self.aio.open)

    def command(self, name: str, *args: str, progress: ProgressArg = None) -> dict[str, Any]:
        return _run(self.aio.command, name, *args, progress=progress)

    def members(self) -> Members:
        return _run(self.aio.members)

    def put(self, local: LocalPath, name: str, progress: ProgressArg = None) -> PutResult:
        return _run(self.aio.put, local, name, progress)

    def put_dir(self, localdir: LocalPath, prefix: str, progress: ProgressArg = None) -> list[str]:
        return _run(self.aio.put_dir, localdir, prefix, progress)

    def get(self, name: str, local: LocalPath, progress: ProgressArg = None) -> GetResult:
        return _run(self.aio.get, name, local, progress)

    def get_versions(self, name: str, count: int, local: LocalPath) -> VersionsResult:
        return _run(self.aio.get_versions, name, count, local)

    def ls(self, name: str) -> FileStatus:
        return _run(self.aio.ls, name)

    def ls_all(self, glob: str = "*") -> list[str]:
        return _run(self.aio.ls_all, glob)

    def delete(self, name: str) -> None:
        _run(self.aio.delete, name)

    def rates(self) -> dict[str, ModelRate]:
        return _run(self.aio.rates)

    def latency(self) -> dict[str, ModelLatency]:
        return _run(self.aio.latency)

    def set_batch_size(self, model: str, batch: int) -> BatchSizeSet:
        return _run(self.aio.set_batch_size, model, batch)

    def assignments(self) -> dict[str, Assignment]:
        return _run(self.aio.assignments)

    def submit(self, model: str, glob_or_count: str | int | None = None) -> Job:
        return Job(_run(self.aio.submit, model, glob_or_count))

    def job(self, job_id: str) -> Job:
        return Job(self.aio.job(job_id))


@dataclass(frozen=True)
class Job:
    """A submitted job (see :class:`~idunno.client.AsyncJob`)."""

    aio: AsyncJob

    @property
    def job_id(self) -> str:
        return self.aio.job_id

    @property
    def model(self) -> str:
        return self.aio.model

    @property
    def queries(self) -> int:
        return self.aio.queries

    def status(self) -> JobStatus:
        return _run(self.aio.status)

    def wait(self, progress: bool | TextIO | None = True, poll: float = WAIT_POLL) -> JobStatus:
        return _run(self.aio.wait, progress, poll)

    def results(self, poll: float = RESULTS_POLL) -> Iterator[Row]:
        """The job's result rows as its queries complete (``for row in ...``)."""
        from inference.client import ResultCursor

        cursor = ResultCursor()
        while not cursor.finished:
            yield from _run(self.aio.client._next_results, self.job_id, cursor, poll)

    def output(self, local: LocalPath, progress: ProgressArg = None) -> Output:
        return _run(self.aio.output, local, progress)
