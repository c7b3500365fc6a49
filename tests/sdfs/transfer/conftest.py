"""Fixtures for the transfer tests: a private sshd, a 50 MB file, and one Env per
transport (tests/helpers/transfers.py builds them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.sshd import PrivateSshd, private_sshd
from tests.helpers.transfers import BIG, make_env


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSshd]:
    with private_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    with path.open("wb") as f:
        for _ in range(BIG // (1024 * 1024)):
            f.write(os.urandom(1024 * 1024))
    return path


@pytest.fixture(params=["tcp", "scp"])
async def env(request: pytest.FixtureRequest, tmp_path: Path, sshd: PrivateSshd) -> Any:
    async with make_env(request.param, tmp_path, sshd) as e:
        yield e


@pytest.fixture(params=["tcp", "scp", "local"])
async def any_env(request: pytest.FixtureRequest, tmp_path: Path, sshd: PrivateSshd) -> Any:
    async with make_env(request.param, tmp_path, sshd) as e:
        yield e
