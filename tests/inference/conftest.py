"""Fixtures shared by the inference tests on virtual time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inference import kinds
from tests.inference.test_service_virtual import Paced


@pytest.fixture
def paced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Paced]:
    """The paced job kind (a fixed time per query), registered for one test."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU lookup: every worker alike
    kind = Paced()
    kinds.register(kind)
    yield kind
    kinds.unregister(kind.name)
