"""The partition checker (tests/helpers/history.py) on small hand-made histories: each
anomaly alone is found, exactly once, and a clean history has none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.history import (
    FAIL,
    INFO,
    OK,
    Anomaly,
    Cut,
    History,
    Op,
    check,
    digest,
    load,
    summary,
)

A, B, C, D = (digest(x) for x in (b"a\n", b"b\n", b"c\n", b"d\n"))


class Builder:
    """A history by hand: every op is invoked at its id and completes a moment later."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def op(self, client: str, kind: str, name: str | None, outcome: str, **kw: object) -> Op:
        wrote = kw.pop("wrote", None)
        final = bool(kw.pop("final", False))
        i = len(self.ops)
        op = Op(i, client, kind, name, wrote, float(i), i + 0.5, outcome, dict(kw), final)  # type: ignore[arg-type]
        self.ops.append(op)
        return op

    def put(self, client: str, name: str, content: str, outcome: str, version: int | None) -> Op:
        result = {"version": version} if version is not None else {}
        return self.op(client, "put", name, outcome, wrote=content, **result)

    def get(self, client: str, name: str, version: int, content: str) -> Op:
        return self.op(client, "get", name, OK, version=version, digest=content)

    def final(self, client: str, name: str, listed: dict[int, str], asked: int = 100) -> Op:
        versions = sorted(listed, reverse=True)
        return self.final_raw(client, name, versions, listed, asked)

    def final_raw(
        self, client: str, name: str, versions: list[int], listed: dict[int, str], asked: int = 100
    ) -> Op:
        digests = {str(v): d for v, d in listed.items()}
        return self.op(
            client,
            "get-versions",
            name,
            OK,
            final=True,
            versions=versions,
            digests=digests,
            asked=asked,
        )

    def job(self, client: str, job_id: str, inputs: list[str]) -> Op:
        return self.op(client, "submit-job", None, OK, job_id=job_id, inputs=inputs)

    def output(self, client: str, job_id: str, rows: list[str]) -> Op:
        return self.op(client, "get-output", None, OK, final=True, job_id=job_id, inputs=rows)


def clean() -> Builder:
    """Two sides writing one name, a refused put, a put of unknown outcome that did land,
    reads during the run, and everything read back from two hosts; a job done once."""
    h = Builder()
    h.put("H1", "k", A, OK, 1)
    h.put("H4", "k", B, FAIL, None)  # the minority refused it
    h.put("H2", "k", C, INFO, None)  # timed out, but landed as v2
    h.get("H3", "k", 1, A)
    h.put("H3", "k", D, OK, 3)
    h.get("H5", "k", 3, D)
    h.get("H4", "k", 1, A)  # stale on the minority side: allowed
    h.job("H1", "j1", ["images/a", "images/b"])
    for host in ("H1", "H5"):
        h.final(host, "k", {3: D, 2: C, 1: A})
        h.output(host, "j1", ["images/b", "images/a"])
    return h


def kinds(found: list[Anomaly]) -> list[str]:
    return [a.kind for a in found]


def test_a_clean_history_has_no_anomaly() -> None:
    assert check(clean().ops) == []


def test_older_versions_outside_the_final_window_are_not_lost() -> None:
    h = Builder()
    for v, content in enumerate((A, B, C), start=1):
        h.put("H1", "k", content, OK, v)
    h.final("H2", "k", {3: C, 2: B}, asked=2)  # v1 is older than the two asked for
    assert check(h.ops) == []


def test_a_lost_put() -> None:
    h = clean()
    h.ops[-2].result["versions"] = [3, 1]  # H5's final read lacks v2 (an info put: fine)
    del h.ops[-2].result["digests"]["2"]
    assert check(h.ops) == []
    h.ops[-2].result["versions"] = [2, 1]  # ... and lacks the acknowledged v3
    h.ops[-2].result["digests"] = {"2": C, "1": A}
    found = check(h.ops)
    assert kinds(found) == ["lost"]
    assert (found[0].name, found[0].version, found[0].ops) == ("k", 3, (4, h.ops[-2].id))
    assert "H5" in found[0].detail


def test_a_put_with_no_final_read_at_all_is_lost() -> None:
    h = Builder()
    h.put("H1", "k", A, OK, 1)
    h.op("H2", "get-versions", "k", INFO, final=True)
    assert kinds(check(h.ops)) == ["lost"]


def test_a_replaced_put() -> None:
    h = clean()
    h.final("H3", "k", {3: D, 2: C, 1: B})  # v1 is now the refused put's content
    found = check(h.ops)
    # Reading the refused put's content is itself an anomaly, and v1 was replaced.
    assert sorted(kinds(found)) == ["aborted-read", "replaced"]
    replaced = next(a for a in found if a.kind == "replaced")
    assert (replaced.name, replaced.version, replaced.ops) == ("k", 1, (0, h.ops[-1].id))


def test_a_replaced_put_by_an_unacknowledged_one() -> None:
    h = clean()
    h.final("H3", "k", {3: D, 2: C, 1: C})
    assert kinds(check(h.ops)) == ["replaced"]


def test_two_acknowledged_puts_with_one_version() -> None:
    h = Builder()
    h.put("H1", "k", A, OK, 1)
    h.put("H4", "k", B, OK, 1)  # another leader granted v1 again
    h.final("H1", "k", {1: A})
    found = check(h.ops)
    assert sorted(kinds(found)) == ["duplicate", "replaced"]
    dup = next(a for a in found if a.kind == "duplicate")
    assert (dup.name, dup.version, dup.ops) == ("k", 1, (0, 1))


def test_a_read_of_content_nobody_wrote() -> None:
    h = clean()
    h.get("H2", "k", 3, digest(b"garbage\n"))
    found = check(h.ops)
    assert sorted(kinds(found)) == ["conflict", "phantom-read"]


def test_a_phantom_in_a_final_read_is_also_replaced() -> None:
    h = clean()
    h.final("H2", "k", {3: digest(b"zzz\n"), 2: C, 1: A})
    assert sorted(kinds(check(h.ops))) == ["phantom-read", "replaced"]


def test_content_written_to_another_name_is_a_phantom_here() -> None:
    h = clean()
    h.put("H1", "other", digest(b"x\n"), OK, 1)
    h.final("H1", "other", {1: digest(b"x\n")})
    h.get("H2", "k", 7, digest(b"x\n"))
    assert kinds(check(h.ops)) == ["phantom-read"]


def test_a_read_during_the_run_of_other_content_under_an_acknowledged_version() -> None:
    h = clean()
    h.get("H4", "k", 3, C)  # C was written (v2), but v3 is D
    assert kinds(check(h.ops)) == ["conflict"]


def test_reading_a_refused_put() -> None:
    h = clean()
    h.get("H4", "k", 2, B)
    assert kinds(check(h.ops)) == ["aborted-read"]


def test_versions_out_of_order_in_a_final_read() -> None:
    h = clean()
    h.final_raw("H2", "k", [3, 3, 1], {3: D, 1: A})
    found = check(h.ops)
    assert kinds(found) == ["order"]  # v3 and v1 are there: nothing lost
    h = clean()
    h.final_raw("H2", "k", [1, 2, 3], {3: D, 2: C, 1: A})
    assert kinds(check(h.ops)) == ["order"]


def test_a_job_missing_a_query_or_answering_one_twice() -> None:
    h = clean()
    h.output("H3", "j1", ["images/a"])
    assert kinds(check(h.ops)) == ["job-missing"]
    h = clean()
    h.output("H3", "j1", ["images/a", "images/b", "images/a"])
    found = check(h.ops)
    assert kinds(found) == ["job-duplicate"] and "images/a 2 times" in found[0].detail
    h = clean()
    h.output("H3", "j1", ["images/a", "images/b", "images/zz"])
    assert kinds(check(h.ops)) == ["job-unexpected"]


def test_a_job_without_any_output_after_the_heal() -> None:
    h = clean()
    h.job("H2", "j2", ["images/a"])
    h.op("H2", "get-output", None, INFO, final=True)
    found = check(h.ops)
    assert kinds(found) == ["job-lost"] and found[0].name == "j2"


def test_a_refused_or_unknown_submission_owes_nothing() -> None:
    h = clean()
    h.op("H4", "submit-job", None, FAIL, error="no majority")
    h.op("H2", "submit-job", None, INFO, error="timed out")
    assert check(h.ops) == []


def test_several_anomalies_at_once_are_all_found() -> None:
    h = clean()
    h.put("H4", "k", digest(b"e\n"), OK, 3)  # a second v3: both final reads hold D
    h.output("H3", "j1", ["images/a"])
    found = check(h.ops)
    # H5 read v3 = D during the run: a conflict with the second acknowledged v3.
    assert sorted(kinds(found)) == [
        "conflict",
        "duplicate",
        "job-missing",
        "replaced",
        "replaced",
    ]


def test_the_recorder_round_trips_through_json_lines(tmp_path: Path) -> None:
    ticks = iter(range(100))
    history = History(clock=lambda: float(next(ticks)))
    put = history.invoke("H1", "put", "k", A)
    history.complete(put, OK, version=1, replicas=["H1", "H2"])
    pending = history.invoke("H2", "get", "k")
    path = tmp_path / "history.jsonl"
    history.dump(path)
    back = load(path)
    assert back == history.ops
    assert (back[0].invoke, back[0].complete, back[0].result["version"]) == (0.0, 1.0, 1)
    assert (back[1].outcome, back[1].complete) == (INFO, None)  # never completed
    assert json.loads(path.read_text().splitlines()[0])["client"] == "H1"
    assert pending.id == 1
    with pytest.raises(ValueError, match="outcome"):
        history.complete(pending, "maybe")


def test_the_summary_counts_by_kind_and_outcome() -> None:
    h = clean()
    text = summary(h.ops, check(h.ops))
    assert "put: ok 2, fail 1, info 1" in text and "0 anomalies" in text
    h.get("H4", "k", 2, B)
    text = summary(h.ops, check(h.ops))
    assert "1 anomalies: aborted-read 1" in text and "aborted-read: k v2" in text


def test_the_partition_rules_hold_for_minority_clients_once_a_cut_settled() -> None:
    h = Builder()
    early = h.put("H1", "k", A, OK, 1)  # invoked at 0: before the cut settled
    refused = h.put("H1", "k", B, FAIL, None)  # at 1
    h.put("H4", "k", C, OK, 2)  # the majority side writes
    h.op("H2", "submit-job", None, FAIL, error="no majority")
    h.final("H3", "k", {2: C, 1: A})
    cut = Cut(start=0.5, end=10.0, minority=("H1", "H2"), kind="minority")
    assert refused.invoke == 1.0 and early.invoke == 0.0
    assert check(h.ops, [cut], settle=0.4) == []
    h.put("H2", "k", D, OK, 3)  # acknowledged on the minority
    h.op("H1", "submit-job", None, OK, job_id="j9", inputs=[])
    h.put("H1", "k", digest(b"e\n"), INFO, None)  # refused without saying why
    h.put("H4", "k", digest(b"f\n"), INFO, None)  # the majority side may time out
    h.final("H3", "k", {3: D, 2: C, 1: A})
    later = h.put("H2", "k", digest(b"g\n"), OK, 4)
    later.complete = 10.5  # completed after the heal: not inside the cut
    h.final("H5", "k", {4: digest(b"g\n"), 3: D, 2: C, 1: A})
    found = [a for a in check(h.ops, [cut], settle=0.4) if a.kind not in ("lost", "job-lost")]
    assert kinds(found) == ["minority-write", "minority-job", "vague-refusal"]
    assert found[0].version == 3 and "H2 on the minority" in found[0].detail
    assert check(h.ops, [cut], settle=9.0) == check(h.ops)  # nothing settled in time


def test_the_summary_spells_out_a_few_of_each_kind() -> None:
    h = clean()
    for _ in range(7):
        h.get("H4", "k", 2, B)
    h.get("H2", "k", 3, digest(b"zz\n"))
    text = summary(h.ops, check(h.ops), per_kind=2)
    assert text.count("aborted-read: k v2") == 2 and "... and 5 more aborted-read" in text
    assert "phantom-read: k v3" in text and "more phantom" not in text


def test_two_submissions_given_one_job_id() -> None:
    h = clean()
    h.job("H4", "j1", ["images/c"])  # the other side's scheduler counted to j1 too
    found = check(h.ops)
    # ... and the second job, checked against j1's output from H1 and from H5, lacks
    # images/c and has a and b that it never asked for.
    assert kinds(found) == ["job-id-reused"] + ["job-missing", *["job-unexpected"] * 2] * 2
    assert found[0].ops == (7, h.ops[-1].id)
