"""``python -m introducer``: admit new members to the cluster.

Defaults to the introducer address of the cluster file (127.0.0.1:8888 for the
built-in cluster).  Before it admits anyone it asks the configured members for the
current membership, so a restarted introducer never hands out a stale view.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from config.topology import ConfigError, check_secret, load_config
from introducer.service import Introducer
from net.rpc import RpcServer
from node.process import first_os_error, setup_logging

log = logging.getLogger("introducer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m introducer", description=__doc__.splitlines()[0])
    p.add_argument("--hostname", help="address to bind (default: the cluster file's introducer)")
    p.add_argument("--port", type=int, help="TCP port (default: 8888 or the cluster file's)")
    p.add_argument("--config", help="TOML cluster file (default: built-in 10-node loopback)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


async def serve(introducer: Introducer, host: str, port: int) -> None:
    source = await introducer.refresh()
    if source:
        live = sum(1 for r in introducer.view.values() if r.status <= 1)
        log.info("learned the membership from %s: %d live members", source, live)
    else:
        log.info("no member answered: the cluster is empty until someone joins")
    server = RpcServer(introducer.codec, introducer.handle)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, host, port)
        log.info("introducer listening on %s:%d", host, port)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    host = args.hostname or config.introducer[0]
    port = args.port if args.port is not None else config.introducer[1]
    if not 1 <= port <= 65535:
        print(f"error: --port: {port} is outside 1..65535", file=sys.stderr)
        return 2
    # Before anything is bound or sent (refresh() asks the configured members).
    try:
        check_secret(config, *([("--hostname", host)] if args.hostname else []))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, None)
    try:
        trio.run(serve, Introducer(config), host, port)
    except (OSError, BaseExceptionGroup) as e:
        err = first_os_error(e)
        if err is None:
            raise
        print(f"error: cannot listen on {host}:{port}: {err.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
