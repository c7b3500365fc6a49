"""The put-dir batch state machine (sdfs.putbatch): per-file quorum rules for a batch."""

from __future__ import annotations

import pytest

from net.errors import ErrorKind
from net.messages import Grant, VersionState
from sdfs.putbatch import BatchCoordinator, node_errors
from sdfs.putcoord import Abort, NodeError

ABCD = ("A", "B", "C", "D")
DOWN = NodeError(ErrorKind.FAILED, "cannot reach it")
TAKEN = NodeError(ErrorKind.CONFLICT, "v1 already belongs to another put")


def grants(*names: str, replicas: tuple[str, ...] = ABCD) -> list[Grant]:
    return [Grant(n, 1, f"id-{n}", replicas) for n in names]


def stored_everywhere(c: BatchCoordinator, answers: dict[str, list[NodeError | None]]) -> None:
    for node, indices in c.store_plan().items():
        c.stored(node, indices, answers.get(node, [None] * len(indices)))


def test_a_batch_stored_and_committed_everywhere_succeeds_file_by_file() -> None:
    c = BatchCoordinator(grants("x", "y"), 3)
    c.read(0, 3, "h0")
    c.read(1, 4, "h1")
    assert c.store_plan() == {n: [0, 1] for n in ABCD}
    for n in ABCD:
        c.stored(n, [0, 1], [None, None])
    assert c.commit_plan() == {n: [0, 1] for n in ABCD}
    for n in ABCD:
        c.committed(n, [0, 1], [None, None])
    out = c.finish()
    assert [(i, r.name, r.size, r.sha256, r.state, h) for i, r, h in out.succeeded] == [
        (0, "x", 3, "h0", VersionState.COMMITTED, ABCD),
        (1, "y", 4, "h1", VersionState.COMMITTED, ABCD),
    ]
    assert (out.aborts, out.retry, out.failed) == ([], [], [])


def test_a_file_commits_on_the_replicas_that_stored_it_when_they_are_a_quorum() -> None:
    c = BatchCoordinator(grants("x", "y"), 3)
    c.read(0, 1, "h")
    c.read(1, 1, "h")
    stored_everywhere(c, {"D": [None, DOWN]})  # D took x, not y
    assert c.commit_plan() == {"A": [0, 1], "B": [0, 1], "C": [0, 1], "D": [0]}
    for node, indices in {"A": [0, 1], "B": [0, 1], "C": [0, 1], "D": [0]}.items():
        c.committed(node, indices, [None] * len(indices))
    out = c.finish()
    assert [(r.name, h) for _, r, h in out.succeeded] == [("x", ABCD), ("y", ("A", "B", "C"))]
    assert out.aborts == []


def test_a_file_below_the_quorum_is_aborted_where_it_may_be_and_retried() -> None:
    c = BatchCoordinator(grants("x", "y"), 3)
    c.read(0, 1, "h")
    c.read(1, 1, "h")
    # x is stored on A and B only; C's answer was lost (it may hold both).
    plan = c.store_plan()
    c.stored("A", plan["A"], [None, None])
    c.stored("B", plan["B"], [None, None])
    c.stored("C", plan["C"], DOWN)
    c.stored("D", plan["D"], [TAKEN, None])
    assert c.commit_plan() == {"A": [1], "B": [1], "D": [1]}
    for node in ("A", "B", "D"):
        c.committed(node, [1], [None])
    out = c.finish()
    assert [r.name for _, r, _ in out.succeeded] == ["y"]
    assert out.aborts == [Abort("x", 1, "id-x", ABCD)]
    [(i, why)] = out.retry
    assert i == 0
    assert why == (
        "put x failed: fewer than 3 replicas stored it "
        "(C: cannot reach it; D: v1 already belongs to another put)"
    )
    assert out.failed == []


def test_a_commit_that_reaches_too_few_replicas_is_aborted_and_retried() -> None:
    c = BatchCoordinator(grants("x"), 3)
    c.read(0, 1, "h")
    stored_everywhere(c, {})
    plan = c.commit_plan()
    for node in ("A", "B"):
        c.committed(node, plan[node], [None])
    c.committed("C", plan["C"], DOWN)
    c.committed("D", plan["D"], [DOWN])
    out = c.finish()
    assert out.succeeded == []
    assert out.aborts == [Abort("x", 1, "id-x", ABCD)]
    assert out.retry[0][1].startswith("put x failed: commit reached 2 of 3 replicas")


def test_local_failures_fail_at_once_and_give_the_grant_back() -> None:
    c = BatchCoordinator(grants("gone", "changed", "ok"), 3)
    c.unread(0, "cannot read /src/gone: No such file or directory")
    c.sent(1, 9, {"A": "h1", "B": "h2"}, {"C": DOWN})  # read twice, differently
    c.sent(2, 9, {n: "h" for n in ABCD}, {})
    assert c.store_plan() == {n: [2] for n in ABCD}
    out = c.finish()  # the shell was cut short: ok was never stored
    assert out.aborts == [
        Abort("gone", 1, "id-gone", ()),
        Abort("changed", 1, "id-changed", ("A", "B", "C")),
        Abort("ok", 1, "id-ok", ABCD),
    ]
    assert [i for i, _ in out.failed] == [0, 1]
    assert "the local file changed while it was sent" in out.failed[1][1]
    assert out.retry == [(2, "put ok failed: never stored")]


def test_an_event_out_of_order_is_a_bug_not_a_state() -> None:
    c = BatchCoordinator(grants("x"), 3)
    with pytest.raises(RuntimeError, match="event in state 'granted'"):
        c.committed("A", [0], [None])


def test_a_quorum_is_at_most_the_replicas_there_are() -> None:
    c = BatchCoordinator(grants("x", replicas=("A", "B")), 3)
    c.read(0, 1, "h")
    stored_everywhere(c, {})
    for node, indices in c.commit_plan().items():
        c.committed(node, indices, [None])
    assert [h for _, _, h in c.finish().succeeded] == [("A", "B")]


def test_batch_acks_read_as_node_errors() -> None:
    assert node_errors((-1, 5, 99), ("", "taken", "new kind")) == [
        None,
        NodeError(ErrorKind.CONFLICT, "taken"),
        NodeError(ErrorKind.FAILED, "new kind"),
    ]
