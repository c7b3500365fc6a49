"""Replays against real nodes: bytes recorded off the wire (a recording TCP proxy on
loopback between a console and H1) and sent again.

- The console's authenticated ``delete``, replayed to the node on new connections,
  deletes nothing: each replay is refused (the node's ``rejected`` counters show it)
  and the file put again after the delete is still there.
- The node's authenticated reply, replayed to a console by a fake node (fresh hello,
  then the recorded reply), is refused by the console: a captured "ok" cannot answer
  another request.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from net.codec import HELLO_MAGIC, HELLO_SIZE, NONCE_SIZE
from scripts.localcluster import ConsoleError, LocalCluster, console, wait_for
from scripts.samples import random_file

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class RecordingProxy:
    """Forwards each connection to ``upstream`` and records its bytes both ways."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.records: list[dict[str, bytearray]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            record = {"c2s": bytearray(), "s2c": bytearray()}
            self.records.append(record)
            for src, dst, key in ((down, up, "c2s"), (up, down, "s2c")):
                threading.Thread(
                    target=self._pump, args=(src, dst, record[key]), daemon=True
                ).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, log: bytearray) -> None:
        try:
            while data := src.recv(65536):
                log += data
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def replay(addr: tuple[str, int], data: bytes) -> bytes:
    """Send recorded bytes on a new connection; what the node sends back before it hangs up."""
    got = bytearray()
    with socket.create_connection(addr, timeout=5) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                got += chunk
        except OSError:  # a reset: the node closed with our bytes unread
            pass
    return bytes(got)


def fake_node(reply: bytes) -> tuple[socket.socket, list[bytes]]:
    """A listener that greets like a node (a fresh nonce), reads the request, and
    answers with ``reply`` (recorded from a real node)."""
    listener = socket.create_server(("127.0.0.1", 0))
    heard: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(HELLO_MAGIC + os.urandom(NONCE_SIZE))
                conn.settimeout(5)
                try:
                    heard.append(conn.recv(65536))
                    conn.sendall(reply)
                    conn.recv(1)
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return listener, heard


def test_a_recorded_delete_and_its_reply_cannot_be_replayed(tmp_path: Path) -> None:
    src = random_file(tmp_path / "victim.bin", 100_000)
    with LocalCluster(4, cluster={"transfer": "tcp"}) as c:
        c.wait_converged(timeout=30)
        h1 = c.node("H1")
        c.console("H1", "put", str(src), "probe/victim")
        proxy = RecordingProxy((h1.host, h1.port))
        try:
            console(f"127.0.0.1:{proxy.port}", c.config_path, "delete", "probe/victim")
        finally:
            proxy.close()
        assert proxy.records, "the console's connection went through the proxy"
        c.console("H1", "put", str(src), "probe/victim")  # put again after the delete
        before = c.console("H1", "list_self")["rejected"]["frames"].get("bad_mac", 0)

        for record in proxy.records:
            answer = replay((h1.host, h1.port), bytes(record["c2s"]))
            # The node greets the new connection, refuses the frame and hangs up.
            assert answer.startswith(HELLO_MAGIC) and len(answer) == HELLO_SIZE, answer[:64]
            # Nor does the recorded frame pass behind a fresh nonce of the replayer's.
            frame = bytes(record["c2s"][NONCE_SIZE:])
            fresh = replay((h1.host, h1.port), os.urandom(NONCE_SIZE) + frame)
            assert fresh.startswith(HELLO_MAGIC) and len(fresh) == HELLO_SIZE, fresh[:64]

        rejected = c.console("H1", "list_self")["rejected"]["frames"]
        assert rejected.get("bad_mac", 0) >= before + 2 * len(proxy.records), rejected
        files = wait_for(lambda: c.console("H2", "ls-all", "probe/*")["files"], 5, "ls-all")
        assert files == ["probe/victim"]
        back = tmp_path / "back.bin"
        c.console("H3", "get", "probe/victim", str(back))
        assert back.read_bytes() == src.read_bytes()

        # The node's recorded answer (after its hello) cannot answer another request.
        reply = bytes(proxy.records[-1]["s2c"][HELLO_SIZE:])
        assert reply, "the node answered through the proxy"
        listener, heard = fake_node(reply)
        try:
            port = listener.getsockname()[1]
            with pytest.raises(ConsoleError) as info:
                console(f"127.0.0.1:{port}", c.config_path, "delete", "probe/victim")
            assert "bad_mac" in str(info.value) or "rejected" in str(info.value), info.value
            assert heard, "the console did send its request"
        finally:
            listener.close()
        assert c.console("H2", "ls-all", "probe/*")["files"] == ["probe/victim"]
