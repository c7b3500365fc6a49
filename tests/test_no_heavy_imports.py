"""Membership, the introducer and the console must never load torch (nor matplotlib,
which only the console's ``plot`` command imports, when it draws).

The failure detector has to answer pings while inference runs, and a node that
runs no job should start in well under a second; both rule out importing torch
(or anything that drags it in) outside the inference worker.
"""

from __future__ import annotations

import subprocess
import sys

from scripts.localcluster import REPO_ROOT

LIGHT_MODULES = [
    "main",
    "node.app",
    "membership.core",
    "membership.service",
    "introducer.__main__",
    "introducer.service",
    "console.__main__",
    "inference.service",
    "inference.leader",
    "inference.standby",
    "inference.worker",
    "inference.client",
    "inference.kinds",
    "inference.kinds.custom",
    "inference.torchvision_models",
    "inference.scheduler",
    "inference.models",
    "inference.worker_client",
    "console.repl",
    "console.render",
    "net.rpc",
    "config.topology",
    "config.llm",
    "inference.grading",
    "inference.kinds.grading",
    "inference.llama_worker",
    "inference.plots",  # imports matplotlib only when it draws
    "node.commands",
]


def test_light_modules_do_not_import_torch() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {LIGHT_MODULES!r}:\n"
        "    importlib.import_module(m)\n"
        "heavy = {'torch', 'torchvision', 'numpy', 'llama_cpp', 'matplotlib'}\n"
        "found = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(','.join(found))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout.strip()}"
