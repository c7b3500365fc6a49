"""Turning message dataclasses into msgpack and back, checking every field's type.

A message is a frozen dataclass registered with :func:`message` under a numeric tag.
On the wire it is the msgpack array ``[tag, version, field1, field2, ...]``; a
nested record (a dataclass that is not itself a message) is the array of its fields.
Decoding checks each value against the field's annotation, so a peer that sends a
string where a port belongs is refused with :class:`DecodeError` rather than
breaking the code that reads the message later.

Supported annotations: int, float, str, bytes, bool, ``X | None``, ``tuple[X, ...]``,
``dict[str, Any]`` / ``Any`` (passed through as msgpack gives it) and nested records.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar, TypeVar, Union

import msgpack


class DecodeError(ValueError):
    """Bytes that are not a well-formed message of a known type."""


_BY_TAG: dict[int, type[Any]] = {}
_HINTS: dict[type[Any], list[tuple[str, Any]]] = {}
# Records whose every field is a plain scalar, decoded without the general walk (an
# SDFS inventory page is thousands of VersionRecords): see _flat.
_FLAT: dict[type[Any], list[tuple[str, Any]] | None] = {}
_SCALARS = (int, str, bytes, bool, float)

T = TypeVar("T")


def message(tag: int, version: int = 1) -> typing.Callable[[type[T]], type[T]]:
    """Register a frozen dataclass as the message with this tag.

    Tags are part of the protocol: never reuse or renumber one.  A message whose
    layout changes gets a higher ``version``; a receiver drops versions newer than
    it knows.
    """

    def register(cls: type[T]) -> type[T]:
        if tag in _BY_TAG:
            raise ValueError(f"tag {tag} is already {_BY_TAG[tag].__name__}")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        cls.TAG = tag  # type: ignore[attr-defined]
        cls.VERSION = version  # type: ignore[attr-defined]
        _BY_TAG[tag] = cls
        return cls

    return register


def registered() -> dict[int, type[Any]]:
    """Every message type by tag (for round-trip tests and docs)."""
    return dict(_BY_TAG)


def _hints(cls: type[Any]) -> list[tuple[str, Any]]:
    cached = _HINTS.get(cls)
    if cached is None:
        hints = typing.get_type_hints(cls)
        cached = [(f.name, hints[f.name]) for f in dataclasses.fields(cls)]
        _HINTS[cls] = cached
    return cached


def _flat(cls: type[Any]) -> list[tuple[str, Any]] | None:
    """``cls``'s fields if every one is int, str, bytes, bool or float; else None."""
    if cls not in _FLAT:
        hints = _hints(cls)
        _FLAT[cls] = hints if all(h in _SCALARS for _, h in hints) else None
    return _FLAT[cls]


def to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [to_plain(getattr(value, name)) for name, _ in _hints(type(value))]
    if isinstance(value, tuple):
        return [to_plain(v) for v in value]
    return value


def encode(msg: Any) -> bytes:
    """msgpack bytes of a registered message."""
    cls = type(msg)
    if cls not in _BY_TAG.values():
        raise TypeError(f"{cls.__name__} is not a registered message")
    body = [cls.TAG, cls.VERSION, *to_plain(msg)]
    return msgpack.packb(body, use_bin_type=True)  # type: ignore[no-any-return]


def _from_plain(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _from_plain(value, arg, where)
            except DecodeError as e:
                errors.append(str(e))
        raise DecodeError(errors[0] if errors else f"{where}: unexpected None")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise DecodeError(f"{where}: expected an array")
        if len(args) == 2 and args[1] is Ellipsis:
            item = args[0]
            if isinstance(item, type) and dataclasses.is_dataclass(item):
                return tuple(_build(item, v, f"{where}[{i}]") for i, v in enumerate(value))
            return tuple(_from_plain(v, item, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise DecodeError(f"{where}: expected {len(args)} items")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_from_plain(v, a, f"{where}[{i}]") for i, (a, v) in pairs)
    if origin is dict:
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected a map")
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DecodeError(f"{where}: expected a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DecodeError(f"{where}: expected an integer")
        return value
    if hint in (str, bytes, bool):
        if type(value) is not hint:
            raise DecodeError(f"{where}: expected {hint.__name__}")
        return value
    raise DecodeError(f"{where}: unsupported field type {hint!r}")


def _build(cls: type[T], values: Any, where: str) -> T:
    flat = _flat(cls)
    if flat is not None and isinstance(values, list) and len(values) == len(flat):
        # Every value of exactly its field's type (an int where a float goes too):
        # what the general walk below accepts, without it.  Anything else takes
        # the walk, which says what is wrong.
        for (_, hint), v in zip(flat, values, strict=True):
            t = type(v)
            if t is not hint and not (hint is float and t is int):
                break
        else:
            return cls(
                *[float(v) if h is float else v for (_, h), v in zip(flat, values, strict=True)]
            )
    hints = _hints(cls)
    if not isinstance(values, list) or len(values) != len(hints):
        raise DecodeError(f"{where}: expected {len(hints)} fields for {cls.__name__}")
    kwargs = {
        name: _from_plain(v, hint, f"{cls.__name__}.{name}")
        for (name, hint), v in zip(hints, values, strict=True)
    }
    return cls(**kwargs)


def decode(data: bytes) -> Any:
    """The message in ``data``; :class:`DecodeError` for anything else."""
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise DecodeError(f"not msgpack: {type(e).__name__}") from None
    if not isinstance(body, list) or len(body) < 2:
        raise DecodeError("not a [tag, version, ...] array")
    tag, version = body[0], body[1]
    # bool is an int to Python but not to msgpack; fields refuse it too.
    if any(not isinstance(x, int) or isinstance(x, bool) for x in (tag, version)):
        raise DecodeError("tag and version must be integers")
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise DecodeError(f"unknown message tag {tag}")
    if version > cls.VERSION:
        raise DecodeError(f"{cls.__name__} version {version} is newer than ours ({cls.VERSION})")
    return _build(cls, body[2:], cls.__name__)


class Message:
    """Marker base for registered messages (for type hints only)."""

    TAG: ClassVar[int]
    VERSION: ClassVar[int]
