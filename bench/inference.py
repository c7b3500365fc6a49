"""IDunno benchmark, all in one run, as JSON.

(a) single-process torch throughput per model on this machine (the baseline): the
    worker runtime in-process, all cores, decode + preprocess + forward;
(b) the local cluster's throughput on the same cores (target >= 0.9x the baseline):
    real node processes on 127.0.0.1, jobs submitted with ``python -m console``,
    measured from the job's start to its end after a warm-up job; (a) and (b) are
    the means of ``--rounds`` runs each (2), as this machine's speed drifts;
(c) dispatch overhead: queries/s through the leader with the ``noop`` model, which
    does no inference (target >= 2,000/s; Ray's synchronous tasks: ~1,000/s);
(d) the query-rate difference between a ResNet50 and an InceptionV3 job running at
    once (target <= 5%), from the leader's per-query timing log over the time both
    ran; and (d2) the same with the second job submitted while the first holds every
    worker: how soon it starts (target: within 1 s) and the rates after;
(e) failover: kill -9 a worker, then the leader, mid-job: detection time and the time
    until queries complete again;
(f) on a GPU (when torch sees one): a one-node cluster, whose worker runs on the GPU,
    against a plain torchvision loop on the same GPU, per model.  ``--device-part cpu``
    runs the same comparison on the CPU, to check the code where no GPU is lent.
    (a) to (e) always run on the CPU: their nodes are started with no GPU visible.

Weights are freshly initialised torchvision models (pretrained ones cannot be
downloaded here); speed does not depend on the weights' values.

The benchmark waits for jobs by reading the nodes' logs, not by polling consoles:
every ``python -m console`` costs the cores that the workers are being measured on.

    python bench/inference.py [--images 600] [--quick] [--device-part auto|cpu|off]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.localcluster import LocalCluster, interrupt_on_sigterm, wait_for
from tests.helpers import nodelogs
from tests.helpers.imagegen import image_set, make_weights
from tests.helpers.reference import plain_torchvision

MODELS = ("resnet50", "inception_v3")


def dataset(work: Path, count: int) -> tuple[Path, dict[str, Path]]:
    images = image_set(work, count)
    weights = {m: make_weights(work / f"{m}.pth", m, seed=3) for m in MODELS}
    return images, weights


def baseline(images: Path, weights: dict[str, Path], batch: int) -> dict[str, Any]:
    """(a) The worker runtime in this process, every core, no cluster around it."""
    from inference.runtime import ModelRunner
    from inference.worker_client import host_cores

    runner = ModelRunner(threads=host_cores(), device="cpu")
    paths = sorted(str(p) for p in images.iterdir())
    out: dict[str, Any] = {"threads": host_cores(), "batch": batch}
    for model in MODELS:
        runner.run(model, str(weights[model]), paths[:batch])  # load and warm up
        t = time.perf_counter()
        for i in range(0, len(paths), batch):
            runner.run(model, str(weights[model]), paths[i : i + batch])
        out[model] = round(len(paths) / (time.perf_counter() - t), 2)
    return out


def _status(c: LocalCluster, job: str, via: str = "H1") -> dict[str, Any]:
    status: dict[str, Any] = c.console(via, "C4", "status", job)
    return status


# Rates are measured from this long after both jobs run (the costs have settled).
SETTLE = 2.0

# The leader logs "JOB_ID done" (or "failed") when a job's last query is answered.
_FINISHED = re.compile(r" inference\.\S+: (job-\d+) (?:done|failed)$", re.MULTILINE)


# Where each submitted job's watch starts in every node's log (see _submit).
_LOG_MARKS: dict[tuple[Path, str], dict[Path, int]] = {}


def _submit(c: LocalCluster, *args: str, via: str = "H1") -> str:
    """``C4 submit-job ARGS`` through node ``via``; returns the job id."""
    logs = [c.log_path(n.name) for n in c.nodes]
    marks = {p: p.stat().st_size for p in logs if p.exists()}
    job: str = c.console(via, "C4", "submit-job", *args)["job_id"]
    _LOG_MARKS[(c.workdir, job)] = marks
    return job


def _finished_in_logs(c: LocalCluster, job: str) -> bool:
    """Whether a leader logged ``job`` done or failed since it was submitted.

    Only the text written since the submission is read: cheap, and a line about an
    earlier job of the same id (a leader with no standby copy numbers from 1 again)
    cannot match.
    """
    marks = _LOG_MARKS.get((c.workdir, job), {})
    for node in c.nodes:
        path = c.log_path(node.name)
        if not path.exists():
            continue
        with path.open("rb") as f:
            f.seek(marks.get(path, 0))
            text = f.read().decode(errors="replace")
        if job in _FINISHED.findall(text):
            return True
    return False


def _wait(c: LocalCluster, job: str, timeout: float = 900, via: str = "H1") -> dict[str, Any]:
    """Wait for ``job`` to finish (reading logs costs no CPU worth measuring), then its status."""
    wait_for(lambda: _finished_in_logs(c, job), timeout, f"{job} to finish", interval=0.25)
    return _status(c, job, via)


def prepare(c: LocalCluster, images: Path, weights: dict[str, Path]) -> None:
    c.wait_converged(timeout=30)
    c.console("H1", "put-dir", str(images), "images", timeout=600)
    for model, path in weights.items():
        c.console("H1", "put", str(path), f"models/{model}.pth", timeout=300)
    for model in MODELS:  # warm-up: start every worker process and load the models
        _wait(c, _submit(c, model, "images/img-000*"))


def cluster_throughput(c: LocalCluster) -> tuple[dict[str, float], dict[str, str]]:
    """(b) One job per model, alone, from its start to its end: (images/s, job ids)."""
    rates, jobs = {}, {}
    for model in MODELS:
        jobs[model] = _submit(c, model)
        s = _wait(c, jobs[model])
        rates[model] = round(s["total"] / (s["finished_at"] - s["started_at"]), 2)
    return rates, jobs


def _timings(c: LocalCluster, leader: str, job: str | None = None) -> list[dict[str, str]]:
    """Rows of the leader's query_timings.csv (one per answered query), of ``job`` if given."""
    path = c.workdir / "data" / leader / "query_timings.csv"
    if not path.exists():
        return []
    with path.open() as f:
        return [r for r in csv.DictReader(f) if job is None or r["job_id"] == job]


def _mean_batch(c: LocalCluster, leader: str, job: str) -> float:
    """The queries per batch that ``job`` actually ran in."""
    batches = [r["batch_id"] for r in _timings(c, leader, job)]
    return round(len(batches) / len(set(batches)), 1)


def _completions(c: LocalCluster, leader: str, job: str) -> list[float]:
    """When each of ``job``'s queries was answered."""
    return sorted(float(r["finished_at"]) for r in _timings(c, leader, job))


def _rate(times: list[float], t0: float, t1: float) -> float:
    """Queries per second over [t0, t1]: the least-squares slope of the running count.

    Answers arrive a batch at a time, so counting between two instants is off by up
    to a batch at each end; the slope through every answer is much less sensitive to
    where the window's ends fall.
    """
    inside = [t for t in times if t0 <= t <= t1]
    if len(inside) < 2 or inside[-1] == inside[0]:
        return len(inside) / (t1 - t0)
    return statistics.linear_regression(inside, range(len(inside))).slope


def concurrent_rates(c: LocalCluster, stagger: float = 0.0) -> dict[str, Any]:
    """(d) Both models at once; their rates over the time both ran.

    With ``stagger``, the second job is submitted that many seconds after the first,
    while the first holds every worker.  The window starts ``SETTLE`` s after the
    later job started and ends a second before the earlier of the two finished (the
    last batches of a job leave slots free that the other job takes).
    """
    jobs = {}
    for m in MODELS:
        jobs[m] = _submit(c, m)
        if m == MODELS[0] and stagger:
            time.sleep(stagger)
    finished = {m: _wait(c, j) for m, j in jobs.items()}
    second = finished[MODELS[1]]
    t0 = max(s["started_at"] for s in finished.values()) + SETTLE
    t1 = min(s["finished_at"] for s in finished.values()) - 1.0
    if t1 - t0 < 10:
        return {"error": "jobs too short to measure; use more --images"}
    answered = {m: _completions(c, "H1", jobs[m]) for m in MODELS}
    rates = {m: _rate(answered[m], t0, t1) for m in MODELS}
    mean = statistics.fmean(rates.values())
    return {
        # Its first batch went out (JobStarted), and its first query was answered.
        "second_job_started_after_s": round(second["started_at"] - second["submitted_at"], 3),
        "second_job_first_answer_after_s": round(
            answered[MODELS[1]][0] - second["submitted_at"], 3
        ),
        "window_s": round(t1 - t0, 1),
        "rates": {m: round(r, 3) for m, r in rates.items()},
        "difference_pct": round(100 * abs(rates[MODELS[0]] - rates[MODELS[1]]) / mean, 2),
    }


def dispatch(work: Path, jobs: int, files: int) -> dict[str, Any]:
    """(c) The noop model: what the scheduler, its RPCs and the workers cost per query."""
    tiny = work / "tiny"
    tiny.mkdir()
    for i in range(files):
        (tiny / f"q{i:05d}").write_bytes(b"x")
    out: dict[str, Any] = {"queries": jobs * files}
    with LocalCluster(4, cluster={"transfer": "tcp"}) as c:
        c.wait_converged(timeout=30)
        c.console("H1", "put-dir", str(tiny), "noop", timeout=900)
        for batch in (8, 64):
            c.console("H1", "C3", "noop", str(batch))
            t = time.time()
            ids = [_submit(c, "noop", "noop/*") for _ in range(jobs)]
            statuses = [_wait(c, j) for j in ids]
            first = min(s["submitted_at"] for s in statuses)
            last = max(s["finished_at"] for s in statuses)
            out[f"batch_{batch}"] = {
                "queries_per_s": round(jobs * files / (last - first), 1),
                "wall_s_incl_console": round(time.time() - t, 2),
            }
    return out


def _first_completion_after(c: LocalCluster, leader: str, after: float) -> float | None:
    later = [float(r["finished_at"]) for r in _timings(c, leader)]
    return min((t for t in later if t > after), default=None)


def failover(c: LocalCluster, victim: str) -> dict[str, Any]:
    """(e) kill -9 ``victim`` mid-job; detection and resumption times from the logs."""
    survivor = "H3"  # neither the worker nor the leader we kill
    leader_after = "H2" if victim == "H1" else "H1"
    job = _submit(c, "resnet50", via=survivor)
    wait_for(lambda: _status(c, job, survivor)["done"] >= 4, 120, "the job under way", interval=0.5)
    killed = time.time()
    c.kill(victim)

    def detected_at() -> float | None:
        return nodelogs.first(c.log_path(leader_after), "failed", victim, killed)

    detected = wait_for(detected_at, 30, f"{victim}'s failure to be detected")
    status = _wait(c, job, via=survivor)
    resumed = _first_completion_after(c, leader_after, detected)
    out: dict[str, Any] = {
        "victim": victim,
        "detection_s": round(detected - killed, 2),
        "work_resumed_after_detection_s": round(resumed - detected, 2) if resumed else None,
        "state": status["state"],
        "done": status["done"],
        "total": status["total"],
    }
    for line in c.log_path(leader_after).read_text().splitlines():
        if "takes over scheduling" in line:
            took = nodelogs.to_epoch(line.split()[0], killed) - killed
            out["takeover_after_kill_s"] = round(took, 2)
    return out


def raw_torch(model: str, weights: Path, paths: list[str], batch: int, device: str) -> float:
    """Images/s of a plain torchvision loop on ``device``, a batch at a time.

    Decode, the weights' own transforms, forward, softmax and top 5, on the tests'
    reference model (:func:`tests.helpers.reference.plain_torchvision`).
    """
    import torch
    from PIL import Image

    net, meta = plain_torchvision(model, weights)
    net.to(device)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # as the worker runtime does
    transform = meta.transforms()

    def run(chunk: list[str]) -> None:
        tensors = []
        for path in chunk:
            with Image.open(path) as img:
                tensors.append(transform(img.convert("RGB")))
        with torch.inference_mode():
            probs = torch.softmax(net(torch.stack(tensors).to(device)), dim=1)
            torch.topk(probs, 5).indices.cpu()  # the copy back waits for the device

    run(paths[:batch])  # warm-up (cuDNN picks its kernels here)
    t = time.perf_counter()
    for i in range(0, len(paths), batch):
        run(paths[i : i + batch])
    return len(paths) / (time.perf_counter() - t)


def device_part(images: Path, weights: dict[str, Path], batch: int, device: str) -> dict[str, Any]:
    """(f) A one-node cluster's worker on ``device`` against plain torch on it, per model.

    The node's worker picks the GPU by itself when torch sees one; with ``cpu`` the
    node is started with no GPU visible, so both sides run on the CPU (the check of
    this code where no GPU is lent).  The worker gets C3 batch size ``batch``; its
    batches may be smaller (at most about 0.5 s of work each), so their mean is
    reported.
    """
    paths = sorted(str(p) for p in images.iterdir())
    out: dict[str, Any] = {"device": device, "batch": batch}
    if device.startswith("cuda"):
        import torch

        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    raw = {m: round(raw_torch(m, weights[m], paths, batch, device), 2) for m in MODELS}
    with (
        _gpus_hidden(device == "cpu"),
        LocalCluster(1, cluster={"transfer": "tcp", "replication": 1}) as c,
    ):
        prepare(c, images, weights)
        for m in MODELS:
            c.console("H1", "C3", m, str(batch))
        worker, jobs = cluster_throughput(c)
        out["worker_mean_batch"] = {m: _mean_batch(c, "H1", jobs[m]) for m in MODELS}
    out["raw_torch_images_per_s"] = raw
    out["worker_images_per_s"] = worker
    out["worker_ratio_to_raw_torch"] = {m: round(worker[m] / raw[m], 3) for m in MODELS}
    return out


@contextlib.contextmanager
def _gpus_hidden(hide: bool = True) -> Iterator[None]:
    """Processes started inside see no GPU (CUDA_VISIBLE_DEVICES is empty)."""
    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hide:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


def _device_for(choice: str) -> str | None:
    if choice == "off":
        return None
    if choice == "cpu":
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else None


def cpu_parts(
    out: dict[str, Any], work: Path, images: Path, weights: dict[str, Path], args: Any
) -> None:
    """(a) to (e), with their targets, all on the CPU (the nodes see no GPU).

    This machine's speed drifts by 10% and more between minutes, so (a) and (b) run
    ``args.rounds`` times each and their means are compared: the first baseline before
    the cluster starts, the others after it has stopped (on the same quiet machine).
    """
    for key in ("a_baseline_images_per_s", "b_cluster_images_per_s", "b_ratio_to_baseline"):
        out[key] = None  # filled in below; here so that the JSON reads in order
    a_runs = [baseline(images, weights, args.batch)]
    with _gpus_hidden():
        # Two nodes, one torch thread each: the machine's two cores, no oversubscription.
        with LocalCluster(2, cluster={"transfer": "tcp", "replication": 2}) as c:
            prepare(c, images, weights)
            b_runs = [cluster_throughput(c)[0] for _ in range(args.rounds)]
            out["d_concurrent_jobs"] = concurrent_rates(c)
            out["d2_second_job_while_first_holds_every_worker"] = concurrent_rates(c, 3.0)
        a_runs += [baseline(images, weights, args.batch) for _ in range(args.rounds - 1)]
        a = {m: round(statistics.fmean(r[m] for r in a_runs), 2) for m in MODELS}
        b = {m: round(statistics.fmean(r[m] for r in b_runs), 2) for m in MODELS}
        out["a_baseline_images_per_s"] = {"threads": a_runs[0]["threads"], "batch": args.batch}
        out["a_baseline_images_per_s"] |= {**a, "runs": [{m: r[m] for m in MODELS} for r in a_runs]}
        out["b_cluster_images_per_s"] = {"nodes": 2, **b, "runs": b_runs}
        out["b_ratio_to_baseline"] = {m: round(b[m] / a[m], 3) for m in MODELS}
        out["c_dispatch_noop"] = dispatch(work, args.noop_jobs, args.noop_files)
        with LocalCluster(5, cluster={"transfer": "tcp"}) as c:
            prepare(c, images, weights)
            out["e_failover_worker"] = failover(c, "H4")
            out["e_failover_leader"] = failover(c, "H1")
    d2 = out["d2_second_job_while_first_holds_every_worker"]
    out["targets"] = {
        "b_cluster_ge_0.9x_baseline": all(r >= 0.9 for r in out["b_ratio_to_baseline"].values()),
        "c_dispatch_ge_2000_per_s": out["c_dispatch_noop"]["batch_8"]["queries_per_s"] >= 2000,
        "d_rate_difference_le_5pct": out["d_concurrent_jobs"].get("difference_pct", 100) <= 5,
        "d2_rate_difference_le_5pct": d2.get("difference_pct", 100) <= 5,
        "second_job_starts_within_1s": d2.get("second_job_started_after_s", 99) <= 1.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--noop-jobs", type=int, default=10)
    p.add_argument("--noop-files", type=int, default=500)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--rounds", type=int, default=2, help="runs of (a) and of (b) to average")
    p.add_argument("--gpu-batch", type=int, default=32, help="batch size for (f)")
    p.add_argument(
        "--device-part",
        choices=("auto", "cpu", "off"),
        default="auto",
        help="(f): auto runs it when torch sees a GPU; cpu runs it on the CPU anyway",
    )
    p.add_argument("--only-device-part", action="store_true", help="run (f) and nothing else")
    args = p.parse_args()
    interrupt_on_sigterm()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    if args.quick:
        args.images, args.noop_jobs, args.noop_files = 24, 4, 100
    wall = time.monotonic()
    out: dict[str, Any] = {"benchmark": "inference", "weights": "freshly initialised"}
    device = _device_for(args.device_part)
    with tempfile.TemporaryDirectory(prefix="infer-bench-") as tmp:
        work = Path(tmp)
        images, weights = dataset(work, args.images)
        if not args.only_device_part:
            cpu_parts(out, work, images, weights, args)
        if device is None:
            out["f_device"] = "torch sees no GPU here; on a GPU machine (f) runs by itself"
        else:
            out["f_device"] = device_part(images, weights, args.gpu_batch, device)
    out["wall_s"] = round(time.monotonic() - wall, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
