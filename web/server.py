"""Serve an ASGI app on the node's trio loop with hypercorn.

The socket is bound here, before hypercorn sees it, so that a taken or forbidden
HTTP port fails the node's start with an error naming that port (not the node's
own), and is handed to hypercorn by file descriptor (its ``fd://`` bind).
Hypercorn's own log lines go to the ``web.http`` logger, access logs nowhere: a
dashboard polls every second and would drown the node's log.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on host:port; OSError naming the HTTP port if not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"{e.strerror} (http port {host}:{port})") from None
    return sock


async def serve(
    app: Any,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on host:port until cancelled (started once it listens)."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    sock = bind_socket(host, port)
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("web.http")
    # A dashboard's requests are small; an idle connection is dropped after this.
    config.keep_alive_timeout = 30
    # Stopping the node does not wait long for open requests (a browser's poll).
    config.graceful_timeout = 1
    await hypercorn_serve(app, config, task_status=task_status)
