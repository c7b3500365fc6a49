"""The put coordinator (sdfs.putcoord): every path through a put, with plain ``now``."""

from __future__ import annotations

import pytest

from net.errors import ErrorKind
from net.messages import PutGrant, VersionState
from sdfs.putcoord import (
    Abort,
    Commit,
    Fail,
    Ingest,
    NodeError,
    Phase,
    PutCoordinator,
    Regrant,
    Report,
    Send,
    Succeed,
)

NAME = "images/a.jpg"
REPLICAS = ("H1", "H2", "H3", "H4")
GRANT = PutGrant(NAME, 7, "put-1", REPLICAS)
DIGEST = "ab" * 32
DOWN = NodeError(ErrorKind.FAILED, "cannot reach 127.0.0.1:8004: Connection refused")
TAKEN = NodeError(ErrorKind.CONFLICT, "images/a.jpg v7 already belongs to another put")


def coordinator(max_attempts: int = 3) -> PutCoordinator:
    return PutCoordinator(NAME, 1000, write_quorum=3, max_attempts=max_attempts)


def test_the_happy_path_commits_on_the_replicas_that_stored_it_and_reports() -> None:
    c = coordinator()
    assert c.granted(GRANT, now=10.0) == [Send(GRANT)]
    [ingest] = c.sent({n: DIGEST for n in REPLICAS}, {})
    assert isinstance(ingest, Ingest) and ingest.nodes == REPLICAS
    assert ingest.record.state == VersionState.PENDING and ingest.record.sha256 == DIGEST
    assert (ingest.record.version, ingest.record.put_id, ingest.record.size) == (7, "put-1", 1000)
    assert c.ingested(["H1", "H2", "H4"], {"H3": DOWN}) == [
        Commit(ingest.record, ("H1", "H2", "H4"))
    ]
    report, succeed = c.committed(["H4", "H1", "H2"], now=10.5)
    assert isinstance(report, Report) and isinstance(succeed, Succeed)
    assert report.holders == succeed.holders == ("H1", "H2", "H4")
    assert succeed.record.state == VersionState.COMMITTED and succeed.record.sha256 == DIGEST
    assert c.phase is Phase.DONE and c.times == {"start": 10.0, "granted": 10.0, "committed": 10.5}


def test_one_replica_down_still_meets_the_write_quorum() -> None:
    c = coordinator()
    c.granted(GRANT, 0.0)
    [ingest] = c.sent({"H1": DIGEST, "H2": DIGEST, "H3": DIGEST}, {"H4": DOWN})
    assert isinstance(ingest, Ingest) and ingest.nodes == ("H1", "H2", "H3")


def test_below_the_quorum_the_attempt_aborts_everywhere_a_copy_may_be_and_fails() -> None:
    c = coordinator()
    c.granted(GRANT, 0.0)
    c.sent({"H1": DIGEST, "H2": DIGEST, "H3": DIGEST}, {"H4": DOWN})
    # H3's reply was lost: it may hold a pending copy, so it is aborted too.
    steps = c.ingested(["H1", "H2"], {"H3": DOWN})
    assert steps[0] == Abort(NAME, 7, "put-1", ("H1", "H2", "H3"))
    assert isinstance(steps[1], Fail) and steps[1].kind is ErrorKind.NO_QUORUM
    assert steps[1].reason.startswith(f"put {NAME} failed: fewer than 3 replicas stored it (")
    assert "H3: cannot reach" in steps[1].reason and "H4: cannot reach" in steps[1].reason
    assert c.phase is Phase.FAILED


def test_a_commit_that_misses_the_quorum_aborts_the_stored_copies() -> None:
    c = coordinator()
    c.granted(GRANT, 0.0)
    c.sent({n: DIGEST for n in REPLICAS}, {})
    c.ingested(list(REPLICAS), {})
    steps = c.committed(["H1", "H2"], 1.0)
    assert steps[0] == Abort(NAME, 7, "put-1", REPLICAS)
    assert isinstance(steps[1], Fail) and "commit reached 2 of 3 replicas" in steps[1].reason


def test_commit_replies_from_nodes_that_did_not_store_it_do_not_count() -> None:
    c = coordinator()
    c.granted(GRANT, 0.0)
    c.sent({n: DIGEST for n in REPLICAS}, {})
    c.ingested(["H1", "H2", "H3"], {"H4": DOWN})
    steps = c.committed(["H1", "H2", "H4"], 1.0)
    assert isinstance(steps[-1], Fail)


def test_nothing_sent_anywhere_gives_the_number_back_and_fails() -> None:
    c = coordinator()
    c.granted(GRANT, 0.0)
    steps = c.sent({}, {n: DOWN for n in REPLICAS})
    assert steps[0] == Abort(NAME, 7, "put-1", ())
    assert isinstance(steps[1], Fail) and "no replica received the bytes" in steps[1].reason


def test_a_file_that_changed_while_sent_is_never_ingested() -> None:
    c = coordinator()
    c.granted(GRANT, 0.0)
    steps = c.sent({"H1": DIGEST, "H2": DIGEST, "H3": "cd" * 32, "H4": DIGEST}, {})
    assert [type(s) for s in steps] == [Abort, Fail]
    assert isinstance(steps[1], Fail) and "changed while it was sent" in steps[1].reason
    assert steps[1].kind is ErrorKind.FAILED  # not a quorum problem: retrying will not help


def test_a_version_taken_by_another_put_regrants_then_succeeds() -> None:
    c = coordinator()
    c.granted(GRANT, 0.0)
    c.sent({n: DIGEST for n in REPLICAS}, {})
    steps = c.ingested(["H1"], {"H2": TAKEN, "H3": TAKEN, "H4": TAKEN})
    assert steps == [Abort(NAME, 7, "put-1", REPLICAS), Regrant(TAKEN.text)]
    assert c.phase is Phase.WAITING_GRANT
    fresh = PutGrant(NAME, 8, "put-2", REPLICAS)
    assert c.granted(fresh, 2.0) == [Send(fresh)]
    # The new attempt starts clean: the old refusals are not held against it.
    [ingest] = c.sent({n: DIGEST for n in REPLICAS}, {})
    assert isinstance(ingest, Ingest) and ingest.record.version == 8
    c.ingested(list(REPLICAS), {})
    assert isinstance(c.committed(list(REPLICAS), 3.0)[-1], Succeed)
    assert c.attempts == 2 and c.times["start"] == 0.0 and c.times["granted"] == 2.0


def test_regrants_stop_after_max_attempts() -> None:
    c = coordinator(max_attempts=2)
    for version in (7, 8):
        c.granted(PutGrant(NAME, version, f"put-{version}", REPLICAS), 0.0)
        c.sent({n: DIGEST for n in REPLICAS}, {})
        steps = c.ingested([], {n: TAKEN for n in REPLICAS})
    assert isinstance(steps[-1], Fail) and "already belongs to another put" in steps[-1].reason


def test_a_refused_grant_fails_with_the_leaders_kind() -> None:
    c = coordinator()
    [fail] = c.refused("only 2 live nodes; a put needs 3", ErrorKind.NO_QUORUM)
    assert fail == Fail(f"put {NAME}: only 2 live nodes; a put needs 3", ErrorKind.NO_QUORUM)


def test_a_small_ring_needs_every_replica_it_was_given() -> None:
    c = coordinator()
    c.granted(PutGrant(NAME, 1, "p", ("H1", "H2")), 0.0)
    c.sent({"H1": DIGEST, "H2": DIGEST}, {})
    assert isinstance(c.ingested(["H1"], {"H2": DOWN})[-1], Fail)


def test_events_out_of_order_are_bugs_not_silent_state_changes() -> None:
    c = coordinator()
    with pytest.raises(RuntimeError, match="phase 'waiting for a grant'"):
        c.sent({}, {})
    c.granted(GRANT, 0.0)
    with pytest.raises(RuntimeError):
        c.granted(GRANT, 0.0)
    with pytest.raises(ValueError, match="a grant for other"):
        coordinator().granted(PutGrant("other", 1, "p", REPLICAS), 0.0)
