"""The typed values the Python client returns, beside those the cluster already has.

Where the cluster's typed APIs already have a result type it is used as is
(:class:`PutResult`, :class:`GetResult`, :class:`FileStatus`, :class:`VersionsResult`
from :mod:`sdfs.client`; :class:`JobStatus`, :class:`BatchSizeSet` from
:mod:`net.messages`; :class:`Output` from :mod:`inference.client`; all of them are
importable from :mod:`idunno`).  The commands
whose replies are dictionaries on the wire (list_mem, C1, C2, C5) get a dataclass
here, built from the keys /work/shared/INTERFACE.md promises; keys a newer node adds
are kept in ``extra``.  A job's result rows stay dictionaries: their shape is the
job kind's (``{"input", "top5"}`` for an image model, ``{"input", "score", ...}`` for
a grading model), exactly the lines of ``C4 get-output``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Assignment", "Member", "Members", "ModelLatency", "ModelRate", "Row"]

# One line of a job's output: {"input": ..., "top5": [...]} for an image model.
Row = dict[str, Any]


def _extra(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


@dataclass(frozen=True)
class Member:
    name: str
    host: str
    port: int
    status: str  # alive or suspect
    incarnation: int


@dataclass(frozen=True)
class Members:
    """``list_mem``: the node asked, the leader (None while there is none), the members."""

    self_name: str
    leader: str | None
    members: tuple[Member, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Members:
        return cls(
            str(data["self"]),
            data.get("leader"),
            tuple(
                Member(m["name"], m["host"], int(m["port"]), m["status"], int(m["incarnation"]))
                for m in data["members"]
            ),
        )


_RATE = ("query_rate", "query_count")
_LATENCY = ("mean", "std", "median", "p90", "p95", "p99")


@dataclass(frozen=True)
class ModelRate:
    """C1 for one model: queries per second over the last 10 s, and queries done."""

    query_rate: float
    query_count: int
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelRate:
        return cls(float(data["query_rate"]), int(data["query_count"]), _extra(data, _RATE))


@dataclass(frozen=True)
class ModelLatency:
    """C2 for one model: query processing time in seconds."""

    mean: float
    std: float
    median: float
    p90: float
    p95: float
    p99: float
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelLatency:
        mean, std, median, p90, p95, p99 = (float(data[k]) for k in _LATENCY)
        return cls(mean, std, median, p90, p95, p99, _extra(data, _LATENCY))


@dataclass(frozen=True)
class Assignment:
    """C5 for one job: its model and the workers running its batches now."""

    model: str
    workers: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Assignment:
        return cls(str(data["model"]), tuple(data["workers"]))
