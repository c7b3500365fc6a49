"""``/metrics`` on a real cluster: scraped during a job, its figures agree with C1 and
C2, and its membership and SDFS figures with list_mem, store and ls-all.

Five real node processes, each with an HTTP port in the cluster file; the jobs use the
paced ``noop-5ms`` model (no inference, 5 ms per query and its measured time: a cheap
job that goes through the scheduler, the standbys and the workers like any other), with
batches of one query: five jobs of 200 queries, submitted one after another, keep the
cluster busy for a few seconds while C1 is asked between scrapes again and again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference.worker import WORKER_SLOTS
from scripts.localcluster import ConsoleError, LocalCluster, console_many, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

N = 5
FILES = 200  # noop inputs: one query per file per job
# 5 ms a query, measured (the timer's lateness makes the times differ: C2's
# percentiles are not all one number), in the worker like a model's.
MODEL = "noop-5ms"
JOBS = 5  # submitted one after another: the cluster stays busy for a few seconds

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, dict[str, int]]]:
    ports = {f"H{i}": free_port() for i in range(1, N + 1)}
    files = tmp_path_factory.mktemp("noop")
    for i in range(FILES):
        (files / f"q{i:03d}").write_bytes(b"%d\n" % i)
    extra = {name: {"http_port": port} for name, port in ports.items()}
    with LocalCluster(N, cluster={"transfer": "tcp"}, node_extra=extra) as c:
        c.wait_converged(timeout=60)
        c.console("H2", "put-dir", str(files), "noop", timeout=120)
        yield c, ports


def bracket(c: LocalCluster, port: int) -> tuple[Samples, dict[str, Any] | None, Samples]:
    """A scrape of the leader, C1 (noop's row, if any), and another scrape."""
    before = scrape(port)
    c1 = c.console("H4", "C1")["models"].get(MODEL)
    return before, c1, scrape(port)


def test_scraped_during_jobs_the_figures_agree_with_c1_c2_list_mem_store_and_ls(
    cluster: tuple[LocalCluster, dict[str, int]], tmp_path: Path
) -> None:
    c, ports = cluster
    leader = c.list_mem("H3")["leader"]
    assert leader == "H1"
    c.console("H3", "C3", MODEL, "1")
    total = JOBS * FILES

    # C1 between two scrapes of the leader, over and over from before the jobs are
    # submitted until they are done (a one-shot console takes a good part of a second,
    # as long as a job).
    brackets: list[tuple[Samples, dict[str, Any] | None, Samples]] = []
    stop = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                b = bracket(c, ports[leader])
            except ConsoleError:  # a console's hiccup under load: the next one will do
                continue
            brackets.append(b)
            if get(b[2], "idunno_queries_total", model=MODEL) >= total:
                return

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        submit = ("C4", "submit-job", MODEL, "noop/*")
        jobs = [c.console("H2", *submit)["job_id"] for _ in range(JOBS)]
    except BaseException:
        stop.set()
        raise
    finally:
        watcher.join(timeout=130)
    # Each C1 count lies between its scrapes'; its rate differs from theirs by at most
    # what completed in between (a 10 s window gains at most those, and loses nothing
    # the later scrape still holds), and the queries in flight, were a rate to credit
    # work under way (at most one query per slot: batches of one).
    during = 0
    in_flight = N * WORKER_SLOTS
    for before, c1, after in brackets:
        if c1 is None:
            continue
        cb, ca = (get(s, "idunno_queries_total", model=MODEL) for s in (before, after))
        assert cb <= c1["query_count"] <= ca
        slack = (ca - cb + in_flight) / 10 + 1e-9
        rb, ra = (get(s, "idunno_query_rate", model=MODEL) for s in (before, after))
        assert ra - slack <= c1["query_rate"] <= rb + slack, (rb, c1, ra)
        during += cb < ca  # queries completed while C1 was asked: a job was running
    assert during >= 1, f"no C1 during the jobs: {[b[1] for b in brackets]}"

    # Done: counts equal, C2's percentiles are the quantiles, every query in the histogram.
    def all_done() -> bool:
        return all(c.console("H3", "C4", "status", j)["state"] == "done" for j in jobs)

    wait_for(all_done, 60, "the jobs to finish")
    c1 = c.console("H4", "C1")["models"][MODEL]
    c2 = c.console("H4", "C2")["models"][MODEL]
    done = scrape(ports[leader])
    assert get(done, "idunno_queries_total", model=MODEL) == c1["query_count"] == total
    assert get(done, "idunno_query_duration_seconds_count", model=MODEL) == total
    assert 0.005 <= c2["median"] <= c2["p99"]  # measured: the pace and then some
    for q, key in (("0.5", "median"), ("0.9", "p90"), ("0.95", "p95"), ("0.99", "p99")):
        assert get(done, "idunno_query_seconds", model=MODEL, quantile=q) == c2[key]
    assert get(done, "idunno_query_seconds_mean", model=MODEL) == c2["mean"]
    assert get(done, "idunno_queue_queries", model=MODEL) == 0
    assert get(done, "idunno_scheduler") == 1 and get(done, "idunno_leader") == 1

    # The jobs' outputs are written once they are done: wait for the last.
    def all_listed() -> list[str] | None:
        files: list[str] = c.console("H2", "ls-all")["files"]
        return files if len(files) == FILES + JOBS else None

    listed = wait_for(all_listed, 30, "the jobs' outputs in ls-all")
    # Every node: its worker's queries add up to the jobs'; membership as list_mem says;
    # files as its store lists; only the leader exports the scheduler's figures.
    out = tmp_path / "got.txt"
    got = c.console("H5", "get", "noop/q007", str(out))
    assert out.read_bytes() == b"7\n" and got["bytes"] == 2
    scrapes = {name: scrape(port) for name, port in ports.items()}
    assert sum(get(s, "idunno_worker_queries_total") for s in scrapes.values()) == total
    assert sum(get(s, "idunno_worker_busy_seconds_total") for s in scrapes.values()) > 0
    downloads = sum(get(s, "idunno_sdfs_downloads_total") for s in scrapes.values())
    timed = sum(get(s, "idunno_sdfs_get_seconds_count") for s in scrapes.values())
    assert downloads == timed >= 1  # the get above, from one of its replicas
    names = sorted(ports)

    def per_node() -> list[tuple[str, Any, Any]] | None:
        """list_mem and store of every node, once its scrape says the same files (a
        put's last replica may commit after the put returned: then ask again)."""
        calls = [(c.node(n), (cmd,)) for n in names for cmd in ("list_mem", "store")]
        answers = console_many(calls, c.config_path)
        rows = [(n, answers[2 * k], answers[2 * k + 1]) for k, n in enumerate(names)]
        for name, view, store in rows:
            assert isinstance(view, dict) and isinstance(store, dict), (view, store)
            if get(scrape(ports[name]), "idunno_sdfs_files") != len(store["files"]):
                return None
        return rows

    for name, view, _ in wait_for(per_node, 20, "each node's files in /metrics and store"):
        s = scrapes[name]
        assert get(s, "idunno_members", state="alive") == len(view["members"]) == N
        assert get(s, "idunno_leader") == (1 if view["leader"] == name else 0)
        if name != leader:
            assert get(s, "idunno_scheduler") == 0
            assert ("idunno_queries_total", (("model", MODEL),)) not in s
            assert ("idunno_sdfs_cluster_files", ()) not in s

    # Every file the leader lists was put (the noop inputs and the jobs' outputs) and
    # timed from grant to commit, on this one leader.
    assert get(scrapes[leader], "idunno_sdfs_cluster_files") == len(listed) == FILES + JOBS
    assert get(scrapes[leader], "idunno_sdfs_put_seconds_count") == len(listed)
    assert get(scrapes[leader], "idunno_membership_pings_sent_total") > 0
    assert get(scrapes[leader], "idunno_membership_sent_bytes_total") > 0
