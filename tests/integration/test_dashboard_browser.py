"""The dashboard in a real browser: headless Chromium, driven by selenium, watching
the page a non-leader serves in a cluster of real processes.

One cluster and one browser for the module. The page lists every member; a job of the
paced pseudo-model ``noop-1500ms`` (1.5 s per query, so no torch is loaded), shows its
progress bar advancing between two looks; after the leader is killed with SIGKILL the
page names the new leader (within the failure detection time) and shows data from it;
and when the node serving the page is killed, the page moves to another member's
dashboard. The tests run in order on the one cluster (each picks up where the one
before left it). Screenshots go to ``$IDUNNO_ARTIFACTS_DIR`` (default ``artifacts/``
at the repository root), under ``dashboard/``; the test prints where. Chromium and
chromedriver come from Debian (``make browser-deps``): without them the test fails
saying so, it does not skip.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.localcluster import REPO_ROOT, LocalCluster, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

NODES = ("H1", "H2", "H3", "H4", "H5")
WATCH = "H3"  # the page under test: served by a node that is not the leader
FILES = 40
MODEL = "noop-1500ms"  # 1.5 s a query: 5 workers, one batch at a time each: ~12 s a job
# From a SIGKILL to every member's view without it: ping_duration + ping_timeout +
# cleanup_time (5 s by default), plus the lease and takeover, with room for a loaded CI.
NEW_LEADER_WITHIN = 20.0


def artifacts_dir() -> Path:
    root = Path(os.environ.get("IDUNNO_ARTIFACTS_DIR") or REPO_ROOT / "artifacts")
    path = root / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


def browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing = [n for n, p in (("chromium", chromium), ("chromedriver", driver)) if p is None]
        pytest.fail(
            f"the dashboard's browser test needs {' and '.join(missing)}: run 'make "
            "browser-deps' (Debian: apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    return chromium, driver


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    ports = {name: free_port() for name in NODES}
    extra = {name: {"http_port": port} for name, port in ports.items()}
    inputs = tmp_path_factory.mktemp("inputs")
    for i in range(FILES):
        (inputs / f"q{i:03d}.txt").write_text(f"query {i}\n")
    c = LocalCluster(len(NODES), node_extra=extra)
    try:
        c.__enter__()
        c.wait_converged(timeout=30)
        c.console("H2", "put-dir", str(inputs), "images", timeout=60)
        yield c
    except BaseException:
        for name in NODES:
            print(f"--- {name} log (last lines) ---\n{c.procs[name].log_tail(15)}")
        raise
    finally:
        c.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium, driver_path = browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1400,2300")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def url(c: LocalCluster, name: str) -> str:
    """The dashboard of ``name``: its http_port is in the cluster file, as a user's is."""
    import tomllib

    config = tomllib.loads(c.config_path.read_text())
    node = next(n for n in config["nodes"] if n["name"] == name)
    return f"http://{node['host']}:{node['http_port']}/"


def shot(browser: Any, name: str) -> None:
    path = artifacts_dir() / f"{name}.png"
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")


def page(browser: Any, script: str) -> Any:
    """What ``script`` returns in the page; None while the page is (re)loading."""
    from selenium.common.exceptions import WebDriverException

    try:
        return browser.execute_script(script)
    except WebDriverException:
        return None


def count(browser: Any, selector: str) -> int:
    """How many elements match ``selector`` (a CSS selector without single quotes)."""
    return int(page(browser, f"return document.querySelectorAll('{selector}').length") or 0)


def text(browser: Any, element_id: str) -> str | None:
    got = page(browser, f"return document.getElementById('{element_id}').textContent")
    return None if got is None else str(got)


def leader(browser: Any) -> str | None:
    got = page(browser, "return document.getElementById('leader').dataset.leader")
    return None if got is None else str(got)


def members(browser: Any) -> list[str]:
    got = page(
        browser,
        "return [...document.querySelectorAll('#members tbody tr')].map(r => r.dataset.name)",
    )
    return [str(n) for n in got or []]


def progress(browser: Any, job: str) -> tuple[int, int] | None:
    """(done, total) of ``job`` as its row on the page says, None without a row."""
    got = page(
        browser,
        f"const r = document.querySelector('#jobs tr[data-job=\"{job}\"]');"
        "return r ? [Number(r.dataset.done), Number(r.dataset.total)] : null",
    )
    return None if got is None else (int(got[0]), int(got[1]))


def test_the_page_lists_every_member_and_the_leader(cluster: LocalCluster, browser: Any) -> None:
    started = time.monotonic()
    browser.get(url(cluster, WATCH))
    wait_for(lambda: sorted(members(browser)) == list(NODES), 20, "the page to list every member")
    assert count(browser, "#ring g.member") == len(NODES)
    assert leader(browser) == "H1"
    assert text(browser, "served-by") == WATCH
    shot(browser, "1-members")
    print(f"members listed {time.monotonic() - started:.1f} s after opening the page")


def test_a_jobs_progress_bar_advances(cluster: LocalCluster, browser: Any) -> None:
    job = cluster.console("H2", "C4", "submit-job", MODEL)["job_id"]

    def running() -> tuple[int, int] | None:
        p = progress(browser, job)
        return p if p is not None and 0 < p[0] < p[1] else None

    first = wait_for(running, 30, f"{job} to show some progress on the page")

    def advanced() -> tuple[int, int] | None:
        p = progress(browser, job)
        return p if p is not None and p[0] > first[0] else None

    second = wait_for(advanced, 15, f"{job}'s progress to advance past {first[0]}")
    assert second[1] == first[1] == FILES
    bar = f'#jobs tr[data-job="{job}"] .bar > div'
    width = str(page(browser, f"return document.querySelector('{bar}').style.width"))
    assert width.endswith("%") and float(width[:-1]) > 0
    # The charts have the job's model and the workers' busy spans in them.
    rate_line = f'#rates polyline[data-model="{MODEL}"]'
    wait_for(lambda: count(browser, rate_line), 10, f"{MODEL}'s rate line")
    assert count(browser, f'#busy rect.span[data-job="{job}"]') > 0
    assert count(browser, f'#latency rect[data-model="{MODEL}"]') == 5  # mean, p50, p90, p95, p99
    assert count(browser, "#sdfs-files tbody tr") > 0
    assert count(browser, "#sdfs-nodes tbody tr") == len(NODES)
    shot(browser, "2-job-progress")
    print(f"{job}: {first[0]}/{first[1]} then {second[0]}/{second[1]} on the page")


def test_the_page_shows_the_new_leader_after_the_leader_is_killed(
    cluster: LocalCluster, browser: Any
) -> None:
    killed = time.monotonic()
    cluster.kill("H1")
    wait_for(lambda: leader(browser) == "H2", NEW_LEADER_WITHIN, "the page to name H2 the leader")
    shown = time.monotonic() - killed
    names = members(browser)
    assert "H1" not in names and len(names) == len(NODES) - 1
    # Still drawn in its place on the ring, greyed.
    assert count(browser, '#ring g.member[data-name="H1"][data-status="absent"]') == 1
    # And the leader's data now comes from H2.
    wait_for(
        lambda: page(browser, "return document.body.dataset.dataFrom") == "H2",
        NEW_LEADER_WITHIN,
        "the page's data to come from H2",
    )
    data = time.monotonic() - killed
    shot(browser, "3-new-leader")
    print(f"leader H1 killed: the page named H2 {shown:.1f} s later, its data {data:.1f} s later")


def test_the_page_moves_to_another_member_when_its_node_dies(
    cluster: LocalCluster, browser: Any
) -> None:
    killed = time.monotonic()
    cluster.kill(WATCH)

    def moved() -> str | None:
        name = text(browser, "served-by")
        return name if name not in (None, "?", WATCH) else None

    moved_to = wait_for(moved, 20, f"the page to move from {WATCH}'s dashboard to another's")
    assert moved_to in NODES and moved_to not in ("H1", WATCH)
    assert browser.current_url != url(cluster, WATCH)
    wait_for(lambda: members(browser), 10, "the new page to list the members")
    shot(browser, "4-moved")
    took = time.monotonic() - killed
    print(f"{WATCH} killed: the page moved to {moved_to}'s dashboard {took:.1f} s later")
