"""Bounds on the numbers that arrive from outside: consoles, and peers' messages.

The console's command table refuses bad text before it becomes a number; a peer's
message skips the table, so every service checks the numbers it is sent against
these bounds at its entry point and answers ``Failure(INVALID)`` (one line) for one
out of range.  The bounds are what a person could mean, with room to spare.
"""

from __future__ import annotations

import math

from net.errors import Invalid

# Version numbers of SDFS files.  2**53 keeps them exact as JSON numbers (a float's
# mantissa) and leaves every later grant (highest + 1) far inside msgpack's 64 bits.
MAX_VERSION = 2**53
# Sizes in bytes of SDFS files (8 PiB): the same bound as versions, for the same reason.
MAX_SIZE = 2**53
# Queries per batch (C3).
MAX_BATCH = 4096
# Inputs sampled for one job (C4 submit-job COUNT).
MAX_COUNT = 10_000_000
# Characters in a glob (ls-all, C4 submit-job): names are at most 200 bytes quoted.
MAX_PATTERN = 1024


def check_range(value: int, lo: int, hi: int, what: str) -> int:
    """``value`` if it is a whole number from ``lo`` to ``hi``; Invalid otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(f"{what} must be a whole number from {lo} to {hi}, got {_show(value)}")
    return value


def check_finite(value: float, lo: float, hi: float, what: str) -> float:
    """``value`` if it is a finite number from ``lo`` to ``hi``; Invalid otherwise."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not lo <= value <= hi:
        raise Invalid(f"{what} must be a number from {lo:g} to {hi:g}, got {_show(value)}")
    return float(value)


def check_pattern(pattern: str, what: str = "pattern") -> str:
    """``pattern`` if it is a glob of at most MAX_PATTERN characters; Invalid otherwise."""
    if len(pattern) > MAX_PATTERN:
        raise Invalid(f"{what} is {len(pattern)} characters long (limit {MAX_PATTERN})")
    return pattern


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
