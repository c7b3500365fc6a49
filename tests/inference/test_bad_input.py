"""Bad input from peers to the scheduler's leader requests: numbers are checked on arrival.

C3 and C4 arrive as typed requests from any node's client, which skip the console's
command table: the leader checks BATCH, COUNT, GLOB and the processing times workers
report, and answers ``Failure(INVALID)`` (one line) for one out of range.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from inference.scheduler import Scheduler, SchedulerConfig
from inference.standby import StandbyCopy
from net.errors import ErrorKind
from net.limits import MAX_BATCH, MAX_COUNT
from net.messages import (
    BatchResult,
    BatchSizeSet,
    Capacity,
    Failure,
    SetBatchSizeRequest,
    StandbySnapshot,
    StoreAck,
    SubmitJob,
)

pytestmark = pytest.mark.timeout(30)

TOP = 2**64 - 1


def assert_invalid(reply: Any, *words: str) -> None:
    assert isinstance(reply, Failure), reply
    assert reply.kind == ErrorKind.INVALID, reply
    assert "\n" not in reply.error and len(reply.error) < 200
    for w in words:
        assert w in reply.error, reply.error


BAD = [
    (SetBatchSizeRequest("resnet50", 0), "BATCH"),
    (SetBatchSizeRequest("resnet50", -1), "BATCH"),
    (SetBatchSizeRequest("resnet50", MAX_BATCH + 1), "BATCH"),
    (SetBatchSizeRequest("resnet50", TOP), "BATCH"),
    (SubmitJob("resnet50", None, 0), "COUNT"),
    (SubmitJob("resnet50", None, -(2**63)), "COUNT"),
    (SubmitJob("resnet50", None, MAX_COUNT + 1), "COUNT"),
    (SubmitJob("resnet50", "*" * 5000, None), "GLOB"),
    (BatchResult("H2", 1, (), (float("nan"),)), "processing time"),
    (BatchResult("H2", 1, (), (float("inf"),)), "processing time"),
    (BatchResult("H2", 1, (), (-1.0,)), "processing time"),
]


@pytest.mark.parametrize(("request_", "word"), BAD, ids=[repr(r[0])[:50] for r in BAD])
async def test_the_scheduler_refuses_numbers_out_of_range_as_invalid(leader, request_, word):
    assert_invalid(await leader.handle(request_), word)
    assert leader.seq == 0  # no event was applied
    assert leader.sched is not None and leader.sched.batch_size("resnet50") == 8


async def test_numbers_in_range_are_still_accepted(leader):
    reply = await leader.handle(SetBatchSizeRequest("ResNet50", MAX_BATCH))
    assert reply == BatchSizeSet("resnet50", MAX_BATCH)
    assert await leader.handle(BatchResult("H2", 99, (), (0.0,))) == StoreAck(True)


@pytest.mark.parametrize(
    "snapshot",
    [{}, {"version": 1}, {"version": 1, "config": {"deep": [[[[]]]]}}, {"version": "1" * 5000}],
    ids=["empty", "no-fields", "bad-config", "long-version"],
)
def test_the_standby_refuses_an_unusable_snapshot_and_keeps_its_copy(snapshot):
    copy = StandbyCopy(logging.getLogger("test"))
    good = Scheduler(SchedulerConfig()).snapshot()
    assert copy.snapshot(StandbySnapshot("H1", 7, good)) == StoreAck(True)
    reply = copy.snapshot(StandbySnapshot("H1", 9, snapshot))
    assert isinstance(reply, StoreAck) and not reply.ok
    assert reply.error.startswith("unusable scheduler snapshot: ")
    assert "\n" not in reply.error and len(reply.error) <= 1000
    assert copy.seq == 7 and copy.scheduler is not None


class AnsweringView:
    """A cluster of H1 and H2 where H2 answers CapacityRequest with ``capacity``."""

    def __init__(self, capacity: dict[str, Any]) -> None:
        self.capacity = capacity

    def ring(self) -> list[str]:
        return ["H1", "H2"]

    async def call(self, node: str, request: Any, timeout: float = 5.0) -> Any:
        return Capacity(node, self.capacity)


@pytest.mark.parametrize(
    "capacity",
    [{"threads": 0}, {"threads": "many"}, {"slots": -1}, {"gpu": 7}, {"threads": 2.5}],
)
async def test_a_worker_with_an_unusable_capacity_is_taken_at_the_least(leader, capacity):
    # The reply of a peer, handled in a task of the leader's nursery: a ValueError
    # there used to end the whole node.
    leader.view = AnsweringView(capacity)
    await leader.add_worker("H2")
    assert leader.sched is not None
    workers = leader.sched.workers()
    assert {n: (w["threads"], w["slots"]) for n, w in workers.items()} == {"H2": (1, 1)}
