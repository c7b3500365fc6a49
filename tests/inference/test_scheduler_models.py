"""What a worker can serve: models it announces unavailable, and per-model parallelism."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inference.scheduler import (
    Action,
    Assign,
    BatchLost,
    QueryGaveUp,
    Scheduler,
    SchedulerConfig,
    WorkerUp,
)
from tests.helpers.schedsim import row_for

LLM, IMAGE = "smollm2", "resnet50"
CAP: dict[str, Any] = {"threads": 2, "gpu": None, "slots": 2}


def assigns(actions: list[Action]) -> list[Assign]:
    return [a for a in actions if isinstance(a, Assign)]


def fixed(**kw: Any) -> Scheduler:
    return Scheduler(SchedulerConfig(max_batch_seconds=None, batch_size=2, **kw))


def test_a_worker_never_gets_a_model_it_cannot_serve() -> None:
    s = fixed()
    s.worker_up("H1", {**CAP, "unavailable": [LLM]}, 0.0)
    actions = s.submit(None, LLM, [f"q{i}" for i in range(4)], 0.0)
    assert not assigns(actions) and s.status("job-1")["state"] == "queued"
    # Another job's model still runs there.
    image = assigns(s.submit(None, IMAGE, ["a.jpg", "b.jpg"], 0.0))
    assert [(a.worker, a.model) for a in image] == [("H1", IMAGE)]
    # A worker that can serve it takes the grading job.
    grading = assigns(s.worker_up("H2", CAP, 1.0))
    assert {(a.worker, a.model) for a in grading} == {("H2", LLM)}
    assert s.workers()["H1"]["unavailable"] == [LLM]


def test_announcing_a_model_unavailable_takes_its_batches_back_free() -> None:
    s = fixed(max_attempts=1)  # one charged attempt would already give up a query
    s.worker_up("H1", CAP, 0.0)
    s.worker_up("H2", CAP, 0.0)
    first = assigns(s.submit(None, LLM, [f"q{i}" for i in range(8)], 0.0))
    on_h1 = [a for a in first if a.worker == "H1"]
    assert len(on_h1) == 2
    actions = s.worker_up("H1", {**CAP, "unavailable": [LLM]}, 1.0)
    lost = [a for a in actions if isinstance(a, BatchLost)]
    assert sorted(a.batch_id for a in lost) == sorted(a.batch_id for a in on_h1)
    assert not [a for a in actions if isinstance(a, QueryGaveUp)]
    assert all(a.worker != "H1" for a in assigns(actions))
    # The worker's failure report, arriving after, finds the batches taken: nothing charged.
    for a in on_h1:
        s.batch_failed("H1", a.batch_id, "H1: server down", 1.1)
    assert s.status("job-1")["errors"] == 0
    # H2 finishes everything; every query exactly once.
    pending = [a for a in first if a.worker == "H2"] + assigns(actions)
    while pending:
        a = pending.pop(0)
        rows = [(i, row_for(name)) for i, name in a.queries]
        pending += assigns(s.batch_done(a.worker, a.batch_id, rows, [0.1] * len(rows), 2.0))
    status = s.status("job-1")
    assert (status["state"], status["done"], status["errors"]) == ("done", 8, 0)
    assert [r["input"] for r in s.results("job-1")] == [f"q{i}" for i in range(8)]


def test_a_model_announced_again_is_served_again() -> None:
    s = fixed()
    s.worker_up("H1", {**CAP, "unavailable": [LLM]}, 0.0)
    assert not assigns(s.submit(None, LLM, ["q0", "q1"], 0.0))
    again = assigns(s.worker_up("H1", CAP, 5.0))
    assert [(a.worker, a.model) for a in again] == [("H1", LLM)]
    assert s.workers()["H1"]["unavailable"] == []


def test_a_parallel_model_gets_batches_big_enough_for_every_request() -> None:
    # With the time bound on, a model never measured is probed one query at a time ...
    s = Scheduler(SchedulerConfig(batch_size=8))
    s.worker_up("H1", CAP, 0.0)
    s.worker_up("H2", {**CAP, "parallel": {LLM: 4}}, 0.0)
    assert s.batch_limit(LLM, "H1") == 1
    # ... but a worker that sends four requests at once gets four, even once measured slow.
    assert s.batch_limit(LLM, "H2") == 4
    s._costs[(LLM, "H2")] = 1.0  # 1 s per query: the 0.5 s bound alone would say 1
    assert s.batch_limit(LLM, "H2") == 4
    s.set_batch_size(LLM, 2)
    assert s.batch_limit(LLM, "H2") == 2  # never more than C3's batch size


def test_capacity_survives_snapshot_and_replay() -> None:
    s = fixed()
    s.worker_up("H1", {**CAP, "unavailable": [LLM], "parallel": {LLM: 3}}, 0.0)
    copy = Scheduler.restore(json.loads(json.dumps(s.snapshot())))
    assert copy.snapshot() == s.snapshot()
    assert not assigns(copy.submit(None, LLM, ["q0"], 1.0))
    event = WorkerUp("H1", {**CAP, "unavailable": []}, 2.0)
    assert [a.model for a in assigns(copy.handle(event))] == [LLM]


@pytest.mark.parametrize(
    "capacity",
    [
        {**CAP, "unavailable": "smollm2"},
        {**CAP, "unavailable": [1]},
        {**CAP, "parallel": {LLM: 0}},
        {**CAP, "parallel": {LLM: True}},
        {**CAP, "parallel": [LLM, 2]},
    ],
)
def test_unusable_capacity_is_refused_and_changes_nothing(capacity: dict[str, Any]) -> None:
    s = fixed()
    before = s.snapshot()
    with pytest.raises(ValueError, match="capacity"):
        s.worker_up("H1", capacity, 0.0)
    assert s.snapshot() == before


def test_error_rows_a_kind_returns_count_as_errors_and_all_of_them_fail_the_job() -> None:
    s = fixed()
    s.worker_up("H1", CAP, 0.0)
    (a,) = assigns(s.submit(None, LLM, ["q0", "bad"], 0.0))
    rows: list[tuple[int, dict[str, Any]]] = [
        (0, {"input": "q0", "score": 3}),
        (1, {"input": "bad", "error": "not valid JSON"}),
    ]
    s.batch_done("H1", a.batch_id, rows, [1.0, 0.0], 1.0)
    assert (s.status("job-1")["state"], s.status("job-1")["errors"]) == ("done", 1)
    (b,) = assigns(s.submit(None, LLM, ["x", "y"], 2.0))
    bad = [(i, {"input": name, "error": "no 'answer'"}) for i, name in b.queries]
    s.batch_done("H1", b.batch_id, bad, [0.0, 0.0], 3.0)
    assert (s.status("job-2")["state"], s.status("job-2")["errors"]) == ("failed", 2)
