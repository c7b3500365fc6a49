"""The job scheduler core: exactly-once results, failures, fairness, policies, standby."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from inference.scheduler import (
    POLICIES,
    Action,
    Assign,
    BatchDone,
    BatchFailed,
    BatchLost,
    Event,
    Forget,
    JobAccepted,
    JobFinished,
    JobStarted,
    QueryGaveUp,
    Scheduler,
    SchedulerConfig,
    SetBatchSize,
    Submit,
    Takeover,
    Tick,
    WorkerDown,
    WorkerUp,
)
from net.wire import DecodeError, decode, encode
from tests.helpers.schedsim import SchedSim, row_for

FAST, SLOW = "resnet50", "inception_v3"
COSTS = {FAST: 0.05, SLOW: 0.15}  # seconds per query, the brief's fast and slow models
CAP = {"threads": 2, "gpu": None, "slots": 1}


def fixed(**kw: Any) -> Scheduler:
    """A scheduler whose batches are exactly the batch size (no time limit, no probes)."""
    return Scheduler(SchedulerConfig(max_batch_seconds=None, **kw))


def assigns(actions: list[Action]) -> list[Assign]:
    return [a for a in actions if isinstance(a, Assign)]


def answer(s: Scheduler, a: Assign, now: float, seconds: float = 0.1) -> list[Action]:
    rows = [(i, row_for(name)) for i, name in a.queries]
    return s.batch_done(a.worker, a.batch_id, rows, [seconds] * len(rows), now)


def indices(a: Assign) -> list[int]:
    return [i for i, _ in a.queries]


def inputs(n: int, job: str = "j") -> list[str]:
    return [f"images/{job}-{i:03d}.jpg" for i in range(n)]


def two_workers(s: Scheduler) -> None:
    s.worker_up("H1", CAP, 0.0)
    s.worker_up("H2", CAP, 0.0)


def sim_with_workers(n: int, config: SchedulerConfig | None = None, first: int = 2) -> SchedSim:
    sim = SchedSim(Scheduler(config), COSTS)
    for k in range(first, first + n):
        sim.worker_up(f"H{k}")
    return sim


def within(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(a, b)


# --- jobs --------------------------------------------------------------------------------------


def test_submit_fills_free_workers_in_query_order() -> None:
    s = fixed()
    two_workers(s)
    actions = s.submit(None, FAST, inputs(20), 1.0)
    assert actions[0] == JobAccepted("job-1", FAST, 20)
    assert actions[1] == JobStarted("job-1", FAST, 0.0)
    a1, a2 = assigns(actions)
    assert (a1.worker, a1.batch_id, a1.job_id, a1.model) == ("H1", 1, "job-1", FAST)
    assert a1.queries == tuple((i, f"images/j-{i:03d}.jpg") for i in range(8))
    assert (a2.worker, indices(a2)) == ("H2", list(range(8, 16)))
    status = s.status("job-1")
    assert {k: status[k] for k in ("job_id", "model", "state", "done", "total")} == {
        "job_id": "job-1",
        "model": FAST,
        "state": "running",
        "done": 0,
        "total": 20,
    }
    assert status["in_flight"] == 16 and status["started_at"] == 1.0


def test_job_ids_increase_and_explicit_ids_are_honoured() -> None:
    s = fixed()
    assert s.next_job_id() == "job-1"
    s.submit(None, FAST, inputs(1), 0.0)
    s.submit("job-7", FAST, inputs(1), 0.0)
    assert s.next_job_id() == "job-8"
    before = s.snapshot()
    with pytest.raises(ValueError, match="already used"):
        s.submit("job-7", FAST, inputs(1), 0.0)
    with pytest.raises(ValueError, match="model"):
        s.submit(None, "", inputs(1), 0.0)
    assert s.snapshot() == before  # a refused call changes nothing
    assert s.job_ids() == ["job-1", "job-7"]


def test_a_job_without_workers_stays_queued_until_one_comes() -> None:
    s = fixed()
    assert assigns(s.submit(None, FAST, inputs(3), 0.0)) == []
    assert s.status("job-1")["state"] == "queued"
    assert s.assignments() == {"job-1": {"model": FAST, "workers": []}}
    actions = s.worker_up("H1", CAP, 2.5)
    assert actions[0] == JobStarted("job-1", FAST, 2.5)
    assert indices(assigns(actions)[0]) == [0, 1, 2]
    assert s.status("job-1")["state"] == "running"


def test_an_empty_job_is_done_at_once() -> None:
    s = fixed()
    actions = s.submit(None, FAST, [], 3.0)
    assert actions == [JobAccepted("job-1", FAST, 0), JobFinished("job-1", "done")]
    assert s.status("job-1")["state"] == "done"
    assert s.results("job-1") == []


def test_finishing_a_job_says_so_once_with_results_in_query_order() -> None:
    s = fixed()
    two_workers(s)
    names = inputs(12)
    a1, a2 = assigns(s.submit(None, FAST, names, 0.0))
    finished: list[Action] = []
    finished += answer(s, a2, 0.8)  # out of order on purpose
    assert not [a for a in finished if isinstance(a, JobFinished)]
    finished += answer(s, a1, 1.0)
    assert [a for a in finished if isinstance(a, JobFinished)] == [JobFinished("job-1", "done")]
    rows = s.results("job-1")
    assert [r["input"] for r in rows] == names
    assert rows[0] == row_for(names[0])
    status = s.status("job-1")
    assert (status["state"], status["done"], status["finished_at"]) == ("done", 12, 1.0)
    assert s.stats.count(FAST) == 12
    assert s.assignments() == {}  # finished jobs leave C5


# --- exactly once -----------------------------------------------------------------------------


def test_worker_down_puts_its_queries_back_at_the_front_in_order() -> None:
    s = fixed()
    two_workers(s)
    a1, a2 = assigns(s.submit(None, FAST, inputs(20), 0.0))
    lost = s.worker_down("H1", 1.0)
    assert lost == [BatchLost("H1", a1.batch_id, "job-1", 8, "worker H1 is down")]
    (a3,) = assigns(answer(s, a2, 1.5))
    assert (a3.worker, indices(a3)) == ("H2", list(range(8)))
    (a4,) = assigns(answer(s, a3, 2.0))
    assert indices(a4) == [16, 17, 18, 19]
    assert JobFinished("job-1", "done") in answer(s, a4, 2.5)
    assert sorted(r["input"] for r in s.results("job-1")) == inputs(20)
    assert s.duplicates == 0
    assert s.worker_down("H1", 3.0) == []  # already gone


def test_late_answer_for_a_requeued_query_counts_and_leaves_the_queue() -> None:
    s = fixed()
    two_workers(s)
    a1, a2 = assigns(s.submit(None, FAST, inputs(20), 0.0))
    s.worker_down("H1", 1.0)
    # H1 was only cut off: its answer arrives after we gave up on it.
    assert assigns(answer(s, a1, 1.2)) == []
    assert s.status("job-1")["done"] == 8
    (a3,) = assigns(answer(s, a2, 1.5))
    assert indices(a3) == [16, 17, 18, 19]  # 0..7 are not run again
    assert JobFinished("job-1", "done") in answer(s, a3, 2.0)
    assert s.duplicates == 0


def test_a_batch_names_its_job_while_live_or_given_up_and_survives_a_snapshot() -> None:
    s = fixed()
    two_workers(s)
    a1, a2 = assigns(s.submit(None, FAST, inputs(16), 0.0))
    s.worker_down("H1", 1.0)  # a1 is given up on; a late answer may still come
    copy = Scheduler.restore(s.snapshot())  # what a standby takes over with
    for sched in (s, copy):
        assert sched.batch_job(a1.batch_id) == sched.batch_job(a2.batch_id) == ("job-1", FAST)
        assert sched.batch_job(99) is None
    (a3,) = assigns(answer(s, a2, 1.5))
    answer(s, a3, 2.0)  # the job is done: nothing is kept of its batches
    assert s.batch_job(a1.batch_id) is None and s.batch_job(a3.batch_id) is None


def test_late_answer_after_reassignment_counts_once() -> None:
    s = fixed()
    two_workers(s)
    a1, a2 = assigns(s.submit(None, FAST, inputs(20), 0.0))
    s.worker_down("H1", 1.0)
    (a3,) = assigns(answer(s, a2, 1.5))
    assert indices(a3) == list(range(8))
    answer(s, a1, 1.7)  # accepted: those queries were not done yet
    assert s.status("job-1")["done"] == 16 and s.duplicates == 0
    (a4,) = assigns(answer(s, a3, 2.0))  # the re-run's answers are the duplicates
    assert s.duplicates == 8 and s.status("job-1")["done"] == 16
    assert indices(a4) == [16, 17, 18, 19]
    answer(s, a4, 2.5)
    assert s.status("job-1")["state"] == "done"
    answer(s, a1, 3.0)  # the same late answer again, after the job finished
    assert s.duplicates == 16
    assert [r["input"] for r in s.results("job-1")] == inputs(20)


def test_exactly_once_under_worker_failures() -> None:
    sim = sim_with_workers(5)
    jobs = [sim.submit(FAST, 300), sim.submit(SLOW, 200)]
    sim.run_until(3.0)
    sim.crash("H2")  # dies with its batch
    sim.run_until(5.0)
    sim.crash("H3", answer_late=True)  # cut off: its answer arrives anyway
    sim.run_until(6.0)
    sim.worker_up("H7")
    sim.run_until(8.0)
    sim.worker_up("H2")  # back from the dead
    sim.run_until(9.0)
    sim.crash("H4", answer_late=True)
    sim.run_until(200.0)
    s = sim.scheduler
    assert any(a.late for a in sim.answers)
    for job in jobs:
        assert s.status(job)["state"] == "done"
        rows = s.results(job)
        assert len(rows) == s.status(job)["total"]
        assert [r["input"] for r in rows] == list(sim_inputs(sim, job))
        assert all(r == row_for(r["input"]) for r in rows)
    # Every answer either became the one result for its query or was a counted duplicate.
    answered = sum(a.size for a in sim.answers)
    assert answered == 500 + s.duplicates
    assert sorted(sim.finished) == sorted(jobs)


def sim_inputs(sim: SchedSim, job_id: str) -> tuple[str, ...]:
    (submit,) = [e for e in sim.events if isinstance(e, Submit) and e.job_id == job_id]
    return submit.inputs


# --- batch sizes ------------------------------------------------------------------------------


def test_batch_size_change_applies_to_batches_dispatched_after_it() -> None:
    s = fixed()
    s.worker_up("H1", CAP, 0.0)
    (a1,) = assigns(s.submit(None, FAST, inputs(40), 0.0))
    assert len(a1.queries) == 8
    assert s.set_batch_size(FAST, 3) == []
    assert s.batch_size(FAST) == 3 and s.batch_size(SLOW) == 8
    (a2,) = assigns(answer(s, a1, 1.0))  # the running batch kept its 8
    assert indices(a2) == [8, 9, 10]
    s.set_batch_size(FAST, 16)
    (a3,) = assigns(answer(s, a2, 1.5))
    assert indices(a3) == list(range(11, 27))
    with pytest.raises(ValueError):
        s.set_batch_size(FAST, 0)


def test_batches_hold_at_most_max_batch_seconds_of_work() -> None:
    s = Scheduler(SchedulerConfig(max_batch_seconds=0.5))
    two_workers(s)
    first = assigns(s.submit(None, SLOW, inputs(100), 0.0))
    # Never measured anywhere: single-query probes.
    assert [len(a.queries) for a in first] == [1, 1]
    assert s.cost_estimate(SLOW, "H1") is None
    # The first answer's cost comes from the worker's own timing (it also loaded the model).
    (a3,) = assigns(answer(s, first[0], 2.0, seconds=0.15))
    assert s.cost_estimate(SLOW, "H1") == pytest.approx(0.15)
    assert s.cost_estimate(SLOW, "H2") == pytest.approx(0.15)  # borrowed
    assert len(a3.queries) == 3  # floor(0.5 / 0.15)
    # Later answers measure the slot's occupancy: 3 queries in 0.6 s is 0.2 s each.
    answer(s, a3, 2.6, seconds=0.15)
    assert s.cost_estimate(SLOW, "H1") == pytest.approx(0.3 * 0.2 + 0.7 * 0.15)
    s.set_batch_size(SLOW, 2)
    assert s.batch_limit(SLOW, "H1") == 2  # C3's size is the upper limit
    assert set(s.costs()) == {SLOW}


def test_a_batch_queued_behind_another_is_charged_only_for_its_own_run() -> None:
    # A worker with two slots runs one batch at a time: the second waits for the first.
    s = fixed(batch_size=4)
    s.worker_up("H1", {"threads": 1, "slots": 2}, 0.0)
    first, second = assigns(s.submit(None, FAST, inputs(12), 0.0))
    (third,) = assigns(answer(s, first, 0.4, seconds=0.1))  # measures 0.1 (own timing)
    assert s.cost_estimate(FAST, "H1") == pytest.approx(0.1)
    # Answered 0.8 s after dispatch, but it began when the first answered, at 0.4.
    answer(s, second, 0.8)
    assert s.cost_estimate(FAST, "H1") == pytest.approx(0.1)
    # Dispatched at 0.4 behind the second: began at 0.8, done at 1.4: 0.15 s a query.
    answer(s, third, 1.4)
    expected = 0.3 * 0.15 + 0.7 * 0.1
    assert s.cost_estimate(FAST, "H1") == pytest.approx(expected)
    # Idle from 1.4; a batch dispatched at 2.0 is charged from its dispatch.
    restored = Scheduler.restore(json.loads(json.dumps(s.snapshot())))
    assert restored.snapshot() == s.snapshot()  # the last answer travels to the standby
    late, _ = assigns(restored.submit(None, FAST, inputs(8), 2.0))
    answer(restored, late, 2.5)
    assert restored.cost_estimate(FAST, "H1") == pytest.approx(0.3 * 0.125 + 0.7 * expected)


def test_a_failed_batch_does_not_mark_its_worker_free() -> None:
    # A batch can fail without ever reaching the worker's model (its inputs could not be
    # fetched, the leader could not send it), so the batch running meanwhile is still
    # charged from when it began.
    s = fixed(batch_size=4)
    s.worker_up("H1", {"threads": 1, "slots": 2}, 0.0)
    a, b = assigns(s.submit(None, FAST, inputs(40), 0.0))
    (c,) = assigns(answer(s, a, 0.4, seconds=0.1))
    (d,) = assigns(answer(s, b, 0.8))  # began at 0.4: 0.1 a query
    assert s.cost_estimate(FAST, "H1") == pytest.approx(0.1)
    s.batch_failed("H1", c.batch_id, "cannot fetch images/j-009.jpg", 0.9)
    answer(s, d, 1.4)  # d began when b answered, at 0.8, not at c's failure
    assert s.cost_estimate(FAST, "H1") == pytest.approx(0.3 * 0.15 + 0.7 * 0.1)


def test_the_workers_own_timing_is_a_floor_on_a_cost_sample() -> None:
    # The leader handled the previous answer late, so this batch seems to take no time.
    s = fixed(batch_size=2)
    s.worker_up("H1", {"threads": 1, "slots": 2}, 0.0)
    first, second = assigns(s.submit(None, FAST, inputs(8), 0.0))
    answer(s, first, 1.0, seconds=0.2)
    answer(s, second, 1.0001, seconds=0.2)
    assert s.cost_estimate(FAST, "H1") == pytest.approx(0.2)


# --- failures ---------------------------------------------------------------------------------


def test_failed_batches_are_retried_then_get_error_rows() -> None:
    s = fixed(batch_size=4, max_attempts=3)
    s.worker_up("H1", CAP, 0.0)
    (a,) = assigns(s.submit(None, FAST, inputs(8), 0.0))
    for attempt in (1, 2):
        actions = s.batch_failed("H1", a.batch_id, "CUDA out of memory", float(attempt))
        (a,) = assigns(actions)
        assert indices(a) == [0, 1, 2, 3]  # back at the front, retried
        assert s.status("job-1")["done"] == 0
    actions = s.batch_failed("H1", a.batch_id, "CUDA out of memory", 3.0)
    gave_up = [x for x in actions if isinstance(x, QueryGaveUp)]
    assert [(g.index, g.input, g.error) for g in gave_up] == [
        (i, f"images/j-{i:03d}.jpg", "CUDA out of memory") for i in range(4)
    ]
    (a,) = assigns(actions)
    assert indices(a) == [4, 5, 6, 7]
    assert JobFinished("job-1", "done") in answer(s, a, 4.0)  # some queries succeeded
    rows = s.results("job-1")
    assert rows[0] == {"input": "images/j-000.jpg", "top5": [], "error": "CUDA out of memory"}
    assert rows[4] == row_for("images/j-004.jpg")
    assert s.status("job-1")["errors"] == 4
    assert s.batch_failed("H1", a.batch_id, "late", 5.0) == []  # unknown batch: ignored


def test_a_job_whose_every_query_fails_ends_failed() -> None:
    sim = SchedSim(fixed(batch_size=4), COSTS, fail=lambda a, attempt: "bad weights")
    sim.worker_up("H1")
    sim.worker_up("H2")
    job = sim.submit(FAST, 10)
    sim.run_until(10.0)
    assert sim.finished[job][1] == "failed"
    assert sim.scheduler.status(job)["state"] == "failed"
    assert all(r["error"] == "bad weights" for r in sim.scheduler.results(job))
    assert len(sim.dispatches) == 3 * 3  # 3 batches, 3 attempts each


def test_a_query_that_fails_twice_then_succeeds_has_its_result() -> None:
    flaky = SchedSim(fixed(batch_size=4), COSTS, fail=lambda a, n: "flaky" if n < 3 else None)
    flaky.worker_up("H1")
    job = flaky.submit(FAST, 8)
    flaky.run_until(10.0)
    assert flaky.finished[job][1] == "done"
    assert flaky.scheduler.status(job)["errors"] == 0


def test_queries_missing_from_an_answer_are_retried() -> None:
    s = fixed(batch_size=4)
    s.worker_up("H1", CAP, 0.0)
    (a,) = assigns(s.submit(None, FAST, inputs(4), 0.0))
    rows = [(i, row_for(name)) for i, name in a.queries if i != 2]
    rows.append((99, row_for("stray")))  # not in the batch: ignored
    (retry,) = assigns(s.batch_done("H1", a.batch_id, rows, [0.1] * 4, 1.0))
    assert indices(retry) == [2]
    assert s.strays == 1
    assert JobFinished("job-1", "done") in answer(s, retry, 1.5)


def test_a_batch_that_times_out_is_given_up_and_its_worker_rests() -> None:
    config = SchedulerConfig(max_batch_seconds=None, batch_size=4, batch_timeout=5.0)
    sim = SchedSim(Scheduler(config), {FAST: 0.1})
    sim.worker_up("H1")
    sim.worker_up("H2")
    sim.hang("H1", until=20.0)
    job = sim.submit(FAST, 400)
    assert sim.scheduler.next_deadline() == 5.0
    sim.run_until(60.0)
    lost = [a for _, a in sim.actions if isinstance(a, BatchLost)]
    assert lost == [BatchLost("H1", 1, job, 4, "no answer from H1 in 5.0 s")]
    assert [e.now for e in sim.events if isinstance(e, Tick)] == [5.0]
    h1 = [d.time for d in sim.dispatches if d.worker == "H1"]
    # Nothing more for H1 while it is silent; work again once it answers at t=20.
    assert h1[0] == 0.0 and min(h1[1:]) == 20.0
    assert sim.scheduler.status(job)["state"] == "done"
    assert sim.scheduler.duplicates == 4  # H2 had redone the four queries by then
    assert sim.scheduler.next_deadline() == float("inf")


# --- C5 ---------------------------------------------------------------------------------------


def test_assignments_name_the_workers_running_each_job() -> None:
    s = fixed()
    s.submit(None, FAST, inputs(100, "a"), 0.0)
    s.submit(None, SLOW, inputs(100, "b"), 0.0)
    batches = {}
    for name in ("H1", "H2", "H3", "H4"):
        (a,) = assigns(s.worker_up(name, CAP, 0.0))
        batches[name] = a
    assert s.assignments() == {
        "job-1": {"model": FAST, "workers": ["H1", "H3"]},
        "job-2": {"model": SLOW, "workers": ["H2", "H4"]},
    }
    s.worker_down("H3", 1.0)
    assert s.assignments()["job-1"]["workers"] == ["H1"]
    json.dumps(s.assignments())  # the console prints it as is


# --- fairness ---------------------------------------------------------------------------------


def test_fair_time_equalises_query_rates_of_fast_and_slow_models() -> None:
    sim = sim_with_workers(4)
    fast, slow = sim.submit(FAST, 5000), sim.submit(SLOW, 5000)
    sim.run_until(70.0)
    r_fast, r_slow = sim.job_rate(fast, 10.0, 70.0), sim.job_rate(slow, 10.0, 70.0)
    assert within(r_fast, r_slow, 0.05), (r_fast, r_slow)
    # Four workers at 0.05 + 0.15 s per pair of queries: 20 queries/s each.
    assert r_fast == pytest.approx(20.0, rel=0.05)
    # C1's own measure agrees, over the same 60 s.
    s = sim.scheduler
    assert within(s.stats.rate(FAST, 70.0, 60.0), s.stats.rate(SLOW, 70.0, 60.0), 0.05)
    # The slow model gets three times the worker time of the fast one.
    w_fast, w_slow = sim.worker_time(fast, 10.0, 70.0), sim.worker_time(slow, 10.0, 70.0)
    assert w_slow / (w_fast + w_slow) == pytest.approx(0.75, abs=0.02)


def test_fair_time_keeps_c1_rates_level_second_by_second() -> None:
    sim = sim_with_workers(4)
    sim.submit(FAST, 5000)
    sim.submit(SLOW, 5000)
    s = sim.scheduler
    for t in range(11, 71):
        sim.run_until(t + 0.37)
        c1 = s.c1(sim.now)["models"]
        r_fast, r_slow = c1[FAST]["query_rate"], c1[SLOW]["query_rate"]
        assert within(r_fast, r_slow, 0.05), (sim.now, r_fast, r_slow)


def test_fair_time_holds_on_mixed_workers() -> None:
    def cost(model: str, worker: str) -> float:
        # H2 has a GPU that is 5x faster; H3 is an old machine at half speed.
        return COSTS[model] * {"H2": 0.2, "H3": 2.0}.get(worker, 1.0)

    sim = SchedSim(Scheduler(), cost)
    sim.worker_up("H2", {"threads": 4, "gpu": "A100", "slots": 1})
    sim.worker_up("H3", {"threads": 1, "slots": 1})
    sim.worker_up("H4", {"threads": 2, "slots": 2})
    fast, slow = sim.submit(FAST, 10_000), sim.submit(SLOW, 10_000)
    sim.run_until(70.0)
    r_fast, r_slow = sim.job_rate(fast, 10.0, 70.0), sim.job_rate(slow, 10.0, 70.0)
    assert within(r_fast, r_slow, 0.05), (r_fast, r_slow)
    assert sim.scheduler.cost_estimate(SLOW, "H2") == pytest.approx(0.03)
    assert sim.scheduler.batch_limit(SLOW, "H2") == 8  # 0.24 s of work on the GPU
    assert sim.scheduler.batch_limit(SLOW, "H3") == 1  # 0.3 s a query there


def test_fair_time_counts_queries_not_batches() -> None:
    s = fixed()
    s.set_batch_size(FAST, 1)
    s.set_batch_size(SLOW, 3)
    s.submit(None, FAST, inputs(60, "a"), 0.0)
    s.submit(None, SLOW, inputs(60, "b"), 0.0)
    (a,) = assigns(s.worker_up("H1", CAP, 0.0))
    jobs = [a.job_id]
    for t in range(1, 24):
        (a,) = assigns(answer(s, a, float(t)))
        jobs.append(a.job_id)
    # Three one-query batches of job-1 for every three-query batch of job-2.
    assert jobs.count("job-1") == 18 and jobs.count("job-2") == 6


@pytest.mark.parametrize("offset", [0.0, 0.07, 0.13, 0.29, 0.41, 0.77, 3.3])
def test_a_job_submitted_while_another_holds_every_worker_starts_within_a_second(
    offset: float,
) -> None:
    sim = sim_with_workers(4)
    sim.submit(SLOW, 10_000)
    sim.run_until(offset)
    assert all(w["batches"] for w in sim.scheduler.workers().values())
    late = sim.submit(FAST, 100)
    sim.run_until(offset + 2.0)
    assert sim.started[late] - offset <= 0.5  # max_batch_seconds; the promise is 1 s


def test_start_bound_with_batch_sizes_of_half_a_second_and_no_time_limit() -> None:
    sim = sim_with_workers(4, SchedulerConfig(max_batch_seconds=None))
    sim.feed(SetBatchSize(SLOW, 3))  # 0.45 s of work
    sim.submit(SLOW, 10_000)
    sim.run_until(10.0)
    late = sim.submit(FAST, 100)
    sim.run_until(12.0)
    assert sim.started[late] - 10.0 <= 0.45


def test_a_job_arriving_after_another_ran_alone_shares_at_once() -> None:
    sim = sim_with_workers(4)
    first = sim.submit(SLOW, 10_000)
    sim.run_until(60.0)
    second = sim.submit(FAST, 10_000)
    sim.run_until(92.0)
    assert sim.started[second] - 60.0 <= 0.5
    r1, r2 = sim.job_rate(first, 62.0, 92.0), sim.job_rate(second, 62.0, 92.0)
    assert within(r1, r2, 0.05), (r1, r2)
    # No catch-up burst for the newcomer: the first job keeps its share from the start.
    assert sim.job_rate(first, 61.0, 63.0) == pytest.approx(r1, rel=0.2)


def test_workers_joining_and_leaving_rebalance() -> None:
    sim = sim_with_workers(4)
    fast, slow = sim.submit(FAST, 10_000), sim.submit(SLOW, 10_000)
    sim.run_until(30.0)
    sim.crash("H2")
    sim.crash("H3", answer_late=True)
    sim.run_until(60.0)
    for name in ("H6", "H7", "H8"):
        sim.worker_up(name)
    sim.run_until(90.0)
    for (t0, t1), expected in [((5.0, 30.0), 20.0), ((35.0, 60.0), 10.0), ((65.0, 90.0), 25.0)]:
        r_fast, r_slow = sim.job_rate(fast, t0, t1), sim.job_rate(slow, t0, t1)
        assert within(r_fast, r_slow, 0.05), (t0, r_fast, r_slow)
        # (workers) / (0.05 + 0.15 s per pair of queries) queries per second each.
        assert r_fast == pytest.approx(expected, rel=0.05), (t0, r_fast)
    assert {d.worker for d in sim.dispatches if d.time > 61.0} == {"H4", "H5", "H6", "H7", "H8"}


def test_a_finished_job_leaves_its_workers_to_the_others() -> None:
    sim = sim_with_workers(4)
    short, long = sim.submit(FAST, 100), sim.submit(SLOW, 10_000)
    sim.run_until(30.0)
    done_at = sim.finished[short][0]
    assert done_at < 10.0
    # Alone again, the slow job has every worker: 4 / 0.15 queries per second.
    assert sim.job_rate(long, done_at + 1.0, 30.0) == pytest.approx(4 / 0.15, rel=0.05)


# --- other policies ---------------------------------------------------------------------------


def test_round_robin_takes_jobs_in_turn_whatever_their_batch_sizes() -> None:
    s = fixed(policy="round-robin")
    s.set_batch_size(FAST, 1)
    s.set_batch_size(SLOW, 3)
    for job in "abc":
        s.submit(None, FAST if job != "b" else SLOW, inputs(30, job), 0.0)
    (a,) = assigns(s.worker_up("H1", CAP, 0.0))
    order = [a.job_id]
    for t in range(1, 9):
        (a,) = assigns(answer(s, a, float(t)))
        order.append(a.job_id)
    assert order == ["job-1", "job-2", "job-3"] * 3


def test_least_loaded_picks_the_job_with_fewest_queries_in_flight() -> None:
    def run(policy: str) -> list[str]:
        s = fixed(policy=policy, batch_size=4)
        for name in ("H1", "H2", "H3"):
            s.worker_up(name, CAP, 0.0)
        first = assigns(s.submit(None, SLOW, inputs(100, "a"), 0.0))  # takes all three
        s.submit(None, FAST, inputs(100, "b"), 0.0)
        batch = next(a for a in first if a.worker == "H1")
        order = []
        for t in range(1, 5):  # only H1 answers; job-1's batches on H2, H3 stay out
            (batch,) = assigns(answer(s, batch, float(t)))
            order.append(batch.job_id)
        return order

    assert run("least-loaded") == ["job-2"] * 4
    # Fair time would instead give job-1 its turn once job-2 has had as many queries.
    assert run("fair") == ["job-2", "job-2", "job-1", "job-2"]


def test_random_policy_is_seeded_and_deterministic() -> None:
    def run(seed: int) -> list[str]:
        s = fixed(policy="random", seed=seed, batch_size=1)
        for job in "abc":
            s.submit(None, FAST, inputs(100, job), 0.0)
        (a,) = assigns(s.worker_up("H1", CAP, 0.0))
        order = [a.job_id]
        for t in range(1, 60):
            (a,) = assigns(answer(s, a, float(t)))
            order.append(a.job_id)
        return order

    first = run(0)
    assert run(0) == first
    assert run(1) != first
    assert set(first) == {"job-1", "job-2", "job-3"}
    assert first != ["job-1", "job-2", "job-3"] * 20  # not round-robin in disguise


def test_workers_with_most_free_capacity_are_filled_first() -> None:
    s = fixed(batch_size=1)
    s.worker_up("H1", {"threads": 2, "gpu": None, "slots": 1}, 0.0)
    s.worker_up("H2", {"threads": 2, "slots": 2}, 0.0)
    s.worker_up("H3", {"threads": 1, "gpu": "A100", "slots": 1}, 0.0)
    s.worker_up("H4", {"threads": 8, "slots": 1}, 0.0)
    (one,) = assigns(s.submit(None, FAST, inputs(1, "a"), 0.0))
    assert one.worker == "H2"  # two free slots
    order = [a.worker for a in assigns(s.submit(None, FAST, inputs(10, "b"), 0.0))]
    assert order == ["H3", "H4", "H1", "H2"]  # GPU, then threads, then name
    assert s.workers()["H2"]["batches"] == [1, 5]


def test_a_cold_worker_keeps_a_slot_for_other_jobs_while_it_probes() -> None:
    # First batches of a model may start the worker process and load the model
    # (seconds): a worker takes one such batch per model, so a job submitted
    # meanwhile still gets a slot at once instead of waiting for the cold start.
    s = Scheduler()
    for w in ("H1", "H2"):
        s.worker_up(w, {"threads": 1, "slots": 2}, 0.0)
    first = assigns(s.submit(None, FAST, inputs(40, "a"), 0.0))
    assert sorted(a.worker for a in first) == ["H1", "H2"] and all(
        len(a.queries) == 1 for a in first
    )
    second = s.submit(None, SLOW, inputs(40, "b"), 0.1)
    started = [a for a in second if isinstance(a, JobStarted)]
    assert started and started[0].waited == pytest.approx(0.0)
    assert sorted(a.worker for a in assigns(second)) == ["H1", "H2"]
    # Once measured, the second slot takes the same model again.
    follow = assigns(answer(s, first[0], 2.0, seconds=0.05))
    assert [a.model for a in follow] == [FAST] and follow[0].worker == first[0].worker


def test_bad_configuration_and_capacity_are_refused() -> None:
    with pytest.raises(ValueError, match="policy"):
        SchedulerConfig(policy="fastest-first")
    with pytest.raises(ValueError, match="batch_size"):
        SchedulerConfig(batch_size=0)
    s = fixed()
    with pytest.raises(ValueError, match="slots"):
        s.worker_up("H1", {"slots": 0}, 0.0)
    with pytest.raises(ValueError, match="threads"):
        s.worker_up("H1", {"threads": "two"}, 0.0)
    assert s.workers() == {}
    assert set(POLICIES) == {"fair", "round-robin", "random", "least-loaded"}


def test_worker_up_again_updates_capacity_and_fills_new_slots() -> None:
    s = fixed()
    s.worker_up("H1", CAP, 0.0)
    s.submit(None, FAST, inputs(40), 0.0)
    (a,) = assigns(s.worker_up("H1", {**CAP, "slots": 2}, 1.0))
    assert a.worker == "H1" and len(s.workers()["H1"]["batches"]) == 2


def test_forget_drops_finished_jobs_only() -> None:
    s = fixed()
    s.worker_up("H1", CAP, 0.0)
    (a,) = assigns(s.submit(None, FAST, inputs(2), 0.0))
    with pytest.raises(ValueError, match="running"):
        s.forget("job-1")
    answer(s, a, 1.0)
    assert s.forget("job-1") == []
    assert s.job_ids() == [] and s.forgotten("job-1")
    with pytest.raises(KeyError):
        s.results("job-1")
    assert s.forget("job-1") == []
    answer(s, a, 2.0)  # a late answer for a forgotten job is a duplicate
    assert s.duplicates == 2
    assert s.next_job_id() == "job-2"


# --- snapshots, standby and takeover ----------------------------------------------------------


def scenario(sim: SchedSim, swap: Callable[[], None] | None = None, swap_at: float = -1) -> None:
    """A busy run: jobs coming and going, a batch size change, crashes, late answers."""

    def until(t: float) -> None:
        if swap is not None and sim.now < swap_at <= t:
            sim.run_until(swap_at)
            swap()
        sim.run_until(t)

    for k in range(2, 6):
        sim.worker_up(f"H{k}", {**CAP, "slots": 2 if k == 5 else 1})
    sim.submit(FAST, 400)
    until(0.5)
    sim.submit(SLOW, 300)
    until(7.0)
    sim.crash("H3", answer_late=True)
    until(12.0)
    sim.feed(SetBatchSize(FAST, 4))
    until(15.0)
    sim.worker_up("H3")
    until(18.0)
    sim.crash("H4")
    until(25.0)
    sim.submit(FAST, 200)
    until(120.0)


def via_json(snapshot: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(snapshot))
    return out


def via_msgpack(snapshot: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = msgpack.unpackb(msgpack.packb(snapshot), strict_map_key=False)
    return out


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("codec", [via_json, via_msgpack])
@pytest.mark.parametrize("swap_at", [0.3, 7.0, 13.37, 40.0])
def test_snapshot_restore_mid_run_gives_the_same_run(
    policy: str, codec: Callable[[dict[str, Any]], dict[str, Any]], swap_at: float
) -> None:
    config = SchedulerConfig(policy=policy, seed=7)
    straight = SchedSim(Scheduler(config), COSTS)
    scenario(straight)

    resumed = SchedSim(Scheduler(config), COSTS)

    def swap() -> None:
        snap = resumed.scheduler.snapshot()
        assert codec(snap) == snap  # plain data: nothing lost on the wire
        resumed.scheduler = Scheduler.restore(codec(snap))
        assert resumed.scheduler.snapshot() == snap

    scenario(resumed, swap, swap_at)
    assert resumed.dispatches == straight.dispatches
    assert resumed.actions == straight.actions
    assert resumed.scheduler.snapshot() == straight.scheduler.snapshot()
    assert len(straight.finished) == 3


def test_a_standby_replaying_the_events_stays_identical() -> None:
    leader = SchedSim(Scheduler(), COSTS)
    scenario(leader)
    standby = Scheduler.restore(Scheduler().snapshot())
    standby_actions: list[Action] = []
    for event in leader.events:
        standby_actions += standby.handle(decode(encode(event)))
    assert standby_actions == [a for _, a in leader.actions]
    assert standby.snapshot() == leader.scheduler.snapshot()
    assert standby.c1(120.0) == leader.scheduler.c1(120.0)
    assert standby.c2() == leader.scheduler.c2()


def test_job_numbers_survive_snapshot_and_restore() -> None:
    s = fixed()
    for _ in range(3):
        s.submit(None, FAST, inputs(1), 0.0)
    restored = Scheduler.restore(via_json(s.snapshot()))
    assert restored.next_job_id() == "job-4"
    restored.submit(None, FAST, inputs(1), 1.0)
    assert restored.job_ids() == ["job-1", "job-2", "job-3", "job-4"]
    with pytest.raises(ValueError, match="version"):
        Scheduler.restore({**s.snapshot(), "version": 99})


def test_takeover_keeps_batches_on_live_workers_and_requeues_the_rest() -> None:
    sim = sim_with_workers(4)  # H2..H5; the leader H1 runs no jobs
    fast, slow = sim.submit(FAST, 300), sim.submit(SLOW, 300)
    sim.run_until(4.0)
    # The standby started from a snapshot at t=4 and has applied every event since.
    standby = Scheduler.restore(via_msgpack(sim.scheduler.snapshot()))
    seen = len(sim.events)
    sim.run_until(10.03)
    for event in sim.events[seen:]:
        standby.handle(event)
    assert standby.snapshot() == sim.scheduler.snapshot()
    on = {name: list(w["batches"]) for name, w in standby.workers().items()}
    assert all(on.values())
    # The leader and H3 die together; the standby hears of H3 only through takeover.
    sim.crash("H3", notify=False)
    actions = sim.takeover(standby, ["H1", "H2", "H4", "H5"])
    lost = [a for a in actions if isinstance(a, BatchLost)]
    assert [(a.worker, a.batch_id, a.reason) for a in lost] == [
        ("H3", on["H3"][0], "worker H3 is down")
    ]
    assert lost[0].requeued > 0
    assert "H3" not in standby.workers()
    for name in ("H2", "H4", "H5"):
        assert standby.workers()[name]["batches"] == on[name]  # still assigned
    sim.run_until(100.0)
    # The kept batches answered the new leader and counted: nothing ran twice.
    assert standby.duplicates == 0
    kept = {b for name in ("H2", "H4", "H5") for b in on[name]}
    assert kept <= {a.batch_id for a in sim.answers}
    for job in (fast, slow):
        assert standby.status(job)["state"] == "done"
        assert [r["input"] for r in standby.results(job)] == list(sim_inputs(sim, job))


def test_an_answer_from_another_worker_than_the_batchs_is_a_stray() -> None:
    # Two leaderships that started from one state may both give out a batch id (the
    # old one before it lost its lease): an answer that names this scheduler's batch
    # but comes from another worker is not that batch's, and changes nothing.
    s = fixed()
    two_workers(s)
    a1, a2 = assigns(s.submit(None, FAST, inputs(16), 0.0))
    assert a1.worker != a2.worker
    before = s.status("job-1")
    rows = [(i, row_for(name)) for i, name in a2.queries]
    s.batch_done(a1.worker, a2.batch_id, rows, [0.1] * len(rows), 1.0)
    assert s.strays == len(rows) and s.duplicates == 0
    assert s.status("job-1") == before
    assert list(s.workers()[a2.worker]["batches"]) == [a2.batch_id]  # still out
    s.batch_failed(a1.worker, a2.batch_id, "a stale failure", 1.0)
    assert s.status("job-1") == before
    assert list(s.workers()[a2.worker]["batches"]) == [a2.batch_id]
    answer(s, a2, 1.5)  # its own worker's answer counts
    assert s.status("job-1")["done"] == len(a2.queries)


def test_a_takeover_starts_the_batch_ids_of_its_term() -> None:
    s = fixed()
    two_workers(s)
    (a, b) = assigns(s.submit(None, FAST, inputs(32), 0.0))
    assert (a.batch_id, b.batch_id) == (1, 2)
    s.takeover(["H1", "H2"], 1.0, first_batch=2 << 32)
    (c,) = assigns(answer(s, a, 1.5))
    assert c.batch_id == 2 << 32
    s.takeover(["H1", "H2"], 2.0, first_batch=1 << 32)  # never backwards
    (d,) = assigns(answer(s, b, 2.5))
    assert d.batch_id == (2 << 32) + 1
    restored = Scheduler.restore(via_msgpack(s.snapshot()))
    assert restored.snapshot() == s.snapshot()
    with pytest.raises(ValueError):
        s.takeover([], 3.0, first_batch=-1)


def test_takeover_re_times_surviving_batches() -> None:
    s = Scheduler(SchedulerConfig(max_batch_seconds=None, batch_timeout=30.0))
    s.worker_up("H2", CAP, 100.0)
    (a,) = assigns(s.submit(None, FAST, inputs(8), 100.0))
    assert s.next_deadline() == 130.0
    assert s.takeover(["H2"], 500.0) == []
    assert s.next_deadline() == 530.0
    answer(s, a, 501.0)
    assert s.costs() == {}  # the old leader's dispatch time is no cost sample
    assert s.status("job-1")["state"] == "done"


def test_events_round_trip_through_the_wire() -> None:
    events: list[Event] = [
        Submit("job-3", FAST, ("images/a.jpg", "images/b.jpg"), 1.5),
        Submit(None, SLOW, (), 2.0),
        SetBatchSize(FAST, 4),
        WorkerUp("H2", {"threads": 4, "gpu": "A100", "slots": 2}, 3.0),
        WorkerDown("H2", 4.0),
        BatchDone("H2", 9, ((0, {"input": "images/a.jpg", "top5": [[1, "x", 0.5]]}),), (0.1,), 5.0),
        BatchFailed("H2", 9, "oom", 6.0),
        Tick(7.0),
        Takeover(("H2", "H3"), 8.0),
        Takeover(("H2", "H3"), 8.0, 3 << 32),
        Forget("job-3"),
    ]
    for event in events:
        assert decode(encode(event)) == event
        assert 100 <= getattr(type(event), "TAG", 0) < 140  # registered, in the events range
    with pytest.raises(DecodeError, match="unknown message tag 139"):
        decode(msgpack.packb([139, 1, 7.0]))
