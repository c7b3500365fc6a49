"""The node's HTTP face: the dashboard page, the JSON it polls, and ``/metrics``.

Routes (a starlette app, served on the node's own trio loop by :mod:`web.server`):

* ``/``: the dashboard, a static page (``web/static``, no CDN: everything it uses is
  in this package) that polls the JSON routes below and redraws itself.
* ``/api/members``: this node's membership list (``list_mem``), each member with its
  HTTP port (from the cluster file; None where it has none), so the page can move to
  another member's dashboard when this node dies; and ``configured``, every node of
  the cluster file in ring order.
* ``/api/dashboard[?files=N]``: what the leader knows (jobs, workers, rates over time,
  latency, busy spans, SDFS per node and per file), fetched from the current leader
  by this node (:mod:`node.dashboard`: bounded, cached for half a second); 503 and
  ``{"error": ONE LINE}`` while no leader answers.
* ``/metrics``: Prometheus' text format (:mod:`web.metrics`).

Access: on loopback (``[http] bind``, the default) anyone on this machine may look,
as with the console.  Bound anywhere else, every request must carry the dashboard
token (:func:`config.secret.dashboard_token`): ``?token=`` once (the page then keeps
it in a cookie), the cookie, or ``Authorization: Bearer TOKEN`` (Prometheus'
``bearer_token``).  Anything else gets 401 and one line saying how to get in.

CORS: without a token the ``/api`` routes may be read by the dashboards of the
cluster's own members (the origins ``http://HOST:HTTP_PORT`` of the cluster file's
nodes, and ``localhost``/``127.0.0.1`` for loopback ones), so a page served by one
member can check that another member answers before it moves there; no other web
page the browser has open may read them.  With a token no origin may (the token would
have to travel to another origin); the page then moves to a member that accepts a
connection at all, and a member on another host asks for the token there.
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

from net.errors import ClusterError, one_line
from node.dashboard import DEFAULT_FILES, MAX_FILES
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


def member_origins(node: NodeApp) -> frozenset[str]:
    """The web origins of the configured nodes' dashboards (``http://HOST:PORT``; a
    loopback node's also as localhost and 127.0.0.1, as a browser may name it)."""
    from config.topology import is_loopback

    out: set[str] = set()
    for n in node.config.nodes:
        if n.http_port is None:
            continue
        hosts = {n.host, "localhost", "127.0.0.1"} if is_loopback(n.host) else {n.host}
        out.update(f"http://{h}:{n.http_port}" for h in hosts)
    return frozenset(out)


def build_app(node: NodeApp, token: str | None) -> Starlette:
    """The ASGI app for ``node``; ``token``: required on every request, or None (loopback)."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    origins = member_origins(node) if token is None else frozenset()

    def headers(request: Request) -> dict[str, str]:
        # The members' dashboards may read the JSON (see the module docstring).
        out = {"Cache-Control": "no-store", "Vary": "Origin"}
        origin = request.headers.get("origin")
        if origin in origins:
            out["Access-Control-Allow-Origin"] = origin
        return out

    async def members(request: Request) -> Response:
        view = node.list_mem()
        for m in view["members"]:
            configured = node.config.node_named(m["name"])
            m["http_port"] = configured.http_port if configured is not None else None
        view["http_port"] = node.http_port
        # Every configured node in ring order: the page draws those that are not
        # members now (failed, left, never started) greyed, in their places.
        view["configured"] = [n.name for n in node.config.nodes]
        return JSONResponse(view, headers=headers(request))

    async def dashboard(request: Request) -> Response:
        raw = request.query_params.get("files", str(DEFAULT_FILES))
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or int(raw) > MAX_FILES:
            return JSONResponse(
                {"error": f"files must be a whole number from 0 to {MAX_FILES}"},
                status_code=400,
                headers=headers(request),
            )
        try:
            data = await node.dashboard.fetch(int(raw))
        except ClusterError as e:
            body = {"error": one_line(str(e)), "served_by": node.me.name}
            return JSONResponse(body, status_code=503, headers=headers(request))
        return JSONResponse(data, headers=headers(request))

    node_metrics = metrics.NodeMetrics(node)

    async def prometheus(request: Request) -> Response:
        body, content_type = await node_metrics.exposition()
        return Response(body, media_type=content_type)

    middleware = [] if token is None else [Middleware(TokenGate, token=token)]
    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/members", members),
            Route("/api/dashboard", dashboard),
            Route("/metrics", prometheus),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=middleware,
    )
