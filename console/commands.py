"""The console's command table: names, arguments and help, shared by every front end.

The interactive console (completion, ``help``, argument checks), the one-shot
``python -m console`` and the node that executes commands all read this one table,
so a command is described once.  This module is pure data plus argument parsing;
it imports nothing heavy.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


class CommandError(Exception):
    """A command that cannot run as given; the message is one line for a person."""


@dataclass(frozen=True)
class Arg:
    name: str
    help: str
    optional: bool = False

    @property
    def local_path(self) -> bool:
        """A path on the console's machine (LOCAL, LOCALDIR): completed as a path,
        and made absolute by the one-shot console before it is sent."""
        return self.name.startswith("LOCAL")


_SDFSNAME = Arg("SDFSNAME", "a file name in SDFS, like images/cat.jpg")


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    args: tuple[Arg, ...] = ()
    group: str = "membership"
    test_mode_only: bool = False
    # Run by the console itself, not sent to a node.
    local: bool = False
    # For commands with sub-actions (C4): the argument that is a LOCAL path, by action.
    local_arg_by_action: tuple[tuple[str, int], ...] = ()

    def local_path_args(self, args: list[str]) -> set[int]:
        """Positions of ``args`` that name files where the console runs."""
        found = {i for i, a in enumerate(self.args[: len(args)]) if a.local_path}
        for action, index in self.local_arg_by_action:
            if args and args[0] == action and index < len(args):
                found.add(index)
        return found

    @property
    def usage(self) -> str:
        parts = [self.name]
        for a in self.args:
            parts.append(f"[{a.name}]" if a.optional else a.name)
        return " ".join(parts)

    @property
    def min_args(self) -> int:
        return sum(1 for a in self.args if not a.optional)


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("join", "join the cluster through the introducer"),
        Command("leave", "leave the cluster (the process keeps running)"),
        Command("list_mem", "list the live members, their status and the leader"),
        Command("list_self", "show this node's name, address and incarnation"),
        Command("bps", "bytes sent and received per second (test mode)", test_mode_only=True),
        Command(
            "fpr",
            "false-positive rate of this node's failure detection (test mode)",
            test_mode_only=True,
        ),
        Command(
            "put",
            "store a local file in SDFS as a new version",
            (Arg("LOCAL", "the local file"), _SDFSNAME),
            group="sdfs",
        ),
        Command(
            "put-dir",
            "store every regular file under a local directory, named PREFIX/relative/path",
            (Arg("LOCALDIR", "the local directory"), Arg("PREFIX", "SDFS name prefix")),
            group="sdfs",
        ),
        Command(
            "get",
            "fetch the newest version of an SDFS file",
            (_SDFSNAME, Arg("LOCAL", "where to write it")),
            group="sdfs",
        ),
        Command("delete", "delete every version of an SDFS file", (_SDFSNAME,), group="sdfs"),
        Command(
            "ls", "show which nodes hold an SDFS file, and its versions", (_SDFSNAME,), group="sdfs"
        ),
        Command(
            "ls-all",
            "list the SDFS files (matching a glob such as 'images/*')",
            (Arg("GLOB", "a shell-style pattern (default *)", optional=True),),
            group="sdfs",
        ),
        Command("store", "list the SDFS files this node holds", group="sdfs"),
        Command(
            "get-versions",
            "fetch the last N versions, newest first, each behind a delimiter line",
            (_SDFSNAME, Arg("N", "how many versions"), Arg("LOCAL", "where to write them")),
            group="sdfs",
        ),
        Command("C1", "query rate (last 10 s) and queries done, per model", group="inference"),
        Command(
            "C2",
            "query processing time per model: mean, std, median, p90, p95, p99",
            group="inference",
        ),
        Command(
            "C3",
            "set a model's batch size",
            (Arg("MODEL", "resnet50 or inception_v3"), Arg("BATCH", "queries per batch")),
            group="inference",
        ),
        Command(
            "C4",
            "jobs: submit-job MODEL [GLOB|COUNT] | status JOB_ID | get-output JOB_ID LOCAL",
            (
                Arg("ACTION", "submit-job, status or get-output"),
                Arg("ARG", "the MODEL (submit-job) or the JOB_ID"),
                Arg(
                    "ARG2",
                    "submit-job: a glob of SDFS inputs (default images/*) or a COUNT of "
                    "random ones; get-output: the LOCAL file for the results",
                    optional=True,
                ),
            ),
            group="inference",
            local_arg_by_action=(("get-output", 2),),
        ),
        Command("C5", "the workers each running job is using", group="inference"),
        Command(
            "help",
            "list the commands, or explain one",
            (Arg("COMMAND", "a command name", optional=True),),
            group="console",
            local=True,
        ),
        # exit and quit only mean something to the interactive console: it ends, and
        # the node process then leaves the cluster and stops.
        Command(
            "exit",
            "close the console; the node leaves the cluster and stops",
            group="console",
            local=True,
        ),
        Command("quit", "same as exit", group="console", local=True),
    )
}


def parse_line(line: str) -> tuple[str, list[str]] | None:
    """Split a console line into (command, args); None for an empty line."""
    try:
        words = shlex.split(line)
    except ValueError as e:
        raise CommandError(f"cannot parse the line: {e}") from None
    if not words:
        return None
    return words[0], words[1:]


def check(name: str, args: list[str]) -> Command:
    """The command named ``name`` if ``args`` fit it; CommandError otherwise."""
    cmd = COMMANDS.get(name)
    if cmd is None:
        raise CommandError(f"unknown command {name!r}; type 'help' for the list")
    if len(args) < cmd.min_args or len(args) > len(cmd.args):
        raise CommandError(f"usage: {cmd.usage}")
    return cmd


def help_text(name: str | None = None) -> str:
    if name:
        cmd = COMMANDS.get(name)
        if cmd is None:
            raise CommandError(f"unknown command {name!r}; type 'help' for the list")
        lines = [f"{cmd.usage}", f"  {cmd.summary}"]
        lines += [f"  {a.name}: {a.help}" for a in cmd.args]
        if cmd.test_mode_only:
            lines.append("  (only on a node started with -t)")
        return "\n".join(lines)
    width = max(len(c.usage) for c in COMMANDS.values())
    return "\n".join(f"  {c.usage:<{width}}  {c.summary}" for c in COMMANDS.values())
