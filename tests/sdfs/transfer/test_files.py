"""sdfs.transfer.files: the name rules every sender and receiver applies."""

from __future__ import annotations

from pathlib import Path

from sdfs.transfer import name_problem, temp_sibling
from tests.helpers.transfers import BAD_NAMES


def test_name_rules() -> None:
    assert name_problem("v3-1a2b") is None
    assert name_problem("ünïcode name.jpg") is None
    for bad in BAD_NAMES:
        assert name_problem(bad)
    assert name_problem("x" * 256)
    assert name_problem(Path(temp_sibling("/a/b")).name)  # our own temporaries are reserved
