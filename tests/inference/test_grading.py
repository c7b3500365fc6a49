"""LLM grading's pure part: items, query inputs, prompts, the reply's schema and checks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference import grading
from inference.grading import ItemsRefused, decode_query, label_of, parse_items, parse_reply


def jsonl(*items: Any) -> bytes:
    return "\n".join(i if isinstance(i, str) else json.dumps(i) for i in items).encode()


def item(id: Any, **kw: Any) -> dict[str, Any]:
    return {"id": id, "question": "What is 2+2?", "answer": "4", **kw}


# --- items ----------------------------------------------------------------------------


def test_every_item_becomes_one_query_that_carries_it_whole() -> None:
    data = jsonl(
        item("a"),
        "",
        item(7, reference="4", rubric="exact", max_score=5),
        "   ",
    )
    inputs = parse_items(data)
    assert len(inputs) == 2  # blank lines are not items
    first, second = (decode_query(t) for t in inputs)
    assert first.line == 1 and first.item == grading.Item("a", "What is 2+2?", "4")
    assert second.line == 3 and second.item is not None
    assert (second.item.id, second.item.max_score, second.item.rubric) == (7, 5, "exact")
    assert [label_of(t) for t in inputs] == ["a", 7]


@pytest.mark.parametrize(
    ("line", "label", "error"),
    [
        ("not json", "line 2", "not valid JSON"),
        ("[1, 2]", "line 2", "not a JSON object"),
        (json.dumps({"id": "x", "question": "q"}), "x", "no 'answer'"),
        (json.dumps(item("x", max_score=0)), "x", "'max_score' must be 1..1000, got 0"),
        (json.dumps(item("x", max_score=2.5)), "x", "'max_score' must be an integer"),
        (json.dumps(item("x", answer=4)), "x", "'answer' must be a string"),
        (json.dumps(item("x", colour="red")), "x", "unknown key 'colour'"),
    ],
)
def test_a_malformed_line_becomes_an_error_query_not_a_refusal(
    line: str, label: str, error: str
) -> None:
    inputs = parse_items(jsonl(item("ok"), line))
    bad = decode_query(inputs[1])
    assert bad.item is None and bad.label == label and error in bad.error
    assert decode_query(inputs[0]).item is not None


def test_an_oversized_line_is_an_error_query() -> None:
    huge = json.dumps(item("big", answer="x" * grading.MAX_ITEM_BYTES))
    (only,) = parse_items(jsonl(huge))
    assert "over 65536 bytes" in decode_query(only).error


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ((item("a"), {"question": "q", "answer": "a"}), r"^f line 2 has no id \(every item"),
        ((item("a"), item(None)), r"^f line 2 has no id"),
        ((item(True),), r"^f line 1 has an unusable id True"),
        ((item(""),), r"^f line 1 has an unusable id ''"),
        ((item("a"), item("b"), item("a")), r"^f line 3: id 'a' is used on line 1 already$"),
        ((item(1), item("1")), r"^f line 2: id '1' is used on line 1 already$"),
    ],
)
def test_missing_or_duplicate_ids_refuse_the_file(lines: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ItemsRefused, match=message):
        parse_items(jsonl(*lines), "f")


def test_a_file_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(ItemsRefused, match=r"^f is not UTF-8 text \(byte 0\)$"):
        parse_items(b"\xff\xfe", "f")


def test_decode_query_refuses_what_parse_items_never_makes() -> None:
    for text in ("images/a.jpg", "[]", '{"line": "x"}', '{"line": 1, "item": 3}'):
        with pytest.raises(ValueError):
            decode_query(text)
    assert label_of("images/a.jpg") == "images/a.jpg"


# --- prompts --------------------------------------------------------------------------


def test_the_default_prompt_shows_what_the_item_gives() -> None:
    bare = grading.messages(grading.Item(1, "Why is the sky blue?", "Rayleigh scattering"))
    system, user = bare
    assert system["role"] == "system" and '"score"' in system["content"]
    assert user["role"] == "user"
    text = user["content"]
    assert "Why is the sky blue?" in text and "Rayleigh scattering" in text
    assert "scale of 0 to 10" in text
    assert "Reference answer" not in text and "Rubric" not in text
    full = grading.messages(grading.Item(1, "Q", "A", "REF", "RUB", 4))[1]["content"]
    assert "Reference answer: REF" in full and "Rubric: RUB" in full and "0 to 4" in full


def test_a_template_replaces_the_prompt_and_is_checked() -> None:
    template = "Grade $answer to $question out of $max_score. Costs $$5."
    user = grading.messages(grading.Item(1, "Q?", "A!", max_score=3), template)[1]["content"]
    assert user == "Grade A! to Q? out of 3. Costs $5."
    grading.check_template(template)
    with pytest.raises(ValueError, match=r"uses \$name; known: \$question"):
        grading.check_template("$answer $name")
    with pytest.raises(ValueError, match=r"never shows the answer"):
        grading.check_template("$question only")
    with pytest.raises(ValueError, match=r"bad \$"):
        grading.check_template("$answer costs $5")


# --- replies --------------------------------------------------------------------------


def test_valid_replies_parse() -> None:
    assert parse_reply('{"score": 7, "feedback": "Good."}', 10) == (7, "Good.")
    assert parse_reply('{"score":0,"feedback":""}', 10) == (0, "")


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ('{"score": 7, "feedback": "cut', "not JSON"),
        ("[7]", "not a JSON object"),
        ('{"score": 11, "feedback": ""}', "outside 0..10"),
        ('{"score": -1, "feedback": ""}', "outside 0..10"),
        ('{"score": 7.5, "feedback": ""}', "not an integer"),
        ('{"score": true, "feedback": ""}', "not an integer"),
        ('{"score": "7", "feedback": ""}', "not an integer"),
        ('{"score": 7}', "feedback is not a string"),
        ('{"score": 7, "feedback": "x", "grade": "A"}', "unexpected key 'grade'"),
    ],
)
def test_invalid_replies_are_refused_with_a_reason(reply: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_reply(reply, 10)


def test_feedback_room_always_fits_in_max_tokens() -> None:
    assert grading.feedback_chars(128) == 104
    assert grading.feedback_chars(16) == 8
    assert grading.feedback_chars(8192) == grading.MAX_FEEDBACK_CHARS


def test_the_schema_matches_what_parse_reply_accepts() -> None:
    schema = grading.json_schema(5, 40)
    assert schema["required"] == ["score", "feedback"]
    assert schema["properties"]["score"] == {"type": "integer", "enum": [0, 1, 2, 3, 4, 5]}
    assert schema["properties"]["feedback"]["maxLength"] == 40
    assert schema["additionalProperties"] is False


def test_the_grammar_lists_every_score_and_bounds_the_feedback() -> None:
    text = grading.gbnf(3, 50)
    assert 'score ::= "3" | "2" | "1" | "0"' in text
    assert "char{0,50}" in text


@given(score=st.integers(0, 20), feedback=st.text(max_size=40))
def test_any_reply_in_the_schema_parses_back(score: int, feedback: str) -> None:
    reply = json.dumps({"score": score, "feedback": feedback})
    assert parse_reply(reply, 20) == (score, feedback)


# --- attempts ---------------------------------------------------------------------------


def query(max_score: int = 10) -> grading.Query:
    start = grading.start(json.dumps({"line": 4, "item": item("q", max_score=max_score)}))
    assert isinstance(start, grading.Query)
    return start


def test_an_invalid_reply_is_asked_again_and_both_count_their_tokens() -> None:
    ticks = iter([10.0, 12.5])
    tries = grading.Tries(query(5), "m", clock=lambda: next(ticks))
    assert tries.offer('{"score": 9, "feedback": "x"}', {"prompt_tokens": 100}) is None
    assert "outside 0..5" in tries.why
    row = tries.offer(
        '{"score": 4, "feedback": "ok"}', {"prompt_tokens": 100, "completion_tokens": 7}
    )
    assert row == {
        "input": "q",
        "score": 4,
        "max_score": 5,
        "feedback": "ok",
        "model": "m",
        "prompt_tokens": 200,
        "completion_tokens": 7,
        "seconds": 2.5,
    }


def test_an_item_without_a_valid_reply_is_an_error_row_that_says_why() -> None:
    ticks = iter([0.0, 3.0])
    tries = grading.Tries(query(), "m", clock=lambda: next(ticks))
    for _ in range(grading.ATTEMPTS):
        assert tries.offer("Rating = 7/10", {"completion_tokens": "lots"}) is None
    row = tries.failed()
    assert row["input"] == "q" and row["seconds"] == 3.0 and row["completion_tokens"] == 0
    assert row["error"] == "no valid grade after 2 tries: the reply is not JSON: 'Rating = 7/10'"


def test_a_line_that_cannot_be_graded_has_its_row_at_once() -> None:
    (bad,) = parse_items(b'{"id": "z", "question": "q"}')
    assert grading.start(bad) == {"input": "z", "error": "no 'answer'", "seconds": 0.0}
    assert grading.start("images/a.jpg")["error"].startswith("not a grading query")  # type: ignore[index]


def test_a_retry_samples_warmer_but_never_colder() -> None:
    assert grading.temperature(0.0, 0) == 0.0
    assert grading.temperature(0.0, 1) == grading.RETRY_TEMPERATURE
    assert grading.temperature(1.2, 1) == 1.2
