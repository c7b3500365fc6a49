"""The node's HTTP face: the dashboard page, the JSON it polls, and ``/metrics``.

Routes (a starlette app, served on the node's own trio loop by :mod:`web.server`):

* ``/``: the dashboard, a static page (``web/static``, no CDN: everything it uses is
  in this package) that polls the JSON routes below and redraws itself.
* ``/api/...``: JSON for the page.  Handlers only read the node's state or ask the
  leader through the command table (:mod:`node.commands`), like a console.
* ``/metrics``: Prometheus' text format (:mod:`web.metrics`).

Access: on loopback (``[http] bind``, the default) anyone on this machine may look,
as with the console.  Bound anywhere else, every request must carry the dashboard
token (:func:`config.secret.dashboard_token`): ``?token=`` once (the page then keeps
it in a cookie), the cookie, or ``Authorization: Bearer TOKEN`` (Prometheus'
``bearer_token``).  Anything else gets 401 and one line saying how to get in.
"""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from web import metrics

if TYPE_CHECKING:
    from node.app import NodeApp

STATIC = Path(__file__).parent / "static"
COOKIE = "idunno_token"


class TokenGate(BaseHTTPMiddleware):
    """401 unless the request carries the token (see the module docstring)."""

    def __init__(self, app: Any, token: str) -> None:
        super().__init__(app)
        self.token = token

    def _ok(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        query = request.query_params.get("token")
        if self._ok(bearer) or self._ok(request.cookies.get(COOKIE)):
            return await call_next(request)
        if self._ok(query):
            response = await call_next(request)
            # The page's own requests carry the cookie from now on.
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
            return response
        return PlainTextResponse(
            "401: this dashboard needs its token: open /?token=TOKEN once, or send "
            "'Authorization: Bearer TOKEN' (python -m config.secret dashboard-token "
            "--config FILE prints it)\n",
            status_code=401,
        )


def build_app(node: NodeApp, token: str | None) -> Starlette:
    """The ASGI app for ``node``; ``token``: required on every request, or None (loopback)."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def members(request: Request) -> Response:
        view = node.list_mem()
        for m in view["members"]:
            configured = node.config.node_named(m["name"])
            m["http_port"] = configured.http_port if configured is not None else None
        return JSONResponse(view)

    registry = metrics.registry_for(node)

    async def prometheus(request: Request) -> Response:
        body, content_type = await metrics.exposition(registry)
        return Response(body, media_type=content_type)

    middleware = [] if token is None else [Middleware(TokenGate, token=token)]
    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/members", members),
            Route("/metrics", prometheus),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
    )
