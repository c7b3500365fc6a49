"""sdfs.transfer.chain over tcp: a put through a chain of real TransferServers on
127.0.0.1, whole, and broken at each kind of hop; and sdfs.copies.push routing around
a break (invariants 2-4 of sdfs.transfer.chain)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from config.topology import ClusterConfig, default_config
from net.messages import ChainStream, ErrorReply, Hop, HopResult, RelayFile
from net.rpc import IDLE_TIMEOUT, Connection, frame_codec
from sdfs.copies import PeerDirectory, is_local, push
from sdfs.transfer import (
    Peer,
    ScpTransfer,
    TcpTransfer,
    TransferError,
    TransferResult,
    TransferServer,
)
from sdfs.transfer.chain import MAX_HOPS, GrowingFile, check_results
from tests.helpers.sshd import PrivateSshd
from tests.helpers.transfers import SECRET, leftovers, node_dirs, sha256, tcp_server, write

pytestmark = pytest.mark.timeout(60)

SIZE = 6 * 1024 * 1024 + 123


@asynccontextmanager
async def servers(
    tmp_path: Path, n: int, **special: Any
) -> AsyncIterator[tuple[list[Peer], list[TransferServer | None]]]:
    """``n`` hops H1..Hn, each a TransferServer on its own port; ``special`` maps a
    name to "dead" (nothing listens), a stream handler, or TransferServer options."""
    peers: list[Peer] = []
    made: list[TransferServer | None] = []
    async with AsyncExitStack() as stack:
        for i in range(1, n + 1):
            name = f"H{i}"
            incoming, store = node_dirs(tmp_path / name)
            how = special.get(name)
            if how == "dead":
                s = socket.socket()
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
                s.close()  # nothing listens there now
                made.append(None)
            else:
                options = how if isinstance(how, dict) else {}
                server = TransferServer(incoming, store, node_name=name, **options)
                handler = how if callable(how) else None
                port = await stack.enter_async_context(tcp_server(server, handler))
                made.append(server)
            peers.append(Peer(name, "127.0.0.1", port, None, str(incoming), str(store)))
        yield peers, made


def held(peer: Peer, name: str) -> Path:
    return Path(peer.incoming_dir) / name


async def test_a_chain_puts_the_file_on_every_hop_each_receiving_it_once(tmp_path: Path) -> None:
    src = write(tmp_path / "src", os.urandom(SIZE))
    async with servers(tmp_path, 4) as (peers, made):
        tcp = TcpTransfer(frame_codec(SECRET))
        results = await tcp.push_chain(src, [(p, f"in-{p.name}") for p in peers])
    digest = sha256(src)
    assert [r.sha256 for r in results if isinstance(r, TransferResult)] == [digest] * 4
    for p, server in zip(peers, made, strict=True):
        assert sha256(held(p, f"in-{p.name}")) == digest
        assert server is not None and server.bytes_in == SIZE and server.uploads == 1
        # Noted for ingest with the writer's digest, verified under the tag.
        assert server.arrivals.take(held(p, f"in-{p.name}")) == digest


async def test_a_dead_hop_mid_chain_leaves_the_hops_before_it_whole(tmp_path: Path) -> None:
    src = write(tmp_path / "src", os.urandom(SIZE))
    async with servers(tmp_path, 4, H3="dead") as (peers, _):
        tcp = TcpTransfer(frame_codec(SECRET))
        results = await tcp.push_chain(src, [(p, "f") for p in peers])
    assert isinstance(results[0], TransferResult) and isinstance(results[1], TransferResult)
    assert isinstance(results[2], TransferError) and "cannot connect" in str(results[2])
    assert isinstance(results[3], TransferError) and "not reached: H3" in str(results[3])
    assert sha256(held(peers[0], "f")) == sha256(held(peers[1], "f")) == sha256(src)
    assert not held(peers[3], "f").exists()


async def test_a_hop_that_refuses_stops_the_chain_behind_it_only(tmp_path: Path) -> None:
    src = write(tmp_path / "src", os.urandom(SIZE))
    full = {"reserve_bytes": 1 << 62}  # "not enough disk space"
    async with servers(tmp_path, 4, H2=full) as (peers, _):
        tcp = TcpTransfer(frame_codec(SECRET))
        results = await tcp.push_chain(src, [(p, "f") for p in peers])
    assert isinstance(results[0], TransferResult)
    assert isinstance(results[1], TransferError) and "disk space" in str(results[1])
    assert all(isinstance(r, TransferError) for r in results[2:])
    assert sha256(held(peers[0], "f")) == sha256(src)
    assert not any(held(p, "f").exists() for p in peers[1:])


async def test_a_hop_that_dies_mid_stream_fails_alone_and_its_successors_keep_nothing(
    tmp_path: Path,
) -> None:
    src = write(tmp_path / "src", os.urandom(SIZE))

    async def dies(request: Any, conn: Connection) -> Any:
        assert isinstance(request, ChainStream)
        got = 0
        while got < SIZE // 3:
            got += len(await conn.stream.receive_some(65536))
        await conn.aclose()  # a crash mid-stream: the connection just ends
        return ErrorReply("gone")

    async with servers(tmp_path, 4, H2=dies) as (peers, _):
        tcp = TcpTransfer(frame_codec(SECRET))
        results = await tcp.push_chain(src, [(p, "f") for p in peers])
    assert isinstance(results[0], TransferResult)
    assert [type(r) for r in results[1:]] == [TransferError] * 3
    assert sha256(held(peers[0], "f")) == sha256(src)
    assert not any(held(p, "f").exists() for p in peers[1:])


async def test_the_writers_link_failing_fails_the_whole_chain(tmp_path: Path) -> None:
    src = write(tmp_path / "src", os.urandom(SIZE))
    async with servers(tmp_path, 3, H1="dead") as (peers, _):
        tcp = TcpTransfer(frame_codec(SECRET))
        results = await tcp.push_chain(src, [(p, "f") for p in peers])
    assert "cannot connect" in str(results[0])
    assert all("not reached: H1" in str(r) for r in results[1:])


def test_an_answer_that_disagrees_with_what_was_sent_counts_as_a_failure() -> None:
    from net.messages import ChainEnd

    hops = (Hop("H2", "h", 1, "a"), Hop("H3", "h", 1, "b"), Hop("H4", "h", 1, "c"))
    answer = ChainEnd(
        (
            HopResult("H2", True, 10, "ab" * 32),
            HopResult("H9", True, 10, "ab" * 32),  # another node's result
        )
    )
    got = check_results(answer, hops, 10, "cd" * 32)
    assert [r.ok for r in got] == [False, False, False]
    assert "checksum mismatch" in got[0].error
    assert "no result" in got[1].error and "no result" in got[2].error
    refused = check_results(ErrorReply("H2: full"), hops, 10, "")
    assert refused[0].error == "H2: full" and "not reached: H2" in refused[2].error


class _Dir(PeerDirectory):
    """A PeerDirectory that knows its peers already (no membership to ask)."""

    def __init__(self, config: ClusterConfig, peers: list[Peer]) -> None:
        super().__init__(None, config, ask=False)  # type: ignore[arg-type]
        self._peers = {p.name: p for p in peers}


async def test_push_routes_around_a_broken_chain_by_fan_out(tmp_path: Path) -> None:
    """H2 is dead: the chain reaches H1 only; below the quorum, the writer sends H3 and
    H4 their copies itself."""
    src = write(tmp_path / "src", os.urandom(SIZE))
    config = default_config()
    async with servers(tmp_path, 4, H2="dead") as (peers, made):
        tcp = TcpTransfer(frame_codec(SECRET))
        directory = _Dir(config, peers)
        names, digests, errors = await push(
            directory, lambda node: tcp, src, [p.name for p in peers], quorum=3
        )
    assert sorted(digests) == ["H1", "H3", "H4"] and set(digests.values()) == {sha256(src)}
    assert list(errors) == ["H2"]
    for p in peers:
        if p.name in names:
            assert sha256(held(p, names[p.name])) == sha256(src)
    # H3 and H4 got one copy each, from the writer, not two.
    assert [s.bytes_in if s else None for s in made] == [SIZE, None, SIZE, SIZE]


async def test_push_fans_out_below_the_threshold_and_chains_above(tmp_path: Path) -> None:
    small = write(tmp_path / "small", os.urandom(1000))
    async with servers(tmp_path, 3, H2={"reserve_bytes": 1 << 62}) as (peers, _):
        tcp = TcpTransfer(frame_codec(SECRET))
        directory = _Dir(default_config(), peers)
        _, digests, errors = await push(directory, lambda node: tcp, small, ["H1", "H2", "H3"])
        # Fan-out: H2's refusal does not keep H3 from its copy.
        assert sorted(digests) == ["H1", "H3"] and "disk space" in errors["H2"].text
        off = ClusterConfig(nodes=(), pipeline_min_bytes=0)
        big = write(tmp_path / "big", os.urandom(SIZE))
        _, digests, errors = await push(_Dir(off, peers), lambda node: tcp, big, ["H1", "H2", "H3"])
        assert sorted(digests) == ["H1", "H3"]


def test_a_growing_file_is_read_as_it_grows_and_given_up_when_removed(tmp_path: Path) -> None:
    path = tmp_path / "growing"
    tail = GrowingFile(str(path), 6, idle_timeout=5.0, appear_timeout=5.0)

    def writer() -> None:
        import time

        time.sleep(0.05)
        with path.open("wb") as f:
            f.write(b"abc")
            f.flush()
            time.sleep(0.05)
            f.write(b"defXYZ")  # more than announced: never read

    import threading

    t = threading.Thread(target=writer)
    t.start()
    got = b""
    while len(got) < 6:
        got += tail.read(4)
    t.join()
    assert got == b"abcdef" and tail.read(4) == b""
    tail.close()
    path.write_bytes(b"ab")
    gone = GrowingFile(str(path), 6, idle_timeout=5.0, appear_timeout=1.0)
    assert gone.read(10) == b"ab"
    path.unlink()
    with pytest.raises(TransferError, match="removed"):
        gone.read(10)
    gone.close()
    never = GrowingFile(str(tmp_path / "never"), 6, idle_timeout=1.0, appear_timeout=0.1)
    with pytest.raises(TransferError, match="did not arrive"):
        never.read(1)


async def test_cancelling_a_chain_leaves_no_temporaries(tmp_path: Path) -> None:
    src = write(tmp_path / "src", os.urandom(SIZE * 4))
    async with servers(tmp_path, 3) as (peers, _):
        tcp = TcpTransfer(frame_codec(SECRET))
        with trio.move_on_after(0.05):
            await tcp.push_chain(src, [(p, "f") for p in peers])
        await trio.sleep(0.5)
    assert leftovers(*(Path(p.incoming_dir) for p in peers)) == []


# --- scp: the writer's scp to the first hop, and RelayFile down the rest ----------------


@asynccontextmanager
async def scp_chain(
    sshd: PrivateSshd,
    tmp_path: Path,
    n: int,
    dead: str | None = None,
    gone: str | None = None,
    late: float = 0.0,
    io_timeout: float = IDLE_TIMEOUT,
) -> AsyncIterator[tuple[ScpTransfer, list[Peer], list[RelayFile]]]:
    """``n`` hops behind one private sshd, each with its own directories and its own
    ScpTransfer; RelayFile goes straight to the hop's ``serve_relay`` (what its node's
    RPC handler calls).  ``dead``: a hop whose sshd port has nothing behind it;
    ``gone``: one that the hops cannot look up (no longer a member); ``late``: each
    RelayFile reaches its hop that many seconds after the scp into that hop has
    arrived whole (a slow RPC, a busy node)."""
    peers: list[Peer] = []
    for i in range(1, n + 1):
        incoming, store = node_dirs(tmp_path / f"H{i}")
        port = sshd.port
        if f"H{i}" == dead:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
        peers.append(Peer(f"H{i}", "127.0.0.1", 1, port, str(incoming), str(store)))
    by_name = {p.name: p for p in peers}
    hops = {p.name: ScpTransfer(sshd.ssh_config(), io_timeout=io_timeout) for p in peers}
    seen: list[RelayFile] = []

    async def find(node: str) -> Peer:
        if node == gone:
            raise TransferError(f"{node} is not a member")
        return by_name[node]

    async def relay(peer: Peer, request: RelayFile, timeout: float) -> Any:
        seen.append(request)
        with trio.fail_after(timeout):
            if late:
                # Wait until the upstream's copy has arrived whole as the temporary,
                # or has already taken another name (its final one).
                temp = Path(peer.incoming_dir) / request.temp
                while not any(f.name != request.temp for f in temp.parent.iterdir()):
                    if temp.exists() and temp.stat().st_size == request.size:
                        break
                    await trio.sleep(0.02)
                await trio.sleep(late)
            return await hops[peer.name].serve_relay(
                request, Path(peer.incoming_dir), find, node=peer.name
            )

    writer = ScpTransfer(sshd.ssh_config(), io_timeout=io_timeout)
    for t in [writer, *hops.values()]:
        t.relay = relay
    try:
        yield writer, peers, seen
    finally:
        for t in [writer, *hops.values()]:
            await t.aclose()


async def test_an_scp_chain_relays_the_arriving_file_hop_by_hop(
    sshd: PrivateSshd, tmp_path: Path
) -> None:
    src = write(tmp_path / "src", os.urandom(SIZE))
    async with scp_chain(sshd, tmp_path, 4) as (writer, peers, seen):
        results = await writer.push_chain(src, [(p, f"in-{p.name}") for p in peers])
    digest = sha256(src)
    assert all(isinstance(r, TransferResult) for r in results), results
    assert [r.sha256 for r in results if isinstance(r, TransferResult)] == [digest] * 4
    for p in peers:
        assert sha256(held(p, f"in-{p.name}")) == digest
    # One RelayFile per hop that passes it on, each naming the rest of the chain.
    assert [[h.node for h in r.downstream] for r in seen] == [
        ["H2", "H3", "H4"],
        ["H3", "H4"],
        ["H4"],
    ]
    assert leftovers(*(Path(p.incoming_dir) for p in peers)) == []


async def test_an_scp_chain_holds_for_a_relay_that_starts_after_the_copy_arrived(
    sshd: PrivateSshd, tmp_path: Path
) -> None:
    """Each RelayFile reaches its hop only after the scp into that hop has finished
    (it was a race: the hop found its temporary already renamed, waited for it to
    appear, and timed out): the upstream keeps the temporary until the relay answers."""
    src = write(tmp_path / "src", os.urandom(SIZE))
    async with scp_chain(sshd, tmp_path, 3, late=0.5, io_timeout=10.0) as (writer, peers, _):
        results = await writer.push_chain(src, [(p, "f") for p in peers])
    assert all(isinstance(r, TransferResult) for r in results), results
    for p in peers:
        assert sha256(held(p, "f")) == sha256(src)
    assert leftovers(*(Path(p.incoming_dir) for p in peers)) == []


async def test_an_scp_chain_broken_at_a_dead_hop_keeps_the_copies_before_it(
    sshd: PrivateSshd, tmp_path: Path
) -> None:
    src = write(tmp_path / "src", os.urandom(SIZE))
    async with scp_chain(sshd, tmp_path, 4, dead="H3") as (writer, peers, _):
        results = await writer.push_chain(src, [(p, "f") for p in peers])
    assert [type(r) for r in results] == [
        TransferResult,
        TransferResult,
        TransferError,
        TransferError,
    ]
    assert "H3" in str(results[2]) and "not reached" in str(results[3])
    assert sha256(held(peers[0], "f")) == sha256(held(peers[1], "f")) == sha256(src)
    assert leftovers(*(Path(p.incoming_dir) for p in peers)) == []


async def test_a_relay_skips_a_next_hop_it_cannot_look_up(
    sshd: PrivateSshd, tmp_path: Path
) -> None:
    """H3 has left the membership as H2 sees it: H2 passes the file to H4 instead."""
    src = write(tmp_path / "src", os.urandom(SIZE))
    async with scp_chain(sshd, tmp_path, 4, gone="H3") as (writer, peers, _):
        results = await writer.push_chain(src, [(p, "f") for p in peers])
    assert [type(r) for r in results] == [
        TransferResult,
        TransferResult,
        TransferError,
        TransferResult,
    ]
    assert "H2 cannot reach H3" in str(results[2])
    assert not held(peers[2], "f").exists()
    assert sha256(held(peers[3], "f")) == sha256(src)


async def test_a_relay_request_that_names_no_temporary_is_refused(
    sshd: PrivateSshd, tmp_path: Path
) -> None:
    async with scp_chain(sshd, tmp_path, 2) as (writer, peers, _):
        hop = Hop("H2", "127.0.0.1", 1, "f")
        for temp in [
            "../../etc/passwd",
            "plain-name",
            ".x/../y.0123456789ab.part",
            ".\n.0123456789ab.part",
        ]:
            reply = await writer.serve_relay(
                RelayFile(temp, 10, (hop,)), Path(peers[0].incoming_dir), _never, node="H1"
            )
            assert isinstance(reply, ErrorReply) and "relay refused" in reply.error
        reply = await writer.serve_relay(
            RelayFile(".f.0123456789ab.part", 10, ()),
            Path(peers[0].incoming_dir),
            _never,
            node="H1",
        )
        assert isinstance(reply, ErrorReply) and "hops" in reply.error


async def _never(node: str) -> Peer:
    raise AssertionError("a refused relay looks no one up")


async def test_a_hop_refuses_a_chain_with_a_bad_name_or_too_many_hops(tmp_path: Path) -> None:
    """The server checks every hop's name and the chain's length before a byte."""
    from tests.helpers.transfers import NONCE, raw_client

    incoming, store = node_dirs(tmp_path)
    server = TransferServer(incoming, store, node_name="H1")
    bad = (Hop("H2", "127.0.0.1", 1, "../escape"),)
    long = tuple(Hop(f"H{i}", "127.0.0.1", 1, "f") for i in range(MAX_HOPS))
    for downstream, why in [(bad, "'/'"), (long, "hops")]:
        async with raw_client(server) as conn:
            await conn.send(ChainStream("f", 4, NONCE, downstream))
            reply = await conn.receive()
        assert isinstance(reply, ErrorReply) and "refused" in reply.error and why in reply.error
    assert list(incoming.iterdir()) == []


def test_only_this_hosts_own_addresses_count_as_local() -> None:
    assert is_local("127.0.0.1")
    assert not is_local("192.0.2.1")  # TEST-NET-1: nobody's
    assert not is_local("localhost")  # a name: never looked up
    assert not is_local("not an address")


async def test_a_replica_on_the_writers_own_host_goes_first_in_the_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """H1..H3 all listen on 127.0.0.1 here; H2 is reached as "localhost", which this
    test makes the one address not of this host: the local ones go first, whatever
    the order asked for."""
    import sdfs.copies

    monkeypatch.setattr(sdfs.copies, "is_local", lambda host: host != "localhost")
    src = write(tmp_path / "src", os.urandom(SIZE))
    async with servers(tmp_path, 3) as (peers, _):
        seen: list[list[str]] = []
        tcp = TcpTransfer(frame_codec(SECRET))
        real = tcp.push_chain

        async def spy(local: Path, targets: Any, *args: Any, **kw: Any) -> Any:
            seen.append([p.name for p, _ in targets])
            return await real(local, targets, *args, **kw)

        tcp.push_chain = spy  # type: ignore[method-assign]
        far = Peer("H2", "localhost", peers[1].port, None, peers[1].incoming_dir, "")
        directory = _Dir(default_config(), [peers[0], far, peers[2]])
        _, digests, errors = await push(directory, lambda node: tcp, src, ["H2", "H1", "H3"])
    assert seen == [["H1", "H3", "H2"]]
    assert sorted(digests) == ["H1", "H2", "H3"] and not errors
