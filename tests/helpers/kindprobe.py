"""A worker-process kind function for tests: what the process has imported."""

from __future__ import annotations

import sys
from typing import Any


def modules(state: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    prefixes = set(args.get("prefixes", ()))
    return {"loaded": sorted(m for m in sys.modules if m.split(".")[0] in prefixes)}
