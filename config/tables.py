"""Checks shared by the cluster file's tables (:mod:`config.topology`, :mod:`config.llm`)."""

from __future__ import annotations

from typing import Any

Schema = dict[str, type | tuple[type, ...]]


class ConfigError(ValueError):
    """A cluster file that cannot be used; the message names the key."""


def check_type(key: str, value: Any, expected: type | tuple[type, ...]) -> None:
    # bool is an int in Python; a port of `true` is still a mistake.
    ok = not (isinstance(value, bool) and expected is not bool) and isinstance(value, expected)
    if not ok:
        names = (
            " or ".join(t.__name__ for t in expected)
            if isinstance(expected, tuple)
            else expected.__name__
        )
        raise ConfigError(f"{key}: expected {names}, got {value!r}")


def check_table(prefix: str, table: Any, schema: Schema) -> None:
    """``table`` is a table whose keys are all in ``schema``, each of its type."""
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: expected a table")
    for key, value in table.items():
        full = f"{prefix}.{key}"
        if key not in schema:
            raise ConfigError(f"{full}: unknown key")
        check_type(full, value, schema[key])
