"""Start one cluster node: ``python main.py --hostname HOST --port PORT``.

The node joins through the introducer at once.  With a terminal on stdin it opens
the interactive console; ``--no-console`` (or no terminal) runs it headless until
SIGINT/SIGTERM, which make it leave the cluster politely before it exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from config.topology import ConfigError, check_secret, load_config
from node.app import NodeApp
from node.process import first_os_error, setup_logging

log = logging.getLogger("main")

# Longest a polite stop (telling peers we leave) may take before the process exits.
SHUTDOWN_GRACE = 5.0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="main.py",
        description="Run one node of the cluster (membership, file store, inference worker).",
    )
    p.add_argument("--hostname", required=True, help="address to bind and to be known by")
    p.add_argument("--port", required=True, type=int, help="UDP and TCP port of this node")
    p.add_argument(
        "-t",
        "--test-mode",
        action="store_true",
        help="drop membership datagrams at random and count traffic (adds bps and fpr)",
    )
    p.add_argument(
        "--drop-rate",
        type=float,
        default=0.03,
        help="probability of dropping each datagram, in and out, in test mode (default 0.03)",
    )
    p.add_argument("--config", help="TOML cluster file (default: built-in 10-node loopback)")
    p.add_argument(
        "--data-dir", help="where this node keeps its files and log (default: data/NAME)"
    )
    p.add_argument("--no-console", action="store_true", help="run headless, without a console")
    p.add_argument(
        "--http-port",
        type=int,
        metavar="N",
        help="serve the dashboard at http://HOST:N/ and Prometheus metrics at /metrics "
        "(default: the node's http_port in the cluster file; none without one)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _safe_dirname(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


async def serve(app: NodeApp, interactive: bool, history: Path) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run)

        stopping: list[int] = []

        async def graceful() -> None:
            with trio.move_on_after(SHUTDOWN_GRACE):
                await app.shutdown()
            nursery.cancel_scope.cancel()

        async def on_signals() -> None:
            # The first signal leaves politely; a second one stops at once.
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if stopping:
                        log.warning("%s again: stopping without waiting", name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s: leaving the cluster and stopping", name)
                    stopping.append(signum)
                    nursery.start_soon(graceful)

        if interactive:
            from console.repl import run_interactive

            await run_interactive(app.execute, app.me.name, history)
            await app.shutdown()
            nursery.cancel_scope.cancel()
        else:
            nursery.start_soon(on_signals)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.port <= 65535:
        print(f"error: --port: {args.port} is outside 1..65535", file=sys.stderr)
        return 2
    if args.http_port is not None and not 1 <= args.http_port <= 65535:
        print(f"error: --http-port: {args.http_port} is outside 1..65535", file=sys.stderr)
        return 2
    if args.http_port is not None and args.http_port == args.port:
        print(f"error: --http-port: {args.http_port} is the node's own --port", file=sys.stderr)
        return 2
    if not 0.0 <= args.drop_rate < 1.0:
        print(f"error: --drop-rate: must be in [0, 1), got {args.drop_rate}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config)
        # Before anything is bound or sent: the public default secret only on loopback.
        check_secret(config, ("--hostname", args.hostname))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    me = config.node_for(args.hostname, args.port)
    data_dir = Path(args.data_dir) if args.data_dir else Path("data") / _safe_dirname(me.name)
    interactive = sys.stdin.isatty() and sys.stdout.isatty() and not args.no_console
    # With the console open, only warnings reach the terminal; everything goes to the log.
    setup_logging(
        args.log_level, data_dir / "node.log", "WARNING" if interactive else args.log_level
    )
    app = NodeApp(
        config,
        me,
        data_dir,
        test_mode=args.test_mode,
        drop_rate=args.drop_rate,
        http_port=args.http_port,
    )
    try:
        trio.run(serve, app, interactive, data_dir / "console_history")
    except (OSError, BaseExceptionGroup) as e:
        err = first_os_error(e)
        if err is None:
            raise
        print(
            f"error: cannot start {me.name} on {me.host}:{me.port}: {err.strerror}", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
