"""One console command against a running node: ``python -m console --node HOST:PORT CMD``.

Prints what the interactive console would print (or, with ``--json``, the reply's
data as one JSON line) and exits with:

    0  the command succeeded
    1  the node refused or failed the command (the reason is on stderr)
    2  usage: unknown command, wrong arguments, bad --node, --config or --timeout,
       or a secret unfit for the addresses (the public default beyond loopback)
    3  no usable reply: the node is unreachable, too slow, or uses another secret

Scripts call this in loops, so it imports only what one request needs; ``help`` is
answered from the local command table without contacting a node.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from typing import Any

from console.render import render
from node.commands import CommandError, Where, help_text, parse

EXIT_OK = 0
EXIT_COMMAND = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# Long enough for a join (the node waits up to 5 s for the introducer) or a
# forwarded request; an unreachable node is still reported at once (refused).
DEFAULT_TIMEOUT = 60.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m console",
        description="Run one console command on a running node and print its reply.",
        epilog="Options go before COMMAND; everything after it is passed to the command. "
        "'python -m console help' lists the commands.",
    )
    p.add_argument("--node", metavar="HOST:PORT", help="the node to ask (any member will do)")
    p.add_argument("--json", action="store_true", help="print the reply as one line of JSON")
    p.add_argument("--config", metavar="FILE", help="TOML cluster file (for the secret)")
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds to wait for the node to answer or report progress "
        f"(default {DEFAULT_TIMEOUT:g})",
    )
    p.add_argument("command", metavar="COMMAND", nargs="?", help="a console command, e.g. list_mem")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG", help="its arguments")
    return p


_OPTIONS = ("--node", "--json", "--config", "--timeout")


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _emit(command: str, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, default=str))
    else:
        print(render(command, data))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    opts = parser.parse_args(argv)
    if opts.command is None:
        parser.error("a COMMAND is needed ('help' lists them)")
    command: str = opts.command
    args: list[str] = list(opts.args)

    try:
        parsed = parse(command, args)
        if command == "help":
            _emit(command, {"help": help_text(*parsed.values)}, opts.json)
            return EXIT_OK
    except CommandError as e:
        misplaced = [a for a in args if a.split("=", 1)[0] in _OPTIONS]
        if misplaced and e.usage:
            return _fail(f"{e} ({misplaced[0]} must come before {command})", EXIT_USAGE)
        return _fail(str(e), EXIT_USAGE if e.usage else EXIT_COMMAND)
    if parsed.where is Where.SHELL:
        return _fail(f"{command} only means something in the interactive console", EXIT_USAGE)

    from config.topology import ConfigError, check_secret, load_config, parse_address

    if opts.node is None:
        return _fail("--node HOST:PORT is required to run a command on a node", EXIT_USAGE)
    if not opts.timeout > 0:
        return _fail(f"--timeout: must be positive, got {opts.timeout:g}", EXIT_USAGE)
    try:
        addr = parse_address(opts.node, "--node")
        config = load_config(opts.config)
        # Before anything is sent: the public default secret only on loopback.
        check_secret(config, ("--node", addr[0]))
    except ConfigError as e:
        return _fail(str(e), EXIT_USAGE)

    # The client does the rest, as for any script (one code path): it runs a command
    # that reads or writes a LOCAL path here and sends the others to the node.
    import trio

    from idunno.client import AsyncClient
    from idunno.errors import ClusterError, Unreachable, UsageError

    try:
        client = AsyncClient(config, addr, timeout=opts.timeout)
        data = trio.run(partial(client.command, command, *args, progress=True))
    except Unreachable as e:
        return _fail(str(e), EXIT_UNREACHABLE)
    except UsageError as e:
        return _fail(str(e), EXIT_USAGE)
    except ClusterError as e:
        return _fail(str(e), EXIT_COMMAND)
    except KeyboardInterrupt:
        return 130
    try:
        _emit(command, data, opts.json)
    except BrokenPipeError:
        # `... | head`: the reader left, which is not our failure; keep the
        # interpreter's final flush from complaining about it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
