"""Fixtures that start real introducer and node processes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from scripts.localcluster import LocalCluster


@pytest.fixture
def cluster_factory(request: pytest.FixtureRequest) -> Iterator[Callable[..., LocalCluster]]:
    """Start LocalClusters; each is stopped afterwards, and its logs shown on failure."""
    started: list[LocalCluster] = []

    def make(n: int, **kwargs: Any) -> LocalCluster:
        c = LocalCluster(n, **kwargs)
        started.append(c)
        c.__enter__()
        return c

    yield make
    failed = getattr(request.node, "rep_call", None)
    for c in started:
        if failed is not None and failed.failed:
            for name in ["introducer", *(n.name for n in c.nodes)]:
                path = c.log_path(name)
                if path.exists():
                    tail = "\n".join(path.read_text(errors="replace").splitlines()[-15:])
                    print(f"--- {name} log (last lines) ---\n{tail}")
        c.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
