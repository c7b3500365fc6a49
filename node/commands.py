"""The command table: every console command, declared once.

Each :class:`Command` has a name, typed arguments (each :class:`Arg` parses its text
and checks its range), where it runs, and a handler.  The interactive console, the
one-shot ``python -m console`` and the node that serves console requests all read
this table: completion and ``help`` come from it, :func:`parse` turns words into
typed values once per process, and :func:`run` calls the handler.  This is the only
place a console error (:class:`CommandError`) is made: handlers call the typed APIs
(``sdfs.client``, ``inference.client``, the node's membership) and a
:class:`~net.errors.ClusterError` they raise becomes one line here.

Where a command runs (:class:`Where`):

* CONSOLE: where the console is.  Commands that read or write a LOCAL path (put,
  put-dir, get, get-versions, C4 get-output) run in the console's own process, which
  streams the bytes to or from the cluster itself.  A node refuses them when they
  arrive in a request: a node never opens a path named by someone else.
* NODE: on the node the console talks to (membership, what it stores, lookups it
  forwards to the leader through the typed clients).
* LEADER: on the node, which asks the leader with a typed request
  (``call_leader``, retried while leadership moves).
* SHELL: the console itself, no cluster (help, exit, quit).

Scripts call ``python -m console`` in loops, so importing this module must stay
cheap: the typed clients are only named for type checking.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import re
import shlex
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from net.errors import ClusterError
from net.limits import MAX_BATCH, MAX_COUNT
from net.progress import Progress
from sdfs.names import BadName, check_name

if TYPE_CHECKING:
    from inference.client import InferenceClient
    from sdfs.client import SdfsClient


class CommandError(Exception):
    """A command that cannot run as given; the message is one line for a person.

    ``usage`` is true when the words do not fit the command at all (unknown command,
    wrong number of arguments), false when they fit but a value or the cluster
    refused it."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


class Where(enum.Enum):
    CONSOLE = "console"
    NODE = "node"
    LEADER = "leader"
    SHELL = "shell"


# --- argument types ------------------------------------------------------------------

# Bounds on numbers from outside: what a person could mean, with room to spare.
# MAX_BATCH and MAX_COUNT (net.limits) are checked again where peers' requests arrive.
MAX_VERSIONS = 1000
_DIGITS = re.compile(r"[0-9]{1,12}")  # ASCII only: "²".isdigit() is true in Python


def text(value: str) -> str:
    return value


def sdfs_name(value: str) -> str:
    return check_name(value)


def local_path(value: str) -> Path:
    """A path on the console's machine: relative to its working directory, ~ expanded."""
    if "\0" in value:
        raise ValueError("local path contains a NUL character")
    return Path(value).expanduser()


def whole_number(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not _DIGITS.fullmatch(value) or not lo <= int(value) <= hi:
            raise ValueError(f"must be a whole number from {lo} to {hi}, got {value!r}")
        return int(value)

    return parse


def glob_or_count(value: str) -> str | int:
    """``C4 submit-job``'s selector: a COUNT of random inputs, or a GLOB of SDFS names."""
    # Any digits at all mean a COUNT (refused unless ASCII): a glob of "٣" is a typo.
    if _DIGITS.fullmatch(value) or value.isdigit():
        return whole_number(1, MAX_COUNT)(value)
    return value


@dataclass(frozen=True)
class Arg:
    name: str
    help: str
    parse: Callable[[str], Any] = text
    optional: bool = False

    @property
    def local_path(self) -> bool:
        """A path on the console's machine (LOCAL, LOCALDIR): completed as a path."""
        return self.name.startswith("LOCAL")


# --- what handlers are given --------------------------------------------------------


class NodeOps(Protocol):
    """What the node a console talks to does itself (membership, its own store)."""

    test_mode: bool

    async def join(self) -> None: ...
    async def leave(self) -> None: ...
    def list_mem(self) -> dict[str, Any]: ...
    def list_self(self) -> dict[str, Any]: ...
    def bps(self) -> dict[str, Any]: ...
    def fpr(self) -> dict[str, Any]: ...
    def stored(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Context:
    """What a handler may use: the typed clients, and the node (None in a console that
    runs outside the cluster, which only runs CONSOLE commands)."""

    sdfs: SdfsClient
    node: NodeOps | None
    inference: InferenceClient


Handler = Callable[..., Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    args: tuple[Arg, ...] = ()
    where: Where = Where.NODE
    handler: Handler | None = None
    test_mode_only: bool = False
    # For commands with sub-actions (C4): the first argument picks one of these.
    actions: Mapping[str, Command] = field(default_factory=dict)

    @property
    def usage(self) -> str:
        if self.actions:
            return f"{self.name} " + " | ".join(
                a.usage.removeprefix(f"{self.name} ") for a in self.actions.values()
            )
        parts = [self.name]
        for a in self.args:
            parts.append(f"[{a.name}]" if a.optional else a.name)
        return " ".join(parts)

    @property
    def min_args(self) -> int:
        return sum(1 for a in self.args if not a.optional)

    def local_path_args(self, args: list[str]) -> set[int]:
        """Positions of ``args`` that name files where the console runs (for completion)."""
        if self.actions:
            action = self.actions.get(args[0]) if args else None
            return {i + 1 for i in action.local_path_args(args[1:])} if action else set()
        return {i for i, a in enumerate(self.args[: len(args)]) if a.local_path}


@dataclass(frozen=True)
class Parsed:
    command: Command  # the action itself for C4
    values: tuple[Any, ...]

    @property
    def where(self) -> Where:
        return self.command.where


# --- handlers ------------------------------------------------------------------------


def _node(ctx: Context) -> NodeOps:
    if ctx.node is None:
        raise ClusterError("this command runs on a node")
    return ctx.node


async def _join(ctx: Context) -> dict[str, Any]:
    await _node(ctx).join()
    return {"ok": True}


async def _leave(ctx: Context) -> dict[str, Any]:
    await _node(ctx).leave()
    return {"ok": True}


async def _list_mem(ctx: Context) -> dict[str, Any]:
    return _node(ctx).list_mem()


async def _list_self(ctx: Context) -> dict[str, Any]:
    return _node(ctx).list_self()


async def _bps(ctx: Context) -> dict[str, Any]:
    return _node(ctx).bps()


async def _fpr(ctx: Context) -> dict[str, Any]:
    return _node(ctx).fpr()


async def _store(ctx: Context) -> dict[str, Any]:
    return _node(ctx).stored()


async def _put(ctx: Context, local: Path, name: str, progress: Progress | None) -> dict[str, Any]:
    r = await ctx.sdfs.put(local, name, progress)
    return {"name": r.name, "version": r.version, "replicas": list(r.replicas), "bytes": r.bytes}


async def _put_dir(
    ctx: Context, localdir: Path, prefix: str, progress: Progress | None
) -> dict[str, Any]:
    return {"files": await ctx.sdfs.put_dir(localdir, prefix, progress)}


async def _get(ctx: Context, name: str, local: Path, progress: Progress | None) -> dict[str, Any]:
    r = await ctx.sdfs.get(name, local, progress)
    return {"name": r.name, "version": r.version, "bytes": r.bytes}


async def _get_versions(
    ctx: Context, name: str, count: int, local: Path, progress: Progress | None
) -> dict[str, Any]:
    r = await ctx.sdfs.get_versions(name, count, local)
    return {"name": r.name, "versions": list(r.versions)}


async def _delete(ctx: Context, name: str) -> dict[str, Any]:
    await ctx.sdfs.delete(name)
    return {"ok": True}


async def _ls(ctx: Context, name: str) -> dict[str, Any]:
    s = await ctx.sdfs.ls(name)
    return {
        "name": s.name,
        "replicas": list(s.replicas),
        "versions": list(s.versions),
        "bytes": s.bytes,
    }


async def _ls_all(ctx: Context, pattern: str = "*") -> dict[str, Any]:
    return {"files": await ctx.sdfs.ls_all(pattern)}


async def _c1(ctx: Context) -> dict[str, Any]:
    return {"models": await ctx.inference.rates()}


async def _c2(ctx: Context) -> dict[str, Any]:
    return {"models": await ctx.inference.latency()}


async def _c3(ctx: Context, model: str, batch: int) -> dict[str, Any]:
    done = await ctx.inference.set_batch_size(model, batch)
    return {"model": done.model, "batch_size": done.batch_size}


async def _submit(ctx: Context, model: str, which: str | int | None = None) -> dict[str, Any]:
    count = which if isinstance(which, int) else None
    pattern = which if isinstance(which, str) else None
    job = await ctx.inference.submit(model, pattern, count)
    return {"job_id": job.job_id, "model": job.model, "queries": job.queries}


async def _status(ctx: Context, job_id: str) -> dict[str, Any]:
    return dataclasses.asdict(await ctx.inference.status(job_id))


async def _get_output(
    ctx: Context, job_id: str, local: Path, progress: Progress | None
) -> dict[str, Any]:
    out = await ctx.inference.get_output(job_id, local, progress)
    return {"job_id": out.job_id, "results": out.results, "state": out.state}


async def _c5(ctx: Context) -> dict[str, Any]:
    return {"jobs": await ctx.inference.assignments()}


async def _models(ctx: Context) -> dict[str, Any]:
    _node(ctx)  # the node's registry: its cluster file's grading models, its plug-ins
    from inference import kinds  # torch-free, but not for the console to import

    return kinds.catalogue()


async def _plot(ctx: Context, job_id: str, localdir: Path) -> dict[str, Any]:
    if localdir.exists() and not localdir.is_dir():
        raise ClusterError(f"{localdir} is not a directory")
    try:
        localdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClusterError(f"cannot create {localdir}: {e.strerror or e}") from None
    if not os.access(localdir, os.W_OK | os.X_OK):
        raise ClusterError(f"cannot write in {localdir}: permission denied")
    rows = await ctx.inference.timings(job_id)
    import trio  # not at the top: `python -m console help` stays light

    from inference import plots  # matplotlib: only where plots are drawn

    try:
        files = await trio.to_thread.run_sync(plots.draw, rows, localdir, job_id)
    except ValueError as e:
        raise ClusterError(str(e)) from None
    except OSError as e:
        raise ClusterError(f"cannot write the plots in {localdir}: {e.strerror or e}") from None
    spans = plots.spans(rows)
    return {
        "job_id": job_id,
        "files": [str(f) for f in files],
        "queries": len(rows),
        "batches": len(spans),
        "workers": sorted({s.worker for s in spans}),
    }


# Commands whose handler takes the progress callback as its last argument.
_WITH_PROGRESS = ("put", "put-dir", "get", "get-versions", "C4 get-output")

_SDFSNAME = Arg("SDFSNAME", "a file name in SDFS, like images/cat.jpg", sdfs_name)
_LOCAL_OUT = Arg("LOCAL", "where to write it", local_path)


def _c4_actions() -> dict[str, Command]:
    def act(
        name: str, summary: str, args: tuple[Arg, ...], where: Where, handler: Handler
    ) -> Command:
        return Command(f"C4 {name}", summary, args, where, handler)

    return {
        "submit-job": act(
            "submit-job",
            "submit a job over SDFS inputs",
            (
                Arg("MODEL", "a model name, like resnet50, or a grading model; see 'models'"),
                Arg(
                    "GLOB|COUNT",
                    "a glob of SDFS inputs (default images/*) or a COUNT of random ones; "
                    "for a grading model, the SDFS file of JSON Lines items",
                    glob_or_count,
                    optional=True,
                ),
            ),
            Where.LEADER,
            _submit,
        ),
        "status": act(
            "status", "a job's progress", (Arg("JOB_ID", "the job"),), Where.LEADER, _status
        ),
        "get-output": act(
            "get-output",
            "write a finished job's results to a local JSON Lines file",
            (Arg("JOB_ID", "the job"), Arg("LOCAL", "the local file for the results", local_path)),
            Where.CONSOLE,
            _get_output,
        ),
    }


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("join", "join the cluster through the introducer", handler=_join),
        Command("leave", "leave the cluster (the process keeps running)", handler=_leave),
        Command(
            "list_mem", "list the live members, their status and the leader", handler=_list_mem
        ),
        Command("list_self", "show this node's name, address and incarnation", handler=_list_self),
        Command(
            "bps",
            "bytes sent and received per second (test mode)",
            handler=_bps,
            test_mode_only=True,
        ),
        Command(
            "fpr",
            "false-positive rate of this node's failure detection (test mode)",
            handler=_fpr,
            test_mode_only=True,
        ),
        Command(
            "put",
            "store a local file in SDFS as a new version",
            (Arg("LOCAL", "the local file", local_path), _SDFSNAME),
            Where.CONSOLE,
            _put,
        ),
        Command(
            "put-dir",
            "store every regular file under a local directory, named PREFIX/relative/path",
            (Arg("LOCALDIR", "the local directory", local_path), Arg("PREFIX", "SDFS name prefix")),
            Where.CONSOLE,
            _put_dir,
        ),
        Command(
            "get",
            "fetch the newest version of an SDFS file",
            (_SDFSNAME, _LOCAL_OUT),
            Where.CONSOLE,
            _get,
        ),
        Command(
            "delete",
            "delete every version of an SDFS file",
            (_SDFSNAME,),
            Where.LEADER,
            _delete,
        ),
        Command(
            "ls",
            "show which nodes hold an SDFS file, and its versions",
            (_SDFSNAME,),
            Where.LEADER,
            _ls,
        ),
        Command(
            "ls-all",
            "list the SDFS files (matching a glob such as 'images/*')",
            (Arg("GLOB", "a shell-style pattern (default *)", optional=True),),
            Where.LEADER,
            _ls_all,
        ),
        Command("store", "list the SDFS files this node holds", handler=_store),
        Command(
            "get-versions",
            "fetch the last N versions, newest first, each behind a delimiter line",
            (
                _SDFSNAME,
                Arg("N", "how many versions", whole_number(1, MAX_VERSIONS)),
                Arg("LOCAL", "where to write them", local_path),
            ),
            Where.CONSOLE,
            _get_versions,
        ),
        Command(
            "C1",
            "query rate (last 10 s) and queries done, per model",
            where=Where.LEADER,
            handler=_c1,
        ),
        Command(
            "C2",
            "query processing time per model: mean, std, median, p90, p95, p99",
            where=Where.LEADER,
            handler=_c2,
        ),
        Command(
            "C3",
            "set a model's batch size",
            (
                Arg("MODEL", "a model name, like resnet50; see 'models'"),
                Arg("BATCH", "queries per batch", whole_number(1, MAX_BATCH)),
            ),
            Where.LEADER,
            _c3,
        ),
        Command(
            "C4",
            "jobs: submit-job, status, get-output",
            where=Where.LEADER,
            actions=_c4_actions(),
        ),
        Command(
            "C5",
            "the workers each running job is using",
            where=Where.LEADER,
            handler=_c5,
        ),
        Command(
            "models",
            "list the model names C3 and C4 accept, by job kind",
            handler=_models,
        ),
        Command(
            "plot",
            "draw a job's busy workers and throughput from the timing log (PNG files)",
            (
                Arg("JOB_ID", "the job"),
                Arg("LOCALDIR", "the local directory for busy.png and throughput.png", local_path),
            ),
            Where.CONSOLE,
            _plot,
        ),
        Command(
            "help",
            "list the commands, or explain one",
            (Arg("COMMAND", "a command name", optional=True),),
            Where.SHELL,
            None,
        ),
        # exit and quit only mean something to the interactive console: it ends, and
        # the node process then leaves the cluster and stops.
        Command(
            "exit",
            "close the console; the node leaves the cluster and stops",
            where=Where.SHELL,
        ),
        Command("quit", "same as exit", where=Where.SHELL),
    )
}


# --- parsing and running ---------------------------------------------------------------


def parse_line(line: str) -> tuple[str, list[str]] | None:
    """Split a console line into (command, args); None for an empty line."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise CommandError(f"cannot parse the line: {e}", usage=True) from None
    if not words:
        return None
    return words[0], words[1:]


def lookup(name: str) -> Command:
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise CommandError(f"unknown command {name!r}; type 'help' for the list", usage=True)
    return cmd


def parse(name: str, args: list[str]) -> Parsed:
    """The command and its typed argument values; CommandError if they do not fit."""
    cmd = lookup(name)
    if cmd.actions:
        action = cmd.actions.get(args[0]) if args else None
        if action is None:
            if args:
                choices = ", ".join(cmd.actions)
                raise CommandError(f"unknown {name} action {args[0]!r}: {choices}", usage=True)
            raise CommandError(f"usage: {cmd.usage}", usage=True)
        cmd, args = action, args[1:]
    if len(args) < cmd.min_args or len(args) > len(cmd.args):
        raise CommandError(f"usage: {cmd.usage}", usage=True)
    values = []
    for arg, word in zip(cmd.args, args, strict=False):
        try:
            values.append(arg.parse(word))
        except BadName as e:
            raise CommandError(str(e)) from None
        except ValueError as e:
            raise CommandError(f"{arg.name} {e}") from None
    return Parsed(cmd, tuple(values))


async def run(
    parsed: Parsed, ctx: Context, progress: Progress | None = None, *, remote: bool = False
) -> dict[str, Any]:
    """Call the handler; a ClusterError becomes a CommandError (one line).

    ``remote``: the command came in a request from a console elsewhere, so one that
    reads or writes a LOCAL path is refused: that console runs it itself."""
    cmd = parsed.command
    if remote and cmd.where is Where.CONSOLE:
        raise CommandError(
            f"{cmd.name} reads or writes a file where the console runs, so the console does "
            "it and streams the bytes; nodes never open a local path named in a request"
        )
    if cmd.name == "help":
        return {"help": help_text(*parsed.values)}
    if cmd.handler is None:  # exit, quit: the interactive console answers them itself
        raise CommandError(f"{cmd.name} is a console command; nodes do not run it")
    node = ctx.node
    if cmd.test_mode_only and node is not None and not node.test_mode:
        raise CommandError(f"{cmd.name} is only available in test mode (start the node with -t)")
    args: tuple[Any, ...] = parsed.values
    if cmd.name in _WITH_PROGRESS:
        args = (*args, progress)
    try:
        return await cmd.handler(ctx, *args)
    except ClusterError as e:
        raise CommandError(str(e)) from None


def help_text(name: str | None = None) -> str:
    if name:
        cmd = lookup(name)
        lines = [f"{cmd.usage}", f"  {cmd.summary}"]
        for action in cmd.actions.values():
            lines.append(f"  {action.usage}: {action.summary}")
            lines += [f"    {a.name}: {a.help}" for a in action.args]
        lines += [f"  {a.name}: {a.help}" for a in cmd.args]
        if cmd.test_mode_only:
            lines.append("  (only on a node started with -t)")
        return "\n".join(lines)
    # One row per action (C4 submit-job, C4 status, ...), so the columns stay narrow.
    rows = [a for c in COMMANDS.values() for a in (c.actions.values() if c.actions else (c,))]
    width = max(len(c.usage) for c in rows)
    return "\n".join(f"  {c.usage:<{width}}  {c.summary}" for c in rows)
