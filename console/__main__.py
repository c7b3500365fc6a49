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
from typing import Any

from console.render import render
from node.commands import CommandError, Parsed, Where, help_text, parse

EXIT_OK = 0
EXIT_COMMAND = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

# How often a copy's progress line is redrawn.
PROGRESS_INTERVAL = 0.25

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


async def _ask(
    addr: tuple[str, int], secret: bytes, command: str, args: list[str], timeout: float
) -> Any:
    """Send the command; show progress frames until the reply comes.

    ``timeout`` bounds the silence, not the whole command: a 1 GB put reports
    progress as it goes and may take minutes.
    """
    import trio

    from console.render import show_progress
    from net import console_items
    from net.codec import Rejected
    from net.messages import ConsoleItems, ConsoleProgress, ConsoleReply, ConsoleRequest
    from net.rpc import RpcError, frame_codec, open_connection

    async with open_connection(addr, frame_codec(secret), timeout) as conn:
        try:
            await conn.send(ConsoleRequest(command, tuple(args)))
            pieces: list[ConsoleItems] = []  # a long list comes ahead of its reply
            while True:
                msg = await conn.receive(timeout)
                if isinstance(msg, ConsoleItems):
                    pieces.append(msg)
                    continue
                if not isinstance(msg, ConsoleProgress):
                    if isinstance(msg, ConsoleReply) and pieces:
                        return ConsoleReply(
                            msg.ok, console_items.merge(pieces, msg.data), msg.error
                        )
                    return msg
                show_progress(sys.stderr, msg.done, msg.total, msg.label)
        except trio.TooSlowError:
            raise RpcError(f"{addr[0]}:{addr[1]} did not answer within {timeout:g} s") from None
        except EOFError:
            raise RpcError(
                f"{addr[0]}:{addr[1]} closed the connection without answering "
                "(it may be stopping, or use another cluster secret)"
            ) from None
        except Rejected as r:
            raise RpcError(
                f"{addr[0]}:{addr[1]} sent a reply that was rejected ({r.reason}); "
                "is the cluster secret the same?"
            ) from None
        except (OSError, trio.BrokenResourceError) as e:
            raise RpcError(f"{addr[0]}:{addr[1]}: connection lost: {e}") from None


async def _run_here(
    addr: tuple[str, int], config: Any, parsed: Parsed, timeout: float
) -> dict[str, Any]:
    """Run a command that reads or writes LOCAL files in this process.

    The console is an SDFS client of its own: it learns the members from the node it
    was given, asks the leader for grants and locations, and streams the bytes to and
    from the nodes' transfer ports (authenticated with the cluster secret), so the
    nodes never open a path named by this console."""
    import trio

    from console.render import show_progress
    from inference.client import InferenceClient
    from membership.remote import RemoteView
    from net.errors import ClusterError
    from net.progress import throttled
    from net.rpc import RpcError, frame_codec
    from node.commands import Context, run
    from node.sdfs_files import SdfsFiles
    from sdfs.client import SdfsClient
    from sdfs.copies import PeerDirectory
    from sdfs.transfer import TcpTransfer

    frames = frame_codec(config.secret_bytes)
    view = RemoteView(addr, frames)
    try:
        await view.refresh()
    except ClusterError as e:  # the node is unreachable or not in the cluster
        raise RpcError(str(e)) from None
    tcp = TcpTransfer(frames)
    peers = PeerDirectory(view, config, ask=False)  # tcp only: the servers resolve names
    sdfs = SdfsClient(view, peers, lambda node: tcp, config.replication)

    def progress(done: int, total: int, label: str) -> None:
        show_progress(sys.stderr, done, total, label)

    ctx = Context(sdfs, None, InferenceClient(view, SdfsFiles(sdfs)))
    return await run(parsed, ctx, throttled(progress, PROGRESS_INTERVAL, trio.current_time))


def _data(reply: Any, command: str) -> dict[str, Any]:
    """A ConsoleReply's data; CommandError for a refusal, RpcError for anything else."""
    from net.messages import ConsoleReply, ErrorReply
    from net.rpc import RpcError

    if isinstance(reply, ErrorReply):
        raise CommandError(reply.error)
    if not isinstance(reply, ConsoleReply):
        raise RpcError(f"the node sent {type(reply).__name__}, not a console reply")
    if not reply.ok:
        raise CommandError(reply.error or f"{command} failed")
    return reply.data if isinstance(reply.data, dict) else {"result": reply.data}


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

    import trio

    from net.rpc import RpcError

    try:
        if parsed.where is Where.CONSOLE:
            data = trio.run(_run_here, addr, config, parsed, opts.timeout)
        else:
            reply = trio.run(_ask, addr, config.secret_bytes, command, args, opts.timeout)
            data = _data(reply, command)
    except RpcError as e:
        return _fail(str(e), EXIT_UNREACHABLE)
    except CommandError as e:
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
