"""net.progress: sizes for people (the one human_bytes, used by the console and the
transfer server's refusals)."""

from __future__ import annotations

from net.progress import human_bytes


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(52_428_800) == "52.4 MB"
    assert human_bytes(3e12) == "3.0 TB"
