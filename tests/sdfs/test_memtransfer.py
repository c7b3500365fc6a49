"""MemoryTransfer (tests/helpers/memtransfer.py) keeps the Transfer contract, on virtual time.

What the whole-service tests lean on: a copy takes exactly size / rate, its result
carries the SHA-256 of the bytes, progress ends at (total, total), and a copy broken
by a crash or a cancellation leaves nothing at its destination.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from sdfs.transfer import Peer, TransferError, TransferResult
from tests.helpers.memtransfer import CopyNet

pytestmark = pytest.mark.timeout(30)

RATE = 1024 * 1024  # bytes per virtual second
SIZE = 3 * 1024 * 1024 // 2  # 1.5 s at RATE


def node_dirs(root: Path, name: str) -> Peer:
    incoming, store = root / name / "incoming", root / name / "store"
    incoming.mkdir(parents=True)
    store.mkdir(parents=True)
    return Peer(name, "10.0.0.1", 8000, None, str(incoming), str(store))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(bytes(range(256)) * (SIZE // 256))
    return path


async def test_a_push_takes_size_over_rate_and_reports_the_bytes_it_moved(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, source: Path
) -> None:
    net = CopyNet(RATE)
    peer = node_dirs(tmp_path, "H2")
    seen: list[tuple[int, int]] = []
    start = trio.current_time()
    result = await net.transfer("H1").push(
        source, peer, "arrival", lambda d, t, label: seen.append((d, t))
    )
    assert trio.current_time() - start == 1.5
    data = source.read_bytes()
    assert result.size == SIZE
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (Path(peer.incoming_dir) / "arrival").read_bytes() == data
    assert seen[0] == (0, SIZE) and seen[-1] == (SIZE, SIZE)
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})
    assert [(c.src, c.dst, c.size, c.error) for c in net.copies] == [("H1", "H2", SIZE, None)]


async def test_a_target_that_goes_down_mid_copy_fails_it_at_once_and_gets_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, tmp_path: Path, source: Path
) -> None:
    net = CopyNet(RATE)
    h2, h3 = node_dirs(tmp_path, "H2"), node_dirs(tmp_path, "H3")
    start = trio.current_time()

    async def crash() -> None:
        await trio.sleep(0.5 + 1 / 32)  # mid-chunk, after 0.5 MiB
        net.down("H3")

    nursery.start_soon(crash)
    results = await net.transfer("H1").push_many(source, [(h2, "a"), (h3, "b")])
    assert trio.current_time() - start == 1.5  # H2's copy went on
    ok, broken = results
    assert isinstance(ok, TransferResult) and ok.size == SIZE
    assert isinstance(broken, TransferError)
    assert "after 524288 of 1572864 bytes: H3 went down" in str(broken)
    assert list(Path(h3.incoming_dir).iterdir()) == []
    (to_h3,) = [c for c in net.copies if c.dst == "H3"]
    assert to_h3.ended - start == 0.5 + 1 / 32
    # While it is down, a copy to it is refused at once; after a restart it works.
    with pytest.raises(TransferError, match="H3 is down"):
        await net.transfer("H1").push(source, h3, "c")
    net.up("H3")
    assert (await net.transfer("H1").push(source, h3, "c")).size == SIZE


async def test_a_pull_that_does_not_match_leaves_the_destination_alone(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, source: Path
) -> None:
    net = CopyNet(RATE)
    peer = node_dirs(tmp_path, "H2")
    (Path(peer.store_dir) / "v1.data").write_bytes(source.read_bytes())
    local = tmp_path / "local.bin"
    local.write_bytes(b"what was there")
    with pytest.raises(TransferError, match="checksum mismatch"):
        await net.transfer("H1").pull(peer, "v1.data", local, expected_sha256="00" * 32)
    with pytest.raises(TransferError, match="not inside the store"):
        await net.transfer("H1").pull(peer, "../incoming", local)
    assert local.read_bytes() == b"what was there"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["H2", "local.bin", "source.bin"]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    result = await net.transfer("H1").pull(
        peer, "v1.data", local, expected_size=SIZE, expected_sha256=digest
    )
    assert result.size == SIZE and local.read_bytes() == source.read_bytes()


async def test_a_cancelled_copy_leaves_no_temporary(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, source: Path
) -> None:
    net = CopyNet(RATE)
    peer = node_dirs(tmp_path, "H2")
    with trio.move_on_after(1.0):
        await net.transfer("H1").push(source, peer, "arrival")
    assert list(Path(peer.incoming_dir).iterdir()) == []
    assert [c.error for c in net.copies] == ["cancelled"]
