"""What the cluster promises when the network splits (issue 12), case by case.

Five nodes on five testbed hosts (network namespaces on a bridge, 1 Gbit/s links;
the introducer on a sixth).  Each membership case cuts the network, waits until each
side has removed the other, restores it and measures the time to heal: from the link
coming back until every node's ``list_mem`` lists all five and names one leader (the
consoles poll about once a second on a busy host, so the figure is that coarse).

* (a) a minority of two hosts split off;
* (b) a split that takes the leader into the minority;
* (c) one host's cable pulled and plugged back;
* (d) the switch flapping: every link down for 1.5 s, then up.

Then the rules on top of membership: only a side holding a majority of the cluster
file's nodes writes (a put on the minority fails with a line naming the "majority";
the majority's succeed), and after the heal every acknowledged put reads back from
every host with its content, versions of each name unique and ordered (checked by
:func:`tests.helpers.history.check` over the recorded operations); only a majority side
schedules (``C4 submit-job`` on the minority is refused the same way), a job whose
leader is cut off is finished by the majority side, and after the heal its output
holds every query exactly once.

One cluster serves every case (each leaves it healed).  About 2.5 minutes in all on
two busy cores, a minute of it the inference case.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.topology import CLEANUP_TIME, PING_DURATION, PING_TIMEOUT, MembershipConfig
from scripts.localcluster import ConsoleError
from tests.helpers.history import FAIL, OK, History, Op, check, summary
from tests.helpers.imagegen import image_set
from tests.helpers.netns import NetnsCluster, require_netns
from tests.helpers.recorded import Client, until_ok

pytestmark = [pytest.mark.integration, pytest.mark.background, pytest.mark.timeout(300)]

DETECTION_BOUND = PING_DURATION + PING_TIMEOUT + CLEANUP_TIME + 1.0
# The first Merge crosses within one reconnect interval of the heal; then refutations
# and gossip, and one more round of the consoles' polling on a busy host.
HEAL_BOUND = MembershipConfig().reconnect_interval + 6.0
IMAGES = 60
# What the scheduling test runs: a second a query (no torch: what is tested is who
# schedules and that every query comes back once, not the model), so that the job of
# IMAGES queries on 5, then 3 workers, outlasts the split's detection and takeover.
MODEL = "noop-1000ms"


@pytest.fixture(scope="module")
def room() -> Iterator[NetnsCluster]:
    require_netns()
    c = NetnsCluster(5, {"transfer": "tcp", "versions_kept": 100})
    try:
        c.build()
        c.start()
        c.wait_healed(60, "the five hosts to converge")
        yield c
    finally:
        c.close()


@pytest.fixture
def logs_on_failure(room: NetnsCluster, request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for name in ["introducer", *room.names]:
            print(f"--- {name} log (last lines) ---\n{room.tail(name, 25)}")


def split_and_heal(c: NetnsCluster, group: list[str], case: str) -> float:
    """Split ``group`` off, wait for both sides to see it, heal; the time to heal."""
    rest = sorted(set(c.names) - set(group))
    c.split(group)
    try:
        views = c.wait_views(
            {**{n: set(group) for n in group}, **{n: set(rest) for n in rest}},
            DETECTION_BOUND + 15,
            f"each side of {group} | {rest} to remove the other",
        )
        assert {views[n][1] for n in group} == {group[0]}  # each side has its own leader
        assert {views[n][1] for n in rest} == {rest[0]}
    finally:
        c.heal()
    healed_at = time.monotonic()
    took, views = c.wait_healed(HEAL_BOUND + 20, f"{case} to heal", since=healed_at)
    print(f"({case}) {group} | {rest}: healed in {took:.1f} s (bound {HEAL_BOUND:.0f} s)")
    assert took <= HEAL_BOUND
    assert {leader for _, leader in views.values()} == {"H1"}
    return took


@pytest.mark.usefixtures("logs_on_failure")
def test_a_minority_split_off(room: NetnsCluster) -> None:
    split_and_heal(room, ["H4", "H5"], "a: a minority split off")


@pytest.mark.usefixtures("logs_on_failure")
def test_b_the_leader_split_into_the_minority(room: NetnsCluster) -> None:
    leader = room.leader("H3")
    assert leader == "H1"
    split_and_heal(room, [leader, "H2"], "b: the leader in the minority")


@pytest.mark.usefixtures("logs_on_failure")
def test_c_one_host_cable_pulled_and_plugged_back(room: NetnsCluster) -> None:
    c = room
    others = set(c.names) - {"H3"}
    c.link("H3", up=False)
    try:
        c.wait_views(
            {**{n: others for n in others}, "H3": {"H3"}},
            DETECTION_BOUND + 15,
            "H3 and the rest to remove each other",
        )
    finally:
        c.link("H3", up=True)
    up = time.monotonic()
    took, views = c.wait_healed(HEAL_BOUND + 20, "H3 to rejoin", since=up)
    print(f"(c) H3's cable: healed in {took:.1f} s (bound {HEAL_BOUND:.0f} s)")
    assert took <= HEAL_BOUND
    assert {leader for _, leader in views.values()} == {"H1"}


@pytest.mark.usefixtures("logs_on_failure")
def test_d_a_bridge_flap(room: NetnsCluster) -> None:
    c = room
    c.flap(1.5)
    up = time.monotonic()
    took, views = c.wait_healed(HEAL_BOUND + 20, "the flap to heal", since=up)
    print(f"(d) every link down 1.5 s: healed in {took:.1f} s (bound {HEAL_BOUND:.0f} s)")
    assert took <= HEAL_BOUND
    assert {leader for _, leader in views.values()} == {"H1"}
    # A short flap may cost suspicions, but everyone stays (or is back) and nobody exited.
    c.assert_running()


def put_until_ok(client: Client, name: str, within: float = 20.0) -> Op:
    """A put, tried again while the majority side's new leader takes over (it waits
    for the old leader's lease to run out, then rebuilds): every try is recorded."""
    deadline = time.monotonic() + within
    while True:
        op = client.put(name)
        if op.outcome == OK or time.monotonic() >= deadline:
            return op
        time.sleep(1)


@pytest.mark.usefixtures("logs_on_failure")
def test_only_the_majority_writes_and_no_acknowledged_put_is_lost(
    room: NetnsCluster, tmp_path: Path
) -> None:
    c = room
    history = History()
    clients = {h: Client(c, history, h) for h in c.names}
    names = ["part/x", "part/y"]
    for name in names:
        assert clients["H3"].put(name).outcome == OK  # data on both sides before the cut
    minority, majority = ["H1", "H2"], ["H3", "H4", "H5"]  # the leader in the minority
    c.split(minority)
    try:
        c.wait_views(
            {**{n: set(minority) for n in minority}, **{n: set(majority) for n in majority}},
            DETECTION_BOUND + 15,
            "the sides to remove each other",
        )
        refused = clients["H1"].put("part/x")
        refused_too = clients["H2"].put("part/y")
        accepted = [put_until_ok(clients[h], n) for h in ("H4", "H5") for n in names]
        for h in ("H1", "H4"):  # reads answer where the data is reachable, maybe stale
            clients[h].get("part/x")
    finally:
        c.heal()
    c.wait_healed(HEAL_BOUND + 20, "the split to heal")
    for h in c.names:
        for name in names:
            until_ok(functools.partial(clients[h].get_versions, name, 100, final=True))
    anomalies = check(history.ops)
    history.dump(tmp_path / "history.jsonl")
    print(summary(history.ops, anomalies))
    for op in (refused, refused_too):
        assert op.outcome == FAIL and "majority" in op.result["error"], op
    for op in accepted:
        assert op.outcome == OK, op
    assert anomalies == [], f"{summary(history.ops, anomalies)}\n(history: {tmp_path})"
    finals = [op for op in history.ops if op.final]
    for h in c.names:  # every host read every name back (perhaps after a retry)
        for name in names:
            assert any(op.client == h and op.name == name and op.outcome == OK for op in finals), (
                h,
                name,
            )


@pytest.mark.usefixtures("logs_on_failure")
def test_only_the_majority_schedules_and_every_query_comes_back_once(
    room: NetnsCluster, tmp_path: Path
) -> None:
    c = room
    images = image_set(tmp_path, IMAGES)
    c.console("H3", "put-dir", str(images), "images", timeout=120)
    c.console("H3", "C3", MODEL, "2")
    history = History()
    clients = {h: Client(c, history, h) for h in c.names}
    inputs = [f"images/{p.name}" for p in images.iterdir()]
    job = clients["H3"].submit_job(MODEL, "images/*", inputs)
    assert job.outcome == OK, job
    job_id = job.result["job_id"]

    def done(via: str) -> int:
        return int(c.console(via, "C4", "status", job_id)["done"])

    deadline = time.monotonic() + 180
    while done("H3") < 4:  # the workers are warm and the job is under way
        assert time.monotonic() < deadline, "the job never got under way"
        time.sleep(0.5)
    minority, majority = ["H1", "H2"], ["H3", "H4", "H5"]  # the scheduler and its standby
    c.split(minority)
    try:
        c.wait_views(
            {**{n: set(minority) for n in minority}, **{n: set(majority) for n in majority}},
            DETECTION_BOUND + 15,
            "the sides to remove each other",
        )
        refused = clients["H1"].submit_job(MODEL, "images/*", inputs)
        deadline = time.monotonic() + 180
        while True:  # the majority side carries the job to its end
            try:
                status = c.console("H4", "C4", "status", job_id)
            except ConsoleError as e:
                raise AssertionError(f"the majority side lost job {job_id}: {e}") from None
            if status["state"] in ("done", "failed"):
                break
            assert time.monotonic() < deadline, f"job {job_id} stuck on the majority: {status}"
            time.sleep(1)
    finally:
        c.heal()
    print(f"job {job_id} of {len(inputs)} queries, on the majority side: {status}")
    assert status["state"] == "done", status
    assert refused.outcome == FAIL and "majority" in refused.result["error"], refused
    c.wait_healed(HEAL_BOUND + 20, "the split to heal")
    for h in c.names:
        until_ok(functools.partial(clients[h].get_output, job_id, final=True))
    anomalies = check(history.ops)
    history.dump(tmp_path / "history.jsonl")
    print(summary(history.ops, anomalies))
    assert anomalies == [], f"{summary(history.ops, anomalies)}\n(history: {tmp_path})"
    outputs = [op for op in history.ops if op.kind == "get-output" and op.outcome == OK]
    assert {op.client for op in outputs} == set(c.names), outputs
