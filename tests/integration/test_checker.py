"""A Jepsen-style run: clients on every host write and read while the network is cut.

Five nodes on five testbed hosts; one client per host (a thread running one-shot
``python -m console`` commands inside the host's namespace, against its own node, so a
client is always cut off with its host) puts and reads a few shared names (writes to
one name race across the sides of a cut), and a small job (ten images, the paced
pseudo-model ``noop-1000ms``) is submitted from a random host every 12 s.  The
nemesis (:mod:`tests.helpers.nemesis`, drawn from a seed) splits off a minority, puts
the leader into a minority, pulls one host's cable and flaps the switch, each followed
by a quiet spell.  At the end everything is healed, the cluster must merge into one
membership, and every host reads back every name's versions and every job's output;
:func:`tests.helpers.history.check` then looks for anomalies in the recorded history
(lost, replaced or duplicated versions, reads of content nobody wrote, misordered
versions, job queries missing or twice, and writes or jobs a minority acknowledged or
refused without naming the majority).

    IDUNNO_CHECKER_SECONDS=600 IDUNNO_CHECKER_SEED=42 IDUNNO_HISTORY_DIR=/tmp/hist \\
        .venv/bin/pytest -m integration -s tests/integration/test_checker.py

Default: 120 s of faults (a round of the four kinds; longer runs with
IDUNNO_CHECKER_SECONDS), a random seed (printed).  The history (``history.jsonl``,
one operation per line), the nemesis log, a summary and the nodes' logs go to
``$IDUNNO_HISTORY_DIR/checker-SEED-TIME`` or, without it, to the test's pytest
temporary directory; the failure message says where.  3.5-5 minutes in all.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import itertools
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.topology import CLEANUP_TIME, PING_DURATION, PING_TIMEOUT
from scripts.localcluster import ConsoleError
from tests.helpers.history import OK, Cut, History, check, summary
from tests.helpers.imagegen import image_set
from tests.helpers.nemesis import Fault, schedule, targets
from tests.helpers.netns import NetnsCluster, require_netns
from tests.helpers.recorded import Client, until_ok, write_artifacts

SECONDS = float(os.environ.get("IDUNNO_CHECKER_SECONDS", "120"))
# soak: minutes long; make test runs the soak tests beside the rest (see the Makefile).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.soak,
    pytest.mark.timeout(int(SECONDS) + 480),
]

# Three names per 150 s: get-versions reads back at most 1,000 versions, and each name
# gets a few hundred puts in 150 s, so every acknowledged version is read back.
NAMES = tuple(f"jepsen/{i}" for i in range(3 * math.ceil(SECONDS / 150)))
VERSIONS = 1000  # kept per name, and read back at the end
IMAGES = 40  # img-0000.jpg ... img-0039.jpg
JOB_EVERY = 12.0
# The jobs' model: a second a query, so a job of ten spans a few seconds and some run
# across a cut, without torch competing with the cluster for the cores (what is
# checked is that every query comes back once, whoever schedules it).
MODEL = "noop-1000ms"
# Operations a minority client starts this long after a cut must be refused: failure
# detection, plus a lease's running out, plus a console's start-up.
SETTLE = PING_DURATION + PING_TIMEOUT + CLEANUP_TIME + 5.0


@pytest.fixture
def room(request: pytest.FixtureRequest) -> Iterator[NetnsCluster]:
    require_netns()
    c = NetnsCluster(5, {"transfer": "tcp", "versions_kept": VERSIONS})
    try:
        c.build()
        c.start()
        yield c
    finally:
        c.close()


class Nemesis(threading.Thread):
    """Runs a schedule on the testbed, logging each fault; heals all when stopped."""

    def __init__(self, c: NetnsCluster, faults: list[Fault], began: float) -> None:
        super().__init__(name="nemesis", daemon=True)
        self.c, self.faults, self.began = c, faults, began
        self.stop = threading.Event()
        self.log: list[str] = []
        self.cuts: list[Cut] = []
        self.error: BaseException | None = None

    def note(self, text: str) -> None:
        self.log.append(f"{time.time():.3f} +{time.time() - self.began:6.1f}s {text}")

    def run(self) -> None:
        try:
            for fault in self.faults:
                if self.stop.wait(max(0.0, self.began + fault.start - time.time())):
                    return
                self.apply(fault)
        except BaseException as e:  # surfaced by the test
            self.error = e
            self.note(f"nemesis error: {e!r}")
        finally:
            self.heal_all()

    def leader(self) -> str | None:
        for via in self.c.names:
            try:
                return self.c.leader(via)
            except ConsoleError:
                continue
        return None

    def apply(self, fault: Fault) -> None:
        c = self.c
        leader = self.leader() if fault.kind == "leader-minority" else None
        hosts = targets(fault, c.names, leader)
        start = time.time()
        self.note(f"start {fault.kind} {hosts} for {fault.duration:.1f} s (leader {leader})")
        if fault.kind == "flap":
            c.flap(fault.duration)
        else:
            if fault.kind == "host":
                c.link(hosts[0], up=False)
            else:
                c.split(hosts)
            self.stop.wait(fault.duration)
            self.heal_all()
        minority = tuple(c.names) if fault.kind == "flap" else tuple(hosts)
        self.cuts.append(Cut(start, time.time(), minority, fault.kind))
        self.note(f"healed {fault.kind} {hosts}")

    def heal_all(self) -> None:
        self.c.switch(up=True)
        self.c.heal()
        for name in self.c.names:
            self.c.link(name, up=True)


def client_loop(client: Client, rng: random.Random, until: float) -> None:
    while time.time() < until:
        name = rng.choice(NAMES)
        roll = rng.random()
        if roll < 0.5:
            client.put(name)
        elif roll < 0.85:
            client.get(name)
        elif roll < 0.95:
            client.get_versions(name, 5)
        else:
            client.ls(name)


def job_loop(
    clients: dict[str, Client], inputs: list[str], rng: random.Random, until: float
) -> None:
    """A small job (the ten images of one glob) from a random host every JOB_EVERY s, so
    that some are submitted on a minority side, and some run across a cut."""
    for k in itertools.count():
        glob = f"images/img-00{k % (IMAGES // 10)}*"
        matching = [name for name in inputs if fnmatch.fnmatchcase(name, glob)]
        clients[rng.choice(sorted(clients))].submit_job(MODEL, glob, matching)
        if time.time() + JOB_EVERY > until:
            return
        time.sleep(JOB_EVERY)


def artifacts_dir(tmp_path: Path, seed: int) -> Path:
    base = os.environ.get("IDUNNO_HISTORY_DIR")
    if base:
        return Path(base) / f"checker-{seed}-{time.strftime('%Y%m%dT%H%M%S')}"
    return tmp_path / "history"


def wait_jobs(c: NetnsCluster, history: History, timeout: float) -> list[str]:
    """Until every acknowledged job is done or failed, or its output is in SDFS (a
    finished job's status can be forgotten), or ``timeout``; a line per job."""
    jobs = {
        op.result["job_id"] for op in history.ops if op.kind == "submit-job" and op.outcome == OK
    }
    began = time.monotonic()
    deadline = began + timeout
    lines: list[str] = []
    last: dict[str, str] = {}
    while jobs and time.monotonic() < deadline:
        for job in sorted(jobs):
            try:
                state = c.console("H3", "C4", "status", job)["state"]
            except ConsoleError as e:
                state = str(e).rsplit(": ", 1)[-1]
                out = c.workdir / f"{job}.probe.jsonl"
                with contextlib.suppress(ConsoleError):
                    c.console("H3", "C4", "get-output", job, str(out))
                    state = "output in SDFS"
            last[job] = state
            if state in ("done", "failed", "output in SDFS"):
                jobs.discard(job)
                lines.append(f"{job}: {state}, {time.monotonic() - began:.1f} s after the end")
        time.sleep(1)
    lines += [f"{job}: unsettled after {timeout:.0f} s: {last.get(job)}" for job in sorted(jobs)]
    return lines


def test_clients_on_both_sides_of_random_partitions(room: NetnsCluster, tmp_path: Path) -> None:
    c = room
    seed = int(os.environ.get("IDUNNO_CHECKER_SEED", random.randrange(1 << 31)))
    faults = schedule(seed, SECONDS)
    where = artifacts_dir(tmp_path, seed)
    print(f"checker: seed {seed}, {SECONDS:.0f} s, {len(faults)} faults; history in {where}")

    c.wait_healed(60, "the five hosts to converge")
    images = image_set(tmp_path, IMAGES)
    c.console("H2", "put-dir", str(images), "images", timeout=120)
    c.console("H2", "C3", MODEL, "2")
    inputs = [f"images/{p.name}" for p in images.iterdir()]

    history = History()
    clients = {h: Client(c, history, h, timeout=15, resident=True) for h in c.names}
    began = time.time()
    until = began + SECONDS
    nemesis = Nemesis(c, faults, began)
    workers = [
        threading.Thread(
            target=client_loop, args=(clients[h], random.Random(seed + i), until), daemon=True
        )
        for i, h in enumerate(c.names)
    ]
    submitters = {h: Client(c, history, h, timeout=30) for h in c.names}  # one-shot consoles
    workers.append(
        threading.Thread(
            target=job_loop, args=(submitters, inputs, random.Random(seed - 1), until), daemon=True
        )
    )
    final: list[str] = []
    anomalies = []
    try:
        nemesis.start()
        for t in workers:
            t.start()
        for t in workers:
            t.join(SECONDS + 60)
        nemesis.stop.set()
        nemesis.join(30)
        assert nemesis.error is None, f"the nemesis failed: {nemesis.error!r}"
        nemesis.heal_all()
        took, _ = c.wait_healed(60, "one membership after the last heal")
        final.append(f"one membership {took:.1f} s after the end")

        final += wait_jobs(c, history, 240)
        jobs = sorted(
            {
                op.result["job_id"]
                for op in history.ops
                if op.kind == "submit-job" and op.outcome == OK
            }
        )
        for h in c.names:
            for name in NAMES:
                read = functools.partial(clients[h].get_versions, name, VERSIONS, final=True)
                op = until_ok(read)
                if op.outcome != OK:
                    final.append(f"final read of {name} on {h}: {op.result.get('error')}")
            for job in jobs:
                until_ok(functools.partial(clients[h].get_output, job, final=True))
        anomalies = check(history.ops, nemesis.cuts, SETTLE)
    finally:
        report = "\n".join(
            [
                f"seed {seed}, {SECONDS:.0f} s, history in {where}",
                summary(history.ops, anomalies),
                f"{len(nemesis.cuts)} partitions:",
                *(f"  {line}" for line in nemesis.log),
                *final,
            ]
        )
        write_artifacts(where, history, nemesis.log)
        (where / "summary.txt").write_text(report + "\n")
        for client in clients.values():
            client.close()
        for name in ["introducer", *c.names]:
            if c.log_path(name).exists():
                shutil.copyfile(c.log_path(name), where / f"{name}.log")
        print(report)
    finals = {(op.client, op.kind, op.name) for op in history.ops if op.final and op.outcome == OK}
    assert anomalies == [], f"{len(anomalies)} anomalies; history and logs in {where}"
    for h in c.names:  # every host read everything back (perhaps after a retry)
        assert all((h, "get-versions", name) in finals for name in NAMES), f"{h}; see {where}"
    assert len(nemesis.cuts) == len(faults), f"not every fault ran; see {where}"
