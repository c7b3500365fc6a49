"""Session-wide fixtures for the whole suite."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from config.topology import SECRET_ENV


@pytest.fixture(autouse=True, scope="session")
def _no_secret_from_the_callers_environment() -> Iterator[None]:
    """Drop IDUNNO_SECRET for the whole run, for this process and every child.

    It overrides every cluster file's secret, so a developer who exports it would
    otherwise run the suite's side-by-side clusters under one shared secret and
    see the config tests read the wrong one.  Tests that want it set it themselves.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(SECRET_ENV, raising=False)
        yield


def pytest_unconfigure(config: pytest.Config) -> None:
    """Close the two /dev/null files llama-cpp-python opens when imported and never
    closes, so that the interpreter's exit does not print a ResourceWarning for each
    (``filterwarnings = error`` cannot turn those into failures; they only add noise)."""
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        f = getattr(utils, name, None)
        if f is not None and not f.closed:
            f.close()
