"""LLM grading benchmark, all in one run, as JSON (issue 11), with the real SmolLM2 model.

(a) the baseline: one llama.cpp process on this machine's cores (``llama_cpp.Llama`` in
    this process, ``n_threads`` = the cores) grading the items with the cluster's own
    prompt, grammar and ``max_tokens`` (:mod:`inference.grading`), ``reset()`` before
    every item, an invalid reply asked once more as the workers do: items/s and
    generated (completion) tokens/s;
(a2) the cores split as the cluster splits them, with no cluster: one llama.cpp
    process per node, each with the worker's threads and its share of the items
    (llama.cpp's own thread scaling, apart from what the cluster costs);
(b) the local cluster on the same cores grading the same items (backend llama.cpp):
    2 nodes (1 on a 1-core machine), each worker with half the cores as
    ``inference.worker_client.default_threads`` gives them (1 thread on 2 cores),
    measured from the job's start to its end after a warm-up job; target >= 0.9x (a),
    and its ratio to (a2).  (a) and (b) run ``--rounds`` times each (the baselines
    before and after the cluster) and the fastest run of each is compared (see
    :func:`best_of`; the means are reported too);
(c) a grading job of twice ``--items`` and a ResNet-50 job (fresh weights, as many
    generated images) submitted together under the fair policy: each job's query rate
    over the time both ran (the slope of its answers in the leader's timing log) and
    their difference relative to their mean; target <= 5%;
(d) the openai backend against a real ``python -m llama_cpp.server`` (same GGUF, the
    cores as threads): the cluster grading the items through it, against this process
    sending the same request bodies (``OpenAIClient``'s own) straight to the server,
    as many at once as the cluster keeps in flight (nodes x ``parallel``);
    overhead = 1 - direct_time / cluster_time; target <= 10%;
(e) failover on 4 nodes: ``kill -9`` a worker mid-job (detection by the leader, the
    requeued items done elsewhere, the job's delay against the same job without a
    failure), then ``kill -9`` the leader mid-job (detection and takeover by the
    standby, the requeued items, the delay); every item exactly once in both.

Everything runs on loopback.  Jobs are waited for by reading the nodes' logs (as
``bench/inference.py`` does): a console process per poll would cost the cores being
measured.  Headings go to stderr, the JSON to stdout.

    python bench/grading.py [--items 32] [--max-tokens 128] [--rounds 2] [--quick]
                            [--only a,b,c,d,e]
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.inference import SETTLE, _rate, _submit, _wait
from inference import grading
from scripts.localcluster import (
    REPO_ROOT,
    LocalCluster,
    free_port,
    interrupt_on_sigterm,
    wait_for,
)
from scripts.samples import SMOLLM2_FILE, GradingModelMissing, smollm2_gguf
from tests.helpers import nodelogs

LLM = "smollm2"  # backend llama.cpp
API = "smollm2-api"  # backend openai, against llama_cpp.server
ITEMS = "grading/items.jsonl"
TOGETHER = "grading/together.jsonl"  # (c)
SEED = 42
CONTEXT = 2048


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def gguf_path() -> Path:
    """The real model's file, found without importing its package (see issue 11)."""
    try:
        return smollm2_gguf()
    except GradingModelMissing as e:
        raise SystemExit(str(e)) from None


def load() -> list[str]:
    """This machine's load averages (1, 5, 15 minutes): the cores are shared."""
    return Path("/proc/loadavg").read_text().split()[:3]


def host_cores() -> int:
    from inference.worker_client import host_cores as cores

    return cores()


# --- items -----------------------------------------------------------------------------

_QUESTIONS = [
    (
        "What is the capital of France?",
        "Paris.",
        ["Paris.", "Lyon, I believe.", "The capital of France is Paris, on the Seine."],
    ),
    (
        "What is 7 times 8?",
        "56",
        ["56", "54", "Seven eights are fifty-six."],
    ),
    (
        "Why is the sky blue?",
        "Air molecules scatter short (blue) wavelengths of sunlight more than long ones "
        "(Rayleigh scattering).",
        [
            "Because it reflects the ocean.",
            "Rayleigh scattering: blue light is scattered more by the molecules in the air.",
            "It just is.",
        ],
    ),
    (
        "Name the process by which plants make sugar from light.",
        "Photosynthesis.",
        ["Photosynthesis.", "Respiration.", "They use sunlight, water and CO2: photosynthesis."],
    ),
    (
        "What does a hash table give you, and at what cost?",
        "Expected O(1) lookup, insert and delete, at the cost of extra memory and no order.",
        [
            "Constant-time lookups on average; it uses more memory and keeps no order.",
            "Sorted keys.",
            "Fast search.",
        ],
    ),
    (
        "Who wrote 'Pride and Prejudice'?",
        "Jane Austen.",
        ["Jane Austen.", "Charlotte Bronte.", "Austen, in 1813."],
    ),
]


def make_items(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` items (question, reference, an answer of some quality); every third has a rubric."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        question, reference, answers = _QUESTIONS[i % len(_QUESTIONS)]
        item: dict[str, Any] = {
            "id": f"q{i:04d}",
            "question": question,
            "answer": rng.choice(answers),
            "reference": reference,
        }
        if i % 3 == 2:
            item["rubric"] = "Full marks for a correct answer; half for a partly correct one."
        items.append(item)
    return items


def write_items(path: Path, items: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


# --- (a) the baseline --------------------------------------------------------------------


def baseline(
    items_file: Path,
    gguf: Path,
    threads: int,
    max_tokens: int,
    share: tuple[int, int] = (0, 1),
    ready: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """(a) One llama.cpp in this process grades every item, as a worker would.

    With ``share`` (k, n), only every n-th item from the k-th; ``ready`` is called
    after the warm-up, before the clock starts (see :func:`split_baseline`)."""
    from inference import llama_worker

    inputs = grading.parse_items(items_file.read_bytes())
    graded = [t for t in inputs if grading.decode_query(t).item is not None][share[0] :: share[1]]
    # The worker process's own grading function: the same load, prompt, grammar, reset
    # per item and retry as a cluster worker, minus the cluster.
    state: dict[str, Any] = {}
    args: dict[str, Any] = {
        "path": str(gguf),
        "threads": threads,
        "context": CONTEXT,
        "model": LLM,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "seed": SEED,
        "template": None,
    }
    load_at_start = load()
    llama_worker.grade(state, {**args, "queries": graded[:1]})  # warm-up, as the cluster's
    if ready is not None:
        ready()
    started = time.time()
    t = time.perf_counter()
    rows = llama_worker.grade(state, {**args, "queries": graded})["rows"]
    seconds = time.perf_counter() - t
    ended = time.time()
    state["llm"][1].close()  # its memory back before the cluster starts
    gc.collect()
    prompt = sum(int(r.get("prompt_tokens", 0)) for r in rows)
    completion = sum(int(r.get("completion_tokens", 0)) for r in rows)
    scores = {str(r["input"]): r.get("score") for r in rows}
    return {
        "threads": threads,
        "items": len(graded),
        "load_at_start": load_at_start,
        "seconds": round(seconds, 2),
        "items_per_s": round(len(graded) / seconds, 4),
        "tokens_per_s": round(completion / seconds, 2),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "no_valid_grade": sum("error" in r for r in rows),
        "scores": scores,
        "_span": (started, ended),
    }


_Share = tuple[Path, Path, int, int, tuple[int, int]]


def _split_child(queue: Any, barrier: Any, args: _Share) -> None:
    items_file, gguf, threads, max_tokens, share = args
    queue.put(baseline(items_file, gguf, threads, max_tokens, share, ready=barrier.wait))


def split_baseline(
    items_file: Path, gguf: Path, processes: int, threads: int, max_tokens: int
) -> dict[str, Any]:
    """(a2) The cores split as the cluster splits them, with no cluster: ``processes``
    llama.cpp processes of ``threads`` threads each, every one grading its share of
    the items, all starting at once after their warm-ups.  Against (a) this is what
    llama.cpp's own thread scaling gives; against (b), what the cluster costs."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(processes)
    procs = [
        ctx.Process(
            target=_split_child,
            args=(queue, barrier, (items_file, gguf, threads, max_tokens, (k, processes))),
        )
        for k in range(processes)
    ]
    for proc in procs:
        proc.start()
    try:
        parts = [queue.get(timeout=1800) for _ in procs]
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    seconds = max(p["_span"][1] for p in parts) - min(p["_span"][0] for p in parts)
    items = sum(p["items"] for p in parts)
    completion = sum(p["completion_tokens"] for p in parts)
    return {
        "processes": processes,
        "threads_each": threads,
        "items": items,
        "load_at_start": parts[0]["load_at_start"],
        "seconds": round(seconds, 2),
        "items_per_s": round(items / seconds, 4),
        "tokens_per_s": round(completion / seconds, 2),
        "completion_tokens": completion,
    }


# --- cluster helpers ---------------------------------------------------------------------


def llm_tables(max_tokens: int, api_port: int, parallel: int) -> list[dict[str, Any]]:
    return [
        {"name": LLM, "backend": "llama.cpp", "model": "models/smollm2.gguf"}
        | {"max_tokens": max_tokens, "seed": SEED},
        {
            "name": API,
            "backend": "openai",
            "model": LLM,
            "url": f"http://127.0.0.1:{api_port}/v1",
            "parallel": parallel,
            "max_tokens": max_tokens,
            "seed": SEED,
        },
    ]


def _timing_rows(c: LocalCluster, job: str) -> list[dict[str, str]]:
    """The job's rows in every node's timing log, the first answer of each query."""
    rows: dict[str, dict[str, str]] = {}
    for node in c.nodes:
        path = c.workdir / "data" / node.name / "query_timings.csv"
        if not path.exists():
            continue
        with path.open() as f:
            for r in csv.DictReader(f):
                if r["job_id"] == job:
                    old = rows.get(r["query"])
                    if old is None or float(r["finished_at"]) < float(old["finished_at"]):
                        rows[r["query"]] = r
    return sorted(rows.values(), key=lambda r: float(r["finished_at"]))


def _output(c: LocalCluster, job: str, via: str, work: Path) -> list[dict[str, Any]]:
    local = work / f"{job}-{via}.jsonl"
    c.console(via, "C4", "get-output", job, str(local), timeout=120)
    return [json.loads(line) for line in local.read_text().splitlines() if line.strip()]


def _exactly_once(rows: Sequence[dict[str, Any]], ids: Sequence[str]) -> bool:
    got = [str(r.get("input")) for r in rows]
    return len(got) == len(ids) and sorted(got) == sorted(ids)


def grading_job(
    c: LocalCluster, model: str, ids: Sequence[str], work: Path, via: str = "H1"
) -> dict[str, Any]:
    """Grade ``ITEMS`` with ``model``, wait, and measure it from its start to its end."""
    load_at_start = load()
    job = _submit(c, model, ITEMS, via=via)
    return {"load_at_start": load_at_start} | job_result(c, job, ids, work, via)


def job_result(
    c: LocalCluster, job: str, ids: Sequence[str], work: Path, via: str
) -> dict[str, Any]:
    s = _wait(c, job, via=via)
    rows = _output(c, job, via, work)
    seconds = s["finished_at"] - s["started_at"]
    graded = [r for r in rows if "score" in r]
    completion = sum(int(r.get("completion_tokens", 0)) for r in rows)
    timings = _timing_rows(c, job)
    batches = {r["batch_id"] for r in timings}
    return {
        "job": job,
        "state": s["state"],
        "seconds": round(seconds, 2),
        "items_per_s": round(len(rows) / seconds, 4),
        "tokens_per_s": round(completion / seconds, 2),
        "completion_tokens": completion,
        "graded": len(graded),
        "error_rows": len(rows) - len(graded),
        "mean_batch": round(len(timings) / len(batches), 2) if batches else None,
        "exactly_once": _exactly_once(rows, ids),
        "scores": {str(r["input"]): r.get("score") for r in rows},
        "_status": s,
    }


def _public(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if not k.startswith("_") and k != "scores"}


def _agreement(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """The share of items given the same score by two runs (determinism across set-ups)."""
    common = [k for k in a if k in b]
    if not common:
        return None
    same: int = sum(a[k] == b[k] for k in common)
    return round(same / len(common), 3)


# --- (c) a grading job and an image job together -------------------------------------------


def images_and_weights(work: Path, count: int) -> tuple[Path, Path]:
    from tests.helpers.imagegen import image_set, make_weights

    return image_set(work, count), make_weights(work / "resnet50.pth", "resnet50", seed=3)


def together(c: LocalCluster, ids: Sequence[str], work: Path) -> dict[str, Any]:
    """(c) Both jobs at once under the fair policy; their rates over the overlap."""
    jobs = {LLM: _submit(c, LLM, TOGETHER), "resnet50": _submit(c, "resnet50", "images/*")}
    finished = {m: _wait(c, j) for m, j in jobs.items()}
    t0 = max(s["started_at"] for s in finished.values()) + SETTLE
    t1 = min(s["finished_at"] for s in finished.values()) - 1.0
    out: dict[str, Any] = {"jobs": jobs, "window_s": round(t1 - t0, 1)}
    rows = _output(c, jobs[LLM], "H1", work)
    out["grading_exactly_once"] = _exactly_once(rows, ids)
    out["image_job_state"] = finished["resnet50"]["state"]
    if t1 - t0 < 10:
        return out | {"error": "jobs too short to measure; use more --items"}
    answered = {
        m: sorted(float(r["finished_at"]) for r in _timing_rows(c, j)) for m, j in jobs.items()
    }
    rates = {m: _rate(answered[m], t0, t1) for m in jobs}
    mean = statistics.fmean(rates.values())
    return out | {
        "rates_per_s": {m: round(r, 4) for m, r in rates.items()},
        "difference_pct": round(100 * abs(rates[LLM] - rates["resnet50"]) / mean, 2),
    }


# --- (d) the openai backend ------------------------------------------------------------------


@contextmanager
def llama_server(gguf: Path, port: int, threads: int, log: Path) -> Iterator[str]:
    """A real ``python -m llama_cpp.server`` on 127.0.0.1:``port``; its base URL."""
    import httpx

    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        LLM,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        str(CONTEXT),
    ]
    url = f"http://127.0.0.1:{port}/v1"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"llama_cpp.server exited with {proc.returncode}; see {log}")
            try:
                return httpx.get(f"{url}/models", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 120, "llama_cpp.server to answer", interval=0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def direct(url: str, items_file: Path, max_tokens: int, parallel: int) -> dict[str, Any]:
    """(d) The same request bodies as the cluster's client sends, straight to the server.

    ``OpenAIClient._body`` builds them (in ``json_object`` form: llama.cpp's server
    refuses ``json_schema`` and the cluster's client switches on its first 422); an
    invalid reply is asked once more with the next seed, as the client does.
    """
    import httpx

    from config.llm import LlmSpec
    from inference.openai_client import OpenAIClient

    spec = LlmSpec(name=API, backend="openai", model=LLM, url=url)
    spec = LlmSpec(**(spec.to_plain() | {"parallel": parallel, "max_tokens": max_tokens}))
    bodies = OpenAIClient(spec, url)  # only its _body; its AsyncClient is never used
    bodies.format = "json_object"
    queries = [grading.decode_query(t) for t in grading.parse_items(items_file.read_bytes())]
    items = [q.item for q in queries if q.item is not None]

    def one(http: httpx.Client, item: grading.Item) -> tuple[int | None, int]:
        completion = 0
        for attempt in range(grading.ATTEMPTS):
            body = bodies._body(grading.messages(item), item.max_score, attempt)
            reply = http.post(f"{url}/chat/completions", json=body)
            reply.raise_for_status()
            data = reply.json()
            completion += int(data["usage"]["completion_tokens"])
            try:
                score, _ = grading.parse_reply(
                    data["choices"][0]["message"]["content"] or "", item.max_score
                )
            except ValueError:
                continue
            return score, completion
        return None, completion

    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    with httpx.Client(timeout=300.0, limits=limits) as http:
        one(http, items[0])  # warm-up, as the cluster's warm-up job
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            results = list(pool.map(lambda it: one(http, it), items))
        seconds = time.perf_counter() - t
    completion = sum(c for _, c in results)
    return {
        "parallel": parallel,
        "no_valid_grade": sum(s is None for s, _ in results),
        "seconds": round(seconds, 2),
        "items_per_s": round(len(items) / seconds, 4),
        "tokens_per_s": round(completion / seconds, 2),
        "completion_tokens": completion,
        "scores": {str(it.id): s for it, (s, _) in zip(items, results, strict=True)},
    }


# --- (e) failover ----------------------------------------------------------------------------


def _answered(c: LocalCluster, job: str) -> int:
    return len(_timing_rows(c, job))


def _requeued(c: LocalCluster, leader: str, victim: str, after: float) -> int:
    """Queries the leader put back from ``victim``'s batches (its BatchLost lines)."""
    total = 0
    for line in c.log_path(leader).read_text(errors="replace").splitlines():
        mine = f" on {victim} lost (" in line and line.endswith("queries requeued")
        if mine and nodelogs.to_epoch(line.split()[0], after) >= after - 0.001:
            total += int(line.split(";")[-1].split()[0])
    return total


def _requeued_done(timings: Sequence[dict[str, str]], requeued: int) -> float | None:
    """When the last of the victim's requeued queries was answered elsewhere.

    A job's queries go out in index order, and a lost batch's go back to the front of
    the queue, so they are the ``requeued`` lowest indices among the queries answered
    in batches numbered above every batch lost with the victim (batch ids only grow,
    takeovers included; a lost batch is one whose id never answered)."""
    if requeued == 0 or not timings:
        return None
    seen = {int(r["batch_id"]) for r in timings}
    lost = set(range(min(seen), max(seen) + 1)) - seen
    if not lost:
        return None
    after = [r for r in timings if int(r["batch_id"]) > max(lost)]
    again = sorted(after, key=lambda r: int(r["query"]))[:requeued]
    return max(float(r["finished_at"]) for r in again) if again else None


def kill_mid_job(
    c: LocalCluster,
    victim: str,
    leader: str,
    via: str,
    ids: Sequence[str],
    work: Path,
    reference_s: float,
) -> dict[str, Any]:
    """Submit the items through ``via``, ``kill -9`` ``victim`` a quarter of the way in.

    ``leader`` is who schedules after the kill (it notices the failure)."""
    job = _submit(c, LLM, ITEMS, via=via)
    quarter = max(1, len(ids) // 4)
    wait_for(lambda: _answered(c, job) >= quarter, 300, f"{job} a quarter done", interval=0.1)
    killed = time.time()
    c.kill(victim)
    say(f"killed {victim} at {_answered(c, job)} of {len(ids)} items")

    def detected_at() -> float | None:
        return nodelogs.first(c.log_path(leader), "failed", victim, killed)

    detected = wait_for(detected_at, 60, f"{leader} to notice {victim}'s failure", interval=0.2)
    result = job_result(c, job, ids, work, via)
    requeued = _requeued(c, leader, victim, killed)
    done = _requeued_done(_timing_rows(c, job), requeued)
    out: dict[str, Any] = {
        "victim": victim,
        "detection_s": round(detected - killed, 2),
        "requeued_items": requeued,
        "requeued_items_done_after_kill_s": round(done - killed, 2) if done else None,
        "job_s": result["seconds"],
        "reference_job_s": reference_s,
        "completion_delay_s": round(result["seconds"] - reference_s, 2),
        "state": result["state"],
        "exactly_once": result["exactly_once"],
        "error_rows": result["error_rows"],
    }
    for line in c.log_path(leader).read_text(errors="replace").splitlines():
        if "takes over scheduling" in line:
            took = nodelogs.to_epoch(line.split()[0], killed)
            if took >= killed:
                out["takeover_after_kill_s"] = round(took - killed, 2)
    return out


def failover(gguf: Path, items_file: Path, ids: Sequence[str], args: Any, work: Path) -> Any:
    """(e) On 4 nodes (H1 leader, H2 its standby): kill H4, then H1, each mid-job.

    Each kill is compared with the same job on the same nodes just before it."""
    tables = llm_tables(args.max_tokens, free_port(), 1)[:1]
    out: dict[str, Any] = {"nodes": 4}
    cluster: dict[str, Any] = {"transfer": "tcp", "replication": 3}
    with LocalCluster(4, cluster=cluster, llm=tables, keep=args.keep) as c:
        say(f"cluster of 4 nodes up in {c.workdir}")
        prepare(c, gguf, items_file)
        say("(e) reference job on 4 nodes")
        ref4 = grading_job(c, LLM, ids, work)["seconds"]
        say("(e) kill -9 a worker (H4) mid-job")
        out["worker"] = kill_mid_job(c, "H4", "H1", "H1", ids, work, ref4)
        say("(e) reference job on the 3 nodes left")
        ref3 = grading_job(c, LLM, ids, work, via="H3")["seconds"]
        say("(e) kill -9 the leader (H1) mid-job")
        out["leader"] = kill_mid_job(c, "H1", "H2", "H3", ids, work, ref3)
    return out


# --- the run --------------------------------------------------------------------------------


def prepare(c: LocalCluster, gguf: Path, items_file: Path) -> None:
    """Put the model and the items; a warm-up job loads the model in every worker."""
    c.wait_converged(timeout=60)
    c.console("H1", "put", str(gguf), "models/smollm2.gguf", timeout=300)
    c.console("H1", "put", str(items_file), ITEMS, timeout=60)
    warm = items_file.with_name("warm.jsonl")
    write_items(warm, make_items(2 * len(c.nodes), seed=99))
    c.console("H1", "put", str(warm), "grading/warm.jsonl", timeout=60)
    _wait(c, _submit(c, LLM, "grading/warm.jsonl"))


def best_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of ``runs`` (items/s, tokens/s), and the mean.

    The cores are shared with other people's work, and a two-thread llama.cpp (built
    with OpenMP, whose threads spin at every barrier) loses most of its speed whenever
    anything else runs: one disturbed run can be ten times slower than the rest.  The
    fastest run is the least disturbed, on either side of a ratio."""
    best = max(runs, key=lambda r: r["items_per_s"])
    return {
        "items_per_s": best["items_per_s"],
        "tokens_per_s": best["tokens_per_s"],
        "mean_items_per_s": round(statistics.fmean(r["items_per_s"] for r in runs), 4),
    }


def cluster_nodes() -> int:
    """Nodes of the cluster in (b)-(d): two (each worker gets half the cores, as
    ``default_threads`` gives them), or one on a one-core machine."""
    return max(1, min(2, host_cores()))


def cluster_parts(
    out: dict[str, Any], gguf: Path, items_file: Path, ids: Sequence[str], args: Any, work: Path
) -> None:
    """(b), (c) and (d) on one cluster of ``nodes`` nodes sharing this machine's cores."""
    cores = host_cores()
    nodes = cluster_nodes()
    parts = args.only
    port = free_port()
    tables = llm_tables(args.max_tokens, port, args.parallel)
    cluster: dict[str, Any] = {"transfer": "tcp", "replication": nodes}
    with LocalCluster(nodes, cluster=cluster, llm=tables, keep=args.keep) as c:
        say(f"cluster of {nodes} nodes up in {c.workdir}; putting the model and warming up")
        prepare(c, gguf, items_file)
        if "b" in parts:
            runs = []
            for r in range(args.rounds):
                say(f"(b) cluster round {r + 1}")
                runs.append(grading_job(c, LLM, ids, work))
            out["b"] = {
                "nodes": nodes,
                "threads_per_worker": max(1, cores // nodes),
                **best_of(runs),
                "runs": [_public(r) for r in runs],
                "_scores": runs[0]["scores"],
            }
        if "c" in parts:
            # Twice the items (and as many images): the overlap is the time to measure.
            both = make_items(2 * len(ids), seed=11)
            c.console("H1", "put", str(write_items(work / "c.jsonl", both)), TOGETHER)
            images, weights = images_and_weights(work, len(both))
            c.console("H1", "put-dir", str(images), "images", timeout=600)
            c.console("H1", "put", str(weights), "models/resnet50.pth", timeout=300)
            say("(c) warming up resnet50")
            _wait(c, _submit(c, "resnet50", "images/img-000*"))
            say("(c) a grading job and a resnet50 job together")
            out["c"] = together(c, [it["id"] for it in both], work)
        if "d" in parts:
            with llama_server(gguf, port, cores, work / "llama_server.log") as url:
                say("(d) the openai backend through the cluster")
                _wait(c, _submit(c, API, "grading/warm.jsonl"))  # the client's first 422
                through = grading_job(c, API, ids, work)
                say("(d) the same requests straight to the server")
                in_flight = nodes * args.parallel
                straight = direct(url, items_file, args.max_tokens, in_flight)
            out["d"] = {
                "server_threads": cores,
                "in_flight": in_flight,
                "cluster": _public(through),
                "direct": _public(straight),
                "overhead": round(1 - straight["seconds"] / through["seconds"], 4),
                "scores_agree": _agreement(through["scores"], straight["scores"]),
            }


def run(args: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "benchmark": "grading",
        "model": SMOLLM2_FILE,
        "cores": host_cores(),
        "items": args.items,
        "max_tokens": args.max_tokens,
        "load_before": load(),
    }
    gguf = gguf_path()
    items = make_items(args.items)
    ids = [it["id"] for it in items]
    with tempfile.TemporaryDirectory(prefix="grading-bench-") as tmp:
        work = Path(tmp)
        items_file = write_items(work / "items.jsonl", items)
        a_runs = []
        if "a" in args.only:
            say("(a) baseline: llama.cpp in this process")
            a_runs.append(baseline(items_file, gguf, host_cores(), args.max_tokens))
        nodes = cluster_nodes()
        if "a" in args.only and nodes > 1:
            say(f"(a2) {nodes} llama.cpp processes, the cores split as the cluster splits them")
            split = split_baseline(
                items_file, gguf, nodes, max(1, host_cores() // nodes), args.max_tokens
            )
        if set(args.only) & {"b", "c", "d"}:
            cluster_parts(out, gguf, items_file, ids, args, work)
        if "a" in args.only:
            for r in range(1, args.rounds):
                say(f"(a) baseline round {r + 1}")
                a_runs.append(baseline(items_file, gguf, host_cores(), args.max_tokens))
            out["a"] = {
                "threads": host_cores(),
                **best_of(a_runs),
                "runs": [_public(r) for r in a_runs],
            }
            if nodes > 1:
                out["a2_split"] = split
        if "e" in args.only:
            fail_items = make_items(args.failover_items)
            fail_file = write_items(work / "failover.jsonl", fail_items)
            out["e"] = failover(gguf, fail_file, [it["id"] for it in fail_items], args, work)
        if "a" in out and "b" in out:
            b = out["b"]
            b["ratio_to_baseline"] = round(b["items_per_s"] / out["a"]["items_per_s"], 3)
            b["tokens_ratio_to_baseline"] = round(b["tokens_per_s"] / out["a"]["tokens_per_s"], 3)
            b["scores_agree_with_baseline"] = _agreement(b["_scores"], a_runs[0]["scores"])
        if "a2_split" in out and "b" in out:
            out["b"]["ratio_to_a2_split"] = round(
                out["b"]["items_per_s"] / out["a2_split"]["items_per_s"], 3
            )
        if "b" in out:
            del out["b"]["_scores"]
    out["targets"] = targets(out)
    out["load_after"] = load()
    return out


def targets(out: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    ratio = out.get("b", {}).get("ratio_to_baseline")
    if ratio is not None:
        t["b_cluster_ge_0.9x_baseline"] = {"value": ratio, "pass": ratio >= 0.9}
    diff = out.get("c", {}).get("difference_pct")
    if "c" in out:
        t["c_rate_difference_le_5pct"] = {"value": diff, "pass": diff is not None and diff <= 5}
    if "d" in out:
        overhead = out["d"]["overhead"]
        t["d_openai_overhead_le_10pct"] = {"value": overhead, "pass": overhead <= 0.10}
    if "e" in out:
        e = out["e"]
        once = all(e[k]["exactly_once"] for k in ("worker", "leader"))
        t["e_every_item_exactly_once"] = {"value": once, "pass": once}
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=32, help="items per grading job")
    p.add_argument("--failover-items", type=int, default=24, help="items per job in (e)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2, help="runs of (a) and of (b) to average")
    p.add_argument("--parallel", type=int, default=2, help="(d): [[llm]] parallel per worker")
    p.add_argument("--only", default="a,b,c,d,e", help="parts to run, e.g. a,b")
    p.add_argument("--quick", action="store_true", help="a short run for smoke-testing")
    p.add_argument("--keep", action="store_true", help="keep the clusters' directories (logs)")
    args = p.parse_args()
    interrupt_on_sigterm()
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.only) - set("abcde"))
    if unknown:
        p.error(f"--only takes parts a to e, not {','.join(unknown)}")
    if args.quick:
        args.items, args.failover_items, args.rounds = 8, 8, 1
    if args.items < 2 or args.failover_items < 4 or args.rounds < 1:
        p.error("--items must be at least 2, --failover-items 4 and --rounds 1")
    wall = time.monotonic()
    out = run(args)
    out["wall_s"] = round(time.monotonic() - wall, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
