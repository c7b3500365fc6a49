"""Fixtures shared by the inference tests on virtual time."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from config.topology import InferenceConfig
from inference import kinds
from inference.leader import Leader
from inference.scheduler import Scheduler, SchedulerConfig
from tests.helpers.dictfiles import DictFiles
from tests.inference.test_service_virtual import Paced


@pytest.fixture
def paced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Paced]:
    """The paced job kind (a fixed time per query), registered for one test."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU lookup: every worker alike
    kind = Paced()
    kinds.register(kind)
    yield kind
    kinds.unregister(kind.name)


@pytest.fixture
def leader(nursery: trio.Nursery, tmp_path: Path) -> Iterator[Leader]:
    """A Leader that schedules (as if it had become leader), with no other node."""
    leader = Leader(
        "H1",
        None,  # type: ignore[arg-type]  # no request here reaches another node
        DictFiles(),
        InferenceConfig(),
        tmp_path,
        lambda: 100.0,
        logging.getLogger("test"),
        lambda seq, event: None,
    )
    leader._nursery = nursery
    leader.sched = Scheduler(SchedulerConfig())
    yield leader
    leader.timings.close()
