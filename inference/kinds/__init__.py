"""The registry of job kinds: which kind serves a model.

The scheduler and the services look a model up here and then talk only to the
:class:`~inference.kinds.base.JobKind` interface; they never name a kind or a model.
Adding a kind is one module implementing that interface plus one :func:`register`
call below (tests register their own toy kinds and :func:`unregister` them after).
Kinds are asked in registration order; the first that recognises a name serves it.
Everything imported here is torch-free: the node imports this registry.
"""

from __future__ import annotations

from collections.abc import Sequence

from config.llm import LlmSpec
from inference.events import Row
from inference.kinds.base import JobKind
from inference.kinds.grading import Grading
from inference.kinds.image import ImageClassification
from inference.kinds.noop import Noop
from inference.kinds.paced import PacedNoop
from net.errors import Invalid

_KINDS: list[JobKind] = []


def register(kind: JobKind) -> None:
    """Serve the models ``kind`` recognises (after those of the kinds registered before)."""
    if any(k.name == kind.name for k in _KINDS):
        raise ValueError(f"a job kind named {kind.name!r} is already registered")
    _KINDS.append(kind)


def unregister(name: str) -> None:
    _KINDS[:] = [k for k in _KINDS if k.name != name]


def use_llms(specs: Sequence[LlmSpec]) -> None:
    """Serve the cluster file's grading models (``[[llm]]``), replacing any before."""
    unregister(Grading.name)
    if specs:
        register(Grading(specs))


def resolve(model: str) -> tuple[JobKind, str]:
    """The kind serving ``model`` and the model's canonical name; Invalid if none does."""
    for kind in _KINDS:
        canonical = kind.canonical(model)
        if canonical is not None:
            return kind, canonical
    offered = [m for k in _KINDS for m in k.models]
    raise Invalid(f"unknown model {model!r}: valid models are {', '.join(offered)}")


def kind_of(model: str) -> JobKind:
    return resolve(model)[0]


def error_row(model: str, input: str, error: str) -> Row:
    """The row of a query of ``model`` that failed for good (for the scheduler)."""
    try:
        kind = kind_of(model)
    except Invalid:  # a model no kind serves (a scheduler test's): the bare minimum
        return {"input": input, "error": error}
    return kind.error_row(input, error)


register(ImageClassification())
register(Noop())
register(PacedNoop())
