"""sdfs.transfer.local: LocalTransfer on its own (the contract tests in test_base.py
run it alongside tcp and scp)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sdfs.transfer import LocalTransfer, Peer
from tests.helpers.transfers import BIG, Recorder, node_dirs, sha256

pytestmark = pytest.mark.timeout(60)


async def test_local_transfer_round_trip(tmp_path: Path, big_file: Path) -> None:
    incoming, store = node_dirs(tmp_path)
    peer = Peer("H1", "127.0.0.1", 1, None, str(incoming), str(store))
    t = LocalTransfer()
    rec = Recorder()
    r = await t.push(big_file, peer, "n", rec)
    rec.check(BIG, label="big.bin -> H1")
    assert r.sha256 == sha256(big_file) == sha256(incoming / "n")
    shutil.move(incoming / "n", store / "files" / "n")
    r2 = await t.pull(peer, str(store / "files" / "n"), tmp_path / "out")
    assert r2.sha256 == r.sha256 == sha256(tmp_path / "out")
