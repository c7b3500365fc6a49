"""How a node finds the GPU it advertises in its worker capacity (without torch)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from inference.worker import _gpu_name


@pytest.fixture
def smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``nvidia-smi`` on PATH that answers like one with two cards (this machine has none)."""
    tool = tmp_path / "nvidia-smi"
    tool.write_text("#!/bin/sh\nprintf 'NVIDIA H200\\nNVIDIA H200\\n'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tool


def test_the_first_cards_name(smi: Path) -> None:
    assert _gpu_name() == "NVIDIA H200"


@pytest.mark.parametrize("hidden", ["", "-1", " "])
def test_no_gpu_when_cuda_visible_devices_hides_them(
    smi: Path, hidden: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert _gpu_name() is None


def test_a_visible_device_list_keeps_the_gpu(smi: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert _gpu_name() == "NVIDIA H200"


def test_no_nvidia_smi_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _gpu_name() is None


def test_a_failing_nvidia_smi_means_no_gpu(smi: Path) -> None:
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    assert _gpu_name() is None
