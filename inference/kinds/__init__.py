"""The registry of job kinds: which kind serves a model.

The scheduler and the services look a model up here and then talk only to the
:class:`~inference.kinds.base.JobKind` interface; they never name a kind or a model.
Adding a kind is one module implementing that interface plus one :func:`register`
call below (tests register their own toy kinds and :func:`unregister` them after).
Kinds are asked in registration order; the first that recognises a name serves it.
Everything imported here is torch-free: the node imports this registry.

A user's kinds come from the ``idunno.job_kinds`` entry-point group
(:data:`ENTRY_POINT_GROUP`), loaded when this module is first imported, after the
built-in image kinds and before the cluster file's grading models: each entry names a
:class:`~inference.kinds.base.JobKind` object (an
:class:`~inference.kinds.custom.ImageModel` for the common case) or a class or
function that makes one.  An entry that fails to import, makes something that is not
a kind, or takes a name already registered is logged once and skipped (``models``
lists it under ``skipped``): a broken plug-in never stops a node.  Its module is
imported by the node, so it must not import torch at its top level.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Sequence
from typing import Any

from config.llm import LlmSpec
from inference.events import Row
from inference.kinds.base import JobKind
from inference.kinds.grading import Grading
from inference.kinds.image import ImageClassification
from inference.kinds.noop import Noop
from inference.kinds.paced import PacedNoop
from inference.models import or_list, suggestions
from net.errors import Invalid, one_line

log = logging.getLogger("inference.kinds")

ENTRY_POINT_GROUP = "idunno.job_kinds"
# A kind with more models than this is summed up in "valid models are ..." (the
# console's ``models`` command lists every name).
_SHOWN_PER_KIND = 4

_KINDS: list[JobKind] = []
# Entry points that could not be loaded: entry name -> why (one line).
_SKIPPED: dict[str, str] = {}


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
    """The kind serving ``model`` and the model's canonical name; Invalid if none does.

    The refusal is one line: the closest names if there are any, else a summary of
    what is offered (a kind with many models shows its first two and a count)."""
    for kind in _KINDS:
        canonical = kind.canonical(model)
        if canonical is not None:
            return kind, canonical
    offered = [m for k in _KINDS for m in k.models]
    close = suggestions(model, offered)
    if close:
        raise Invalid(
            f"unknown model {model!r}: did you mean {or_list(close)}? "
            f"(the command 'models' lists all {len(offered)})"
        )
    summary: list[str] = []
    for kind in _KINDS:
        if len(kind.models) > _SHOWN_PER_KIND:
            more = len(kind.models) - 2
            summary += [*kind.models[:2], f"{more} more {kind.name} models"]
        else:
            summary += kind.models
    valid = or_list(summary, "and") if summary else "none"
    raise Invalid(
        f"unknown model {model!r}: valid models are {valid} (the command 'models' lists them)"
    )


def catalogue() -> dict[str, Any]:
    """What the console's ``models`` command shows: every model name C3 and C4 accept
    (``models``), the same per kind (``kinds``), and the entry points that could not
    be loaded (``skipped``: entry name -> why)."""
    kinds = {k.name: list(k.models) for k in _KINDS if k.models}
    return {
        "models": [m for names in kinds.values() for m in names],
        "kinds": kinds,
        "skipped": dict(_SKIPPED),
    }


def kind_of(model: str) -> JobKind:
    return resolve(model)[0]


def error_row(model: str, input: str, error: str) -> Row:
    """The row of a query of ``model`` that failed for good (for the scheduler)."""
    try:
        kind = kind_of(model)
    except Invalid:  # a model no kind serves (a scheduler test's): the bare minimum
        return {"input": input, "error": error}
    return kind.error_row(input, error)


def _is_kind(obj: Any) -> bool:
    """Does ``obj`` look like a :class:`JobKind` (the Protocol cannot be checked at run time)?"""
    if not isinstance(getattr(obj, "name", None), str) or isinstance(obj, type):
        return False
    models = getattr(obj, "models", None)
    if not isinstance(models, tuple | list) or not all(isinstance(m, str) for m in models):
        return False
    methods = ("canonical", "queries", "run_batch", "error_row", "output_line")
    return all(callable(getattr(obj, m, None)) for m in methods)


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register the kinds of the entry points in ``group``; the names of those loaded.

    Each failure is logged once, kept for :func:`catalogue`, and skipped."""
    loaded: list[str] = []
    try:
        entries = importlib.metadata.entry_points(group=group)
    except Exception as exc:  # a malformed installed distribution's metadata
        log.warning("cannot list the %s entry points: %s", group, one_line(str(exc), 300))
        return loaded
    for entry in entries:
        where = f"{group} entry point {entry.name} = {entry.value}"
        try:
            obj = entry.load()
            kind = obj if _is_kind(obj) else obj() if callable(obj) else obj
            if not _is_kind(kind):
                raise TypeError(
                    f"it gave a {type(kind).__name__}, not a job kind (an ImageModel, or an "
                    "object with name, models, canonical, queries, run_batch, error_row, "
                    "output_line)"
                )
            register(kind)
            for model in kind.models:
                owner, _ = resolve(model)
                if owner is not kind:
                    log.warning("%s: model %r is served by %s already", where, model, owner.name)
        except (Exception, SystemExit) as exc:  # a plug-in's import may raise anything
            why = one_line(f"{type(exc).__name__}: {exc}", 300)
            _SKIPPED[entry.name] = why
            log.warning("%s skipped: %s", where, why)
            continue
        loaded.append(kind.name)
        log.info("%s: job kind %s serves %s", where, kind.name, ", ".join(kind.models) or "-")
    return loaded


register(ImageClassification())
register(Noop())
register(PacedNoop())
load_entry_points()
