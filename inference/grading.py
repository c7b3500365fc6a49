"""LLM grading, the pure part: items, prompts, the reply's schema and its validation.

Nothing here does I/O or imports a model runtime; the job kind
(:mod:`inference.kinds.grading`) and the two backends (:mod:`inference.llama_worker` in
the worker process, :mod:`inference.openai_client` on the node) share it, so both
backends ask the same question and accept the same answers.

Items.  A job's file is JSON Lines, one item per line: ``{"id", "question", "answer"}``
with optional ``"reference"``, ``"rubric"`` and ``"max_score"`` (default 10).
:func:`parse_items` reads it at submission: a line without an id, or an id used
twice, refuses the job (:class:`ItemsRefused`, one line naming the line); any other
fault (not JSON, a missing question, a bad max_score) becomes that item's error row,
not a failed job.  Each item travels to its worker as one query *input*: compact
JSON ``{"line": N, "item": {...}}``, or ``{"line": N, "id"?: ID, "error": WHY}`` for a
line that cannot be graded, so a worker needs nothing but the query.

Prompt.  :data:`DEFAULT_TEMPLATE` follows the seed's ("Rate the following answer on a
scale of ...") with the question, the reference and rubric when given, and the scale;
a cluster may replace it with a template file in SDFS (``prompt`` in ``[[llm]]``)
using ``$question``, ``$answer``, ``$reference``, ``$rubric`` and ``$max_score``.

Reply.  The model must answer ``{"score": INTEGER 0..max_score, "feedback": STRING}``.
Decoding is constrained to that where the backend allows (:func:`gbnf` for
llama.cpp's grammars, :func:`json_schema` for a server's ``response_format``) and
every reply is validated by :func:`parse_reply` anyway; a reply that fails is asked
once more, then becomes an error row.
"""

from __future__ import annotations

import json
import string
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_SCORE = 10
# Scores above this are refused: the grammar lists every score, and nobody grades out of more.
MAX_MAX_SCORE = 1000
# An item's line, in bytes (a short answer is a few hundred).
MAX_ITEM_BYTES = 64 * 1024
# A job file, in bytes: the leader reads it whole at submission.
MAX_FILE_BYTES = 256 * 1024 * 1024
# Feedback longer than this is cut by the grammar (the schema's maxLength); see
# feedback_chars for the bound a reply's max_tokens sets.
MAX_FEEDBACK_CHARS = 600
# Tokens a reply spends outside its feedback: {"score": 10, "feedback": ""} and an end.
_FRAME_TOKENS = 24
# Tries per item: the first reply and one retry after an invalid one.
ATTEMPTS = 2
# The retry samples at least this warm: at temperature 0 it would repeat the invalid
# reply word for word.  It is seeded (the seed plus one), so it is repeatable too.
RETRY_TEMPERATURE = 0.7


def temperature(configured: float, attempt: int) -> float:
    """The sampling temperature of try ``attempt`` (0 first)."""
    return configured if attempt == 0 else max(configured, RETRY_TEMPERATURE)


SYSTEM_PROMPT = (
    "You are a careful, fair grader of students' answers. Reply with one JSON object "
    'with two keys: "score", an integer, and "feedback", a short reason for the score.'
)

DEFAULT_TEMPLATE = """Rate the following answer on a scale of 0 to $max_score.

Question: $question
$reference_block$rubric_block
Answer: $answer

Reply with the score, an integer from 0 to $max_score, and a short reason."""

_FIELDS = ("question", "answer", "reference", "rubric", "max_score")


class ItemsRefused(ValueError):
    """The job's file cannot be submitted at all (a missing or duplicate id)."""


@dataclass(frozen=True)
class Item:
    id: str | int
    question: str
    answer: str
    reference: str = ""
    rubric: str = ""
    max_score: int = DEFAULT_MAX_SCORE


@dataclass(frozen=True)
class Query:
    """One query's input, decoded: an item to grade, or the reason its line cannot be."""

    line: int
    item: Item | None
    error: str = ""
    id: str | int | None = None  # for an error row: the line's id, if it had one

    @property
    def label(self) -> str | int:
        """What the output's ``"input"`` says: the item's id, else ``line N``."""
        if self.item is not None:
            return self.item.id
        return self.id if self.id is not None else f"line {self.line}"


# --- items ----------------------------------------------------------------------------


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and bool(value.strip()) and len(value) <= 256


def _item(obj: dict[str, Any]) -> Item:
    """The item in a line's object; ValueError (one line) if it cannot be graded."""
    unknown = sorted(k for k in obj if k != "id" and k not in _FIELDS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}")
    for key in ("question", "answer"):
        if key not in obj:
            raise ValueError(f"no {key!r}")
    for key in ("question", "answer", "reference", "rubric"):
        if key in obj and not isinstance(obj[key], str):
            raise ValueError(f"{key!r} must be a string")
    max_score = obj.get("max_score", DEFAULT_MAX_SCORE)
    if isinstance(max_score, bool) or not isinstance(max_score, int):
        raise ValueError("'max_score' must be an integer")
    if not 1 <= max_score <= MAX_MAX_SCORE:
        raise ValueError(f"'max_score' must be 1..{MAX_MAX_SCORE}, got {max_score}")
    return Item(
        id=obj["id"],
        question=obj["question"],
        answer=obj["answer"],
        reference=obj.get("reference", ""),
        rubric=obj.get("rubric", ""),
        max_score=max_score,
    )


def parse_items(data: bytes, name: str = "the file") -> list[str]:
    """One query input per item of a JSON Lines file (blank lines are skipped).

    ItemsRefused for a line whose object has no usable id, or an id seen before;
    every other fault becomes that line's error input (see the module docstring).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ItemsRefused(f"{name} is not UTF-8 text (byte {e.start})") from None
    inputs: list[str] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line.encode()) > MAX_ITEM_BYTES:
            inputs.append(_error_input(n, None, f"line is over {MAX_ITEM_BYTES} bytes"))
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            inputs.append(_error_input(n, None, f"not valid JSON ({e})"))
            continue
        if not isinstance(obj, dict):
            inputs.append(_error_input(n, None, "not a JSON object"))
            continue
        if "id" not in obj or not _valid_id(obj["id"]):
            what = "has no id" if obj.get("id") is None else f"has an unusable id {obj['id']!r}"
            raise ItemsRefused(
                f"{name} line {n} {what} (every item needs an id: a string or an integer)"
            )
        key = str(obj["id"])
        if key in seen:
            raise ItemsRefused(
                f"{name} line {n}: id {obj['id']!r} is used on line {seen[key]} already"
            )
        seen[key] = n
        try:
            item = _item(obj)
        except ValueError as e:
            inputs.append(_error_input(n, obj["id"], str(e)))
            continue
        inputs.append(json.dumps({"line": n, "item": _item_plain(item)}, separators=(",", ":")))
    return inputs


def _item_plain(item: Item) -> dict[str, Any]:
    d: dict[str, Any] = {"id": item.id, "question": item.question, "answer": item.answer}
    if item.reference:
        d["reference"] = item.reference
    if item.rubric:
        d["rubric"] = item.rubric
    if item.max_score != DEFAULT_MAX_SCORE:
        d["max_score"] = item.max_score
    return d


def _error_input(line: int, id: Any, error: str) -> str:
    d: dict[str, Any] = {"line": line, "error": error}
    if id is not None:
        d["id"] = id
    return json.dumps(d, separators=(",", ":"))


def decode_query(text: str) -> Query:
    """A query input made by :func:`parse_items`; ValueError if it is not one."""
    try:
        d = json.loads(text)
    except ValueError:
        raise ValueError(f"not a grading query: {text[:60]!r}") from None
    if not isinstance(d, dict) or not isinstance(d.get("line"), int):
        raise ValueError(f"not a grading query: {text[:60]!r}")
    if "item" in d:
        if not isinstance(d["item"], dict):
            raise ValueError("a grading query's item must be an object")
        return Query(d["line"], _item(d["item"]))
    return Query(d["line"], None, str(d.get("error", "cannot be graded")), d.get("id"))


def label_of(text: str) -> str | int:
    """The output ``"input"`` for a query input (the text itself if it is not one)."""
    try:
        return decode_query(text).label
    except ValueError:
        return text


# --- prompts ----------------------------------------------------------------------------


def check_template(template: str) -> None:
    """ValueError (one line) unless ``template`` is a usable prompt template."""
    try:
        ids = string.Template(template).get_identifiers()
    except ValueError as e:
        raise ValueError(f"the prompt template is not valid: {e}") from None
    unknown = sorted(set(ids) - {*_FIELDS, "reference_block", "rubric_block"})
    if unknown:
        raise ValueError(
            f"the prompt template uses ${unknown[0]}; known: " + ", ".join(f"${f}" for f in _FIELDS)
        )
    if "answer" not in ids:
        raise ValueError("the prompt template never shows the answer ($answer)")
    if not string.Template(template).is_valid():
        raise ValueError("the prompt template has a bad $: write $$ for a dollar sign")


def messages(item: Item, template: str | None = None) -> list[dict[str, str]]:
    """The chat messages that ask for ``item``'s grade."""
    values: Mapping[str, Any] = {
        "question": item.question,
        "answer": item.answer,
        "reference": item.reference,
        "rubric": item.rubric,
        "max_score": item.max_score,
        "reference_block": f"Reference answer: {item.reference}\n" if item.reference else "",
        "rubric_block": f"Rubric: {item.rubric}\n" if item.rubric else "",
    }
    user = string.Template(template or DEFAULT_TEMPLATE).safe_substitute(values)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --- the reply ----------------------------------------------------------------------------


def feedback_chars(max_tokens: int) -> int:
    """The longest feedback a reply of ``max_tokens`` tokens surely has room for.

    Every token carries at least one character, so feedback of at most
    ``max_tokens - 24`` characters always leaves room to close the JSON: a small model
    that rambles (SmolLM2 repeats itself until it is stopped) is cut by the grammar, not
    by max_tokens, and its reply stays valid.  Raise ``max_tokens`` for longer feedback.
    """
    return max(8, min(MAX_FEEDBACK_CHARS, max_tokens - _FRAME_TOKENS))


def json_schema(max_score: int, max_chars: int = MAX_FEEDBACK_CHARS) -> dict[str, Any]:
    """The reply's JSON schema, for servers that constrain decoding to one."""
    return {
        "type": "object",
        "properties": {
            # Every score spelled out: llama.cpp's Python server turns minimum and
            # maximum into no constraint at all, and OpenAI's strict mode refuses them.
            "score": {"type": "integer", "enum": list(range(max_score + 1))},
            "feedback": {"type": "string", "maxLength": max_chars},
        },
        "required": ["score", "feedback"],
        "additionalProperties": False,
    }


def gbnf(max_score: int, max_chars: int = MAX_FEEDBACK_CHARS) -> str:
    """A llama.cpp grammar (GBNF) that admits exactly the replies :func:`parse_reply`
    accepts: every score 0..max_score spelled out, feedback a bounded JSON string, and
    little whitespace (a grammar that allows unbounded whitespace lets a small model
    spend its tokens on it)."""
    scores = " | ".join(f'"{s}"' for s in range(max_score, -1, -1))
    return "\n".join(
        [
            'root ::= "{" ws "\\"score\\"" ws ":" ws score ws "," ws '
            '"\\"feedback\\"" ws ":" ws feedback ws "}"',
            f"score ::= {scores}",
            f'feedback ::= "\\"" char{{0,{max_chars}}} "\\""',
            'char ::= [^"\\\\\\x00-\\x1F] | "\\\\" (["\\\\/bfnrt] | "u" [0-9a-fA-F]{4})',
            "ws ::= [ \\t\\n]{0,2}",
        ]
    )


def parse_reply(text: str, max_score: int) -> tuple[int, str]:
    """``(score, feedback)`` from a model's reply; ValueError (one line) if invalid."""
    try:
        # strict=False: a raw newline inside the feedback (which some servers' grammars
        # let through) is still a reply worth keeping.
        obj = json.loads(text, strict=False)
    except ValueError:
        raise ValueError(f"the reply is not JSON: {text[:80]!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"the reply is not a JSON object: {text[:80]!r}")
    score, feedback = obj.get("score"), obj.get("feedback")
    if isinstance(score, bool) or not isinstance(score, int):
        raise ValueError(f"the reply's score is not an integer: {score!r}")
    if not 0 <= score <= max_score:
        raise ValueError(f"the reply's score {score} is outside 0..{max_score}")
    if not isinstance(feedback, str):
        raise ValueError(f"the reply's feedback is not a string: {feedback!r}")
    extra = sorted(set(obj) - {"score", "feedback"})
    if extra:
        raise ValueError(f"the reply has an unexpected key {extra[0]!r}")
    return score, feedback


def start(text: str) -> Query | dict[str, Any]:
    """The query to grade in a query input, or at once the error row of one that cannot
    be graded (a malformed line, or text that is no grading query)."""
    try:
        query = decode_query(text)
    except ValueError as e:
        return error_row(label_of(text), str(e), seconds=0.0)
    if query.item is None:
        return error_row(query.label, query.error, seconds=0.0)
    return query


@dataclass
class Tries:
    """One item's attempts at a valid reply (at most :data:`ATTEMPTS`), whichever
    backend makes them: offer each reply; the row comes back once one is valid."""

    query: Query
    model: str
    clock: Callable[[], float] = time.perf_counter
    prompt_tokens: int = 0
    completion_tokens: int = 0
    why: str = ""  # why the last reply was refused

    def __post_init__(self) -> None:
        assert self.query.item is not None, "only an item can be graded"
        self.started = self.clock()

    def offer(self, reply: str, usage: Mapping[str, Any]) -> dict[str, Any] | None:
        """The row if ``reply`` is a valid grade, else None (:attr:`why` says why)."""
        assert self.query.item is not None
        self.prompt_tokens += _tokens(usage.get("prompt_tokens"))
        self.completion_tokens += _tokens(usage.get("completion_tokens"))
        try:
            score, feedback = parse_reply(reply, self.query.item.max_score)
        except ValueError as e:
            self.why = str(e)
            return None
        return {
            "input": self.query.label,
            "score": score,
            "max_score": self.query.item.max_score,
            "feedback": feedback,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds": self.clock() - self.started,
        }

    def failed(self, why: str | None = None) -> dict[str, Any]:
        """The error row once no valid reply came (``why``: a failure that ended it)."""
        return error_row(
            self.query.label,
            why if why is not None else f"no valid grade after {ATTEMPTS} tries: {self.why}",
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            seconds=self.clock() - self.started,
        )


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def error_row(label: str | int, error: str, **extra: Any) -> dict[str, Any]:
    return {"input": label, "error": error, **extra}
