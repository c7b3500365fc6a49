"""The asynchronous (trio) Python client: :class:`AsyncClient` and :class:`AsyncJob`.

A client is outside the cluster, like ``python -m console``: it reads the cluster
file (for the secret and the nodes), learns the live members from one node (its
*entry*: the node it was given, or the first of the file's nodes that answers) and
then talks to whom each operation needs, with the same typed APIs the nodes use:

* files (put, put_dir, get, get_versions) stream between this process and the
  replicas (:class:`sdfs.client.SdfsClient` over the nodes' TCP transfer ports);
  nodes never open a path named by the client;
* lookups and jobs (ls, ls_all, delete, C1-C5, a job's status and results) are typed
  requests to the leader (:class:`inference.client.InferenceClient`,
  ``call_leader``: retried while leadership moves), so their failures keep their kind
  (:class:`~net.errors.NotFound` for an unknown job, ...);
* :meth:`AsyncClient.command` runs any console command by name, exactly as
  ``python -m console`` does (which is built on it): commands that read or write a
  LOCAL path run here, the others are sent to the entry node (a
  :class:`~net.messages.ConsoleRequest`, with its progress frames and the pieces of
  a long list), and the reply is the command's JSON dictionary.

No connection is held between calls (each request opens its own, as the console
does), so a client needs no closing and survives the failure of any node, its entry
included: the member list is re-read from any member it knew.  Errors: see
:mod:`idunno.errors`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio

from config.tables import ConfigError
from config.topology import ClusterConfig, check_secret, load_config, parse_address
from idunno.errors import ClusterError, Invalid, Refused, Unreachable, UsageError
from idunno.progress import JobMeter, job_line, show
from idunno.types import Assignment, Members, ModelLatency, ModelRate, Row
from net.progress import Progress, throttled
from net.rpc import RpcError, frame_codec
from net.transport import Address
from node.commands import CommandError, Context, Where, help_text, local_path, parse, run

if TYPE_CHECKING:  # the file store's client is imported when a client first needs it:
    # python -m console, built on this module, sends most commands without it.
    from inference.client import Output, ResultCursor
    from membership.remote import RemoteView
    from net.messages import BatchSizeSet, JobStatus
    from sdfs.client import FileStatus, GetResult, PutResult, VersionsResult

# How long a console command may stay silent (no reply, no progress) before the node
# is taken for unreachable: long enough for a join (the node waits up to 5 s for the
# introducer) or a request the node forwards to the leader.
DEFAULT_TIMEOUT = 60.0
# How often a copy's progress line is redrawn.
PROGRESS_INTERVAL = 0.25
# How often job.wait() asks for the job's status, and job.results() for new rows.
WAIT_POLL = 0.5
RESULTS_POLL = 0.5
# The member list is re-read before an operation when it is older than this.
MEMBERS_MAX_AGE = 5.0

LocalPath = str | Path
ProgressArg = bool | Progress | None


def _stderr_progress(done: int, total: int, label: str) -> None:
    from console.render import show_progress

    show_progress(sys.stderr, done, total, label)


def _local(value: LocalPath) -> Path:
    try:
        return local_path(str(value))
    except ValueError as e:
        raise Invalid(f"local path {str(value)[:80]!r}: {e}") from None


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """An RpcError (no usable reply from a node) as :class:`Unreachable`."""
    try:
        yield
    except RpcError as e:
        raise Unreachable(str(e)) from None


def _resolve(node: str | Address | None, config: ClusterConfig) -> Address | None:
    """``node`` as an address: a name of the cluster file, or ``HOST:PORT``."""
    if node is None:
        return None
    if isinstance(node, tuple):
        return parse_address(f"{node[0]}:{node[1]}", "node")
    named = config.node_named(node)
    if named is not None:
        return named.address
    if ":" in node:
        return parse_address(node, "node")
    raise UsageError(f"node: {node!r} is neither HOST:PORT nor a node of the cluster file")


class AsyncClient:
    """A trio client of one cluster: ``await AsyncClient.connect("cluster.toml")``.

    ``config``: the cluster file (a path), an already loaded
    :class:`~config.topology.ClusterConfig`, or None for the built-in cluster.
    ``node``: ``"HOST:PORT"`` or a node name of the file; None tries the file's nodes
    in order until one answers.  ``timeout``: how long a console command
    (:meth:`command`) may go without a reply or progress.
    """

    def __init__(
        self,
        config: str | Path | ClusterConfig | None = None,
        node: str | Address | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not timeout > 0:
            raise UsageError(f"timeout: must be positive, got {timeout:g}")
        try:
            self.config = config if isinstance(config, ClusterConfig) else load_config(config)
            self._entry = _resolve(node, self.config)
            # Before anything is sent: the public default secret only on loopback.
            check_secret(self.config, *([("node", self._entry[0])] if self._entry else []))
        except ConfigError as e:
            raise UsageError(str(e)) from None
        self.timeout = timeout
        self._frames = frame_codec(self.config.secret_bytes)
        self._ctx: Context | None = None
        self._view: RemoteView | None = None
        self._read_at = float("-inf")  # when the member list was last read (monotonic)

    @classmethod
    async def connect(
        cls,
        config: str | Path | ClusterConfig | None = None,
        node: str | Address | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AsyncClient:
        """A client that has reached a member of the cluster (:class:`Unreachable` if
        none answers, or the one given is not in the cluster)."""
        client = cls(config, node, timeout=timeout)
        await client.open()
        return client

    async def __aenter__(self) -> AsyncClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None  # no connection outlives a call

    @property
    def node(self) -> Address | None:
        """The entry node (None until a node answered, when none was given)."""
        return self._entry

    async def open(self) -> None:
        """Learn the live members from the entry node (:class:`Unreachable` if it does
        not answer or is not in the cluster)."""
        await self._context(fresh=True)

    async def _context(self, fresh: bool = False) -> Context:
        """The typed clients, over a member list at most MEMBERS_MAX_AGE old."""
        now = time.monotonic()
        if self._ctx is not None and self._view is not None and not fresh:
            if now - self._read_at > MEMBERS_MAX_AGE:
                # Keep what we knew if no one answers: the operation says why it fails.
                with contextlib.suppress(ClusterError):
                    await self._view.refresh()
                self._read_at = now
            return self._ctx
        view = await self._find_entry()
        self._view, self._read_at = view, time.monotonic()
        if self._ctx is None:
            self._ctx = self._build(view)
        return self._ctx

    async def _find_entry(self) -> RemoteView:
        from membership.remote import RemoteView

        if self._view is not None:
            candidates = [self._view.entry]
        elif self._entry is not None:
            candidates = [self._entry]
        else:
            candidates = [n.address for n in self.config.nodes]
        last = "the cluster file lists no nodes"
        for addr in candidates:
            view = self._view or RemoteView(addr, self._frames)
            try:
                await view.refresh()
            except ClusterError as e:  # unreachable, or not in the cluster
                last = str(e)
                continue
            self._entry = addr
            return view
        if len(candidates) > 1:
            raise Unreachable(
                f"none of the cluster file's {len(candidates)} nodes answered: {last}"
            )
        raise Unreachable(last)

    def _build(self, view: RemoteView) -> Context:
        from inference.client import InferenceClient
        from node.sdfs_files import SdfsFiles
        from sdfs.client import SdfsClient
        from sdfs.copies import PeerDirectory
        from sdfs.transfer import TcpTransfer

        tcp = TcpTransfer(self._frames)
        peers = PeerDirectory(view, self.config, ask=False)  # tcp only: servers resolve names
        sdfs = SdfsClient(view, peers, lambda node: tcp, self.config.replication)
        return Context(sdfs, None, InferenceClient(view, SdfsFiles(sdfs)))

    def _progress(self, progress: ProgressArg) -> Progress | None:
        if progress is True:
            return throttled(_stderr_progress, PROGRESS_INTERVAL, trio.current_time)
        if progress is False or progress is None:
            return None
        return progress

    # --- any console command ---------------------------------------------------------

    async def command(self, name: str, *args: str, progress: ProgressArg = None) -> dict[str, Any]:
        """Run console command ``name`` with its words ``args`` and return its reply
        (the dictionary ``python -m console --json`` prints).  A command that reads or
        writes a LOCAL path runs here; any other runs on the entry node (it is about
        that node, or the node forwards it to the leader), as the console's does.

        ``progress``: True shows a copy's progress on stderr, a callable
        ``(done, total, label)`` gets it.  Raises :class:`UsageError` for words that do
        not fit, :class:`Invalid` for a bad value, :class:`Refused` with the node's
        reason, :class:`Unreachable` when no usable reply came."""
        words = [str(a) for a in args]
        try:
            parsed = parse(name, words)
        except CommandError as e:
            raise (UsageError if e.usage else Invalid)(str(e)) from None
        if parsed.command.name == "help":
            return {"help": help_text(*parsed.values)}
        if parsed.where is Where.SHELL:
            raise UsageError(f"{name} only means something in the interactive console")
        report = self._progress(progress)
        if parsed.where is Where.CONSOLE:
            ctx = await self._context()
            with _reachable():
                try:
                    return await run(parsed, ctx, report)
                except CommandError as e:
                    raise Refused(str(e)) from None
        if self._entry is None:
            await self._context()
        assert self._entry is not None
        # The node throttles the progress frames it sends: show each.
        forwarded = _stderr_progress if progress is True else report
        with _reachable():
            return await self._ask(self._entry, name, words, forwarded)

    async def _ask(
        self, addr: Address, command: str, args: list[str], progress: Progress | None
    ) -> dict[str, Any]:
        """Send the command to the node; pass progress frames on until the reply comes.

        ``self.timeout`` bounds the silence, not the whole command: a 1 GB put reports
        progress as it goes and may take minutes."""
        from net import console_items
        from net.codec import Rejected
        from net.messages import (
            ConsoleItems,
            ConsoleProgress,
            ConsoleReply,
            ConsoleRequest,
            ErrorReply,
        )
        from net.rpc import open_connection

        timeout = self.timeout
        where = f"{addr[0]}:{addr[1]}"
        async with open_connection(addr, self._frames, timeout) as conn:
            try:
                await conn.send(ConsoleRequest(command, tuple(args)))
                pieces: list[ConsoleItems] = []  # a long list comes ahead of its reply
                while True:
                    msg = await conn.receive(timeout)
                    if isinstance(msg, ConsoleItems):
                        pieces.append(msg)
                    elif isinstance(msg, ConsoleProgress):
                        if progress is not None:
                            progress(msg.done, msg.total, msg.label)
                    else:
                        break
            except trio.TooSlowError:
                raise RpcError(f"{where} did not answer within {timeout:g} s") from None
            except EOFError:
                raise RpcError(
                    f"{where} closed the connection without answering "
                    "(it may be stopping, or use another cluster secret)"
                ) from None
            except Rejected as r:
                raise RpcError(
                    f"{where} sent a reply that was rejected ({r.reason}); "
                    "is the cluster secret the same?"
                ) from None
            except (OSError, trio.BrokenResourceError) as e:
                raise RpcError(f"{where}: connection lost: {e}") from None
        if isinstance(msg, ErrorReply):
            raise Refused(msg.error)
        if not isinstance(msg, ConsoleReply):
            raise RpcError(f"the node sent {type(msg).__name__}, not a console reply")
        if not msg.ok:
            raise Refused(msg.error or f"{command} failed")
        data = msg.data if isinstance(msg.data, dict) else {"result": msg.data}
        return console_items.merge(pieces, data) if pieces else data

    # --- membership ------------------------------------------------------------------

    async def members(self) -> Members:
        """``list_mem`` on the entry node: the live members and the leader."""
        return Members.from_dict(await self.command("list_mem"))

    # --- files (SDFS) ----------------------------------------------------------------

    async def put(self, local: LocalPath, name: str, progress: ProgressArg = None) -> PutResult:
        """Store the local file as a new version of SDFS file ``name``."""
        ctx = await self._context()
        with _reachable():
            return await ctx.sdfs.put(_local(local), name, self._progress(progress))

    async def put_dir(
        self, localdir: LocalPath, prefix: str, progress: ProgressArg = None
    ) -> list[str]:
        """Store every regular file under ``localdir`` as PREFIX/relative/path."""
        ctx = await self._context()
        with _reachable():
            return await ctx.sdfs.put_dir(_local(localdir), prefix, self._progress(progress))

    async def get(self, name: str, local: LocalPath, progress: ProgressArg = None) -> GetResult:
        """Fetch the newest version of ``name`` into the local file."""
        ctx = await self._context()
        with _reachable():
            return await ctx.sdfs.get(name, _local(local), self._progress(progress))

    async def get_versions(self, name: str, count: int, local: LocalPath) -> VersionsResult:
        """The last ``count`` versions, newest first, each behind a delimiter line."""
        ctx = await self._context()
        with _reachable():
            return await ctx.sdfs.get_versions(name, count, _local(local))

    async def ls(self, name: str) -> FileStatus:
        """Which nodes hold ``name``, and its versions."""
        ctx = await self._context()
        with _reachable():
            return await ctx.sdfs.ls(name)

    async def ls_all(self, glob: str = "*") -> list[str]:
        """The SDFS names that match ``glob``."""
        ctx = await self._context()
        with _reachable():
            return await ctx.sdfs.ls_all(glob)

    async def delete(self, name: str) -> None:
        """Delete every version of ``name``."""
        ctx = await self._context()
        with _reachable():
            await ctx.sdfs.delete(name)

    # --- inference (IDunno) ----------------------------------------------------------

    async def rates(self) -> dict[str, ModelRate]:
        """C1: per model, queries per second over the last 10 s and queries done."""
        ctx = await self._context()
        with _reachable():
            models = await ctx.inference.rates()
        return {m: ModelRate.from_dict(v) for m, v in models.items()}

    async def latency(self) -> dict[str, ModelLatency]:
        """C2: per model, the query processing time's mean, std and percentiles."""
        ctx = await self._context()
        with _reachable():
            models = await ctx.inference.latency()
        return {m: ModelLatency.from_dict(v) for m, v in models.items()}

    async def set_batch_size(self, model: str, batch: int) -> BatchSizeSet:
        """C3: batches of ``model`` hold up to ``batch`` queries from now on."""
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise Invalid(f"BATCH must be a whole number, got {batch!r}")
        ctx = await self._context()
        with _reachable():
            return await ctx.inference.set_batch_size(model, batch)

    async def assignments(self) -> dict[str, Assignment]:
        """C5: the workers each queued or running job is using."""
        ctx = await self._context()
        with _reachable():
            jobs = await ctx.inference.assignments()
        return {j: Assignment.from_dict(v) for j, v in jobs.items()}

    async def submit(self, model: str, glob_or_count: str | int | None = None) -> AsyncJob:
        """C4 submit-job: ``model`` over the SDFS files matching a glob (default the
        model's, ``images/*`` for an image model), or a random COUNT of them; for a
        grading model, the SDFS file of JSON Lines items."""
        if isinstance(glob_or_count, bool) or not isinstance(glob_or_count, (str, int, type(None))):
            raise Invalid(f"GLOB|COUNT must be a glob or a whole number, got {glob_or_count!r}")
        count = glob_or_count if isinstance(glob_or_count, int) else None
        pattern = glob_or_count if isinstance(glob_or_count, str) else None
        ctx = await self._context()
        with _reachable():
            job = await ctx.inference.submit(model, pattern, count)
        return AsyncJob(self, job.job_id, job.model, job.queries)

    def job(self, job_id: str) -> AsyncJob:
        """A handle on a job submitted before (its model and size come with status())."""
        return AsyncJob(self, job_id, "", -1)

    async def _status(self, job_id: str) -> JobStatus:
        ctx = await self._context()
        with _reachable():
            return await ctx.inference.status(job_id)

    async def _next_results(self, job_id: str, cursor: ResultCursor, poll: float) -> list[Row]:
        ctx = await self._context()
        with _reachable():
            return await ctx.inference.next_results(job_id, cursor, poll)

    async def _output(self, job_id: str, local: LocalPath, progress: ProgressArg) -> Output:
        ctx = await self._context()
        with _reachable():
            return await ctx.inference.get_output(job_id, _local(local), self._progress(progress))


def _stream(progress: bool | TextIO | None) -> TextIO | None:
    if progress is True:
        return sys.stderr
    if progress is False or progress is None:
        return None
    return progress


@dataclass(frozen=True)
class AsyncJob:
    """A submitted job.  ``model`` and ``queries`` are "" and -1 for a handle made with
    :meth:`AsyncClient.job` (``status()`` has them)."""

    client: AsyncClient = field(repr=False, compare=False)
    job_id: str
    model: str
    queries: int

    async def status(self) -> JobStatus:
        """C4 status (:class:`~net.errors.NotFound` for an unknown job)."""
        return await self.client._status(self.job_id)

    async def wait(
        self, progress: bool | TextIO | None = True, poll: float = WAIT_POLL
    ) -> JobStatus:
        """Return the job's final status (``done`` or ``failed``) once it has one,
        with a progress bar (done/total, rate, ETA) on stderr, or on the stream given:
        redrawn in place on a terminal, only its last line otherwise."""
        from inference.client import TERMINAL

        stream = _stream(progress)
        meter = JobMeter()
        while True:
            st = await self.status()
            rate, eta = meter.update(trio.current_time(), st.done, st.total)
            final = st.state in TERMINAL
            if stream is not None:
                label = f"{self.job_id} {st.model} {st.state}"
                show(stream, job_line(label, st.done, st.total, rate, eta), final)
            if final:
                return st
            await trio.sleep(poll)

    async def results(self, poll: float = RESULTS_POLL) -> AsyncIterator[Row]:
        """The job's result rows as its queries complete (``async for row in ...``),
        each once, as ``C4 get-output`` writes them; ends when the job is over."""
        from inference.client import ResultCursor

        cursor = ResultCursor()
        while not cursor.finished:
            for row in await self.client._next_results(self.job_id, cursor, poll):
                yield row

    async def output(self, local: LocalPath, progress: ProgressArg = None) -> Output:
        """C4 get-output: the finished job's results into a local JSON Lines file."""
        return await self.client._output(self.job_id, local, progress)
