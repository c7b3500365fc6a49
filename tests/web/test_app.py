"""The node's HTTP face: routes, the token gate beyond loopback, and serving on trio."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import httpx
import pytest
import trio

from config.secret import dashboard_token
from config.topology import HttpConfig, profile
from node.app import NodeApp
from web import server
from web.app import COOKIE, build_app

SECRET = "a-test-secret-of-enough-bytes-0123456789"


def make_node(tmp_path: Path, bind: str = "127.0.0.1") -> NodeApp:
    config = dataclasses.replace(profile("test"), secret=SECRET, http=HttpConfig(bind=bind))
    return NodeApp(config, config.nodes[0], tmp_path)


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")  # type: ignore[arg-type]


async def test_loopback_serves_page_members_metrics_and_static_without_a_token(tmp_path):
    node = make_node(tmp_path)
    async with client(build_app(node, None)) as http:
        page = await http.get("/")
        assert page.status_code == 200 and "<title>IDunno cluster</title>" in page.text
        members = (await http.get("/api/members")).json()
        assert members == {
            "self": node.me.name,
            "leader": None,
            "members": [],
            "http_port": None,
            "configured": [n.name for n in node.config.nodes],
        }
        scrape = await http.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        assert 'idunno_members{state="alive"} 0.0' in scrape.text
        assert (await http.get("/static/dashboard.js")).status_code == 200
        # Nothing outside web/static is served, however the path is spelled.
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"):
            assert (await http.get(path)).status_code == 404, path


async def test_dashboard_data_needs_a_leader_and_says_why_in_one_line(tmp_path):
    node = make_node(tmp_path)  # never joined: there is no leader to ask
    async with client(build_app(node, None)) as http:
        reply = await http.get("/api/dashboard")
        assert reply.status_code == 503
        body = reply.json()
        assert body["served_by"] == node.me.name
        assert "not in the cluster" in body["error"] and "\n" not in body["error"]
        assert reply.headers["cache-control"] == "no-store"
        for bad in ("abc", "-1", "201", "3.5", "\u0663", "9" * 40):
            refused = await http.get("/api/dashboard", params={"files": bad})
            assert refused.status_code == 400, bad
            assert refused.json() == {"error": "files must be a whole number from 0 to 200"}
        assert (await http.get("/api/dashboard", params={"files": "0"})).status_code == 503


async def test_only_the_members_dashboards_may_read_the_json_from_another_origin(tmp_path):
    config = profile("test")
    nodes = tuple(
        dataclasses.replace(n, http_port=9000 + i) for i, n in enumerate(config.nodes[:3])
    )
    config = dataclasses.replace(config, secret=SECRET, nodes=nodes)
    node = NodeApp(config, nodes[0], tmp_path)
    async with client(build_app(node, None)) as http:
        for origin in ("http://127.0.0.1:9001", "http://localhost:9002", "http://127.0.0.1:9000"):
            got = await http.get("/api/members", headers={"Origin": origin})
            assert got.headers["access-control-allow-origin"] == origin
            assert got.json()["http_port"] == 9000 and got.headers["vary"] == "Origin"
        for origin in ("http://evil.example", "http://127.0.0.1:9003", "null"):
            got = await http.get("/api/dashboard", headers={"Origin": origin})
            assert "access-control-allow-origin" not in got.headers, origin
    token = dashboard_token(config.secret_bytes)
    async with client(build_app(node, token)) as http:  # with a token: no other origin
        got = await http.get(
            "/api/members",
            headers={"Origin": "http://127.0.0.1:9001", "Authorization": f"Bearer {token}"},
        )
        assert got.status_code == 200 and "access-control-allow-origin" not in got.headers


async def test_beyond_loopback_every_route_needs_the_token(tmp_path):
    node = make_node(tmp_path, bind="0.0.0.0")
    token = dashboard_token(node.config.secret_bytes)
    app = build_app(node, token)
    async with client(app) as http:
        for path in ("/", "/api/members", "/api/dashboard", "/metrics", "/static/dashboard.js"):
            denied = await http.get(path)
            assert denied.status_code == 401, path
            assert "dashboard-token" in denied.text and denied.text.count("\n") == 1
        wrong = await http.get("/metrics", headers={"Authorization": "Bearer " + "0" * 32})
        assert wrong.status_code == 401
        assert (await http.get("/metrics", params={"token": token[:-1]})).status_code == 401
        bearer = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200 and "idunno_members" in bearer.text
    # A browser opens /?token= once; the cookie then carries it.
    async with client(app) as browser:
        first = await browser.get("/", params={"token": token})
        assert first.status_code == 200 and first.cookies.get(COOKIE) == token
        assert "httponly" in first.headers["set-cookie"].lower()
        assert (await browser.get("/api/members")).status_code == 200


def test_the_token_is_derived_from_the_secret_and_does_not_show_it():
    a, b = dashboard_token(b"secret one, long enough"), dashboard_token(b"secret two, long enough")
    assert a != b and len(a) == 32 and int(a, 16) >= 0
    assert a == dashboard_token(b"secret one, long enough")
    assert "secret" not in a


async def test_served_on_trio_and_a_taken_port_is_named(tmp_path):
    node = make_node(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, build_app(node, None), "127.0.0.1", port)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.get("/api/members")).json()["self"] == node.me.name
        with pytest.raises(OSError, match=rf"http port 127.0.0.1:{port}"):
            server.bind_socket("127.0.0.1", port)
        nursery.cancel_scope.cancel()
