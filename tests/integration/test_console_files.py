"""Files travel with the console: LOCAL paths are the console's, never a node's.

The console runs in a mount namespace of its own (``unshare -m``) with a private
tmpfs over a directory that also exists, empty, for the nodes.  Everything the
console puts comes from that tmpfs and everything it gets lands there; the nodes
cannot see a byte of it.  If a node opened the console's paths, the put would fail
(the file is not there for the node) and the get would land outside the tmpfs.

A second test sends the node a raw console request naming a local path, as an
attacker or an old console would: it is refused, and nothing is read or written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.localcluster import REPO_ROOT, LocalCluster, _child_env, wait_for
from scripts.samples import random_file

pytestmark = pytest.mark.integration

# What the console does inside its namespace: make files on the private tmpfs, put
# them, get them back, read two versions, run a job and fetch its output, then print
# the digests of what it read and of what it wrote, as one line of JSON.
NAMESPACE_SCRIPT = r"""
import hashlib, json, os, subprocess, sys, time
private, config, node = sys.argv[1:4]

def console(*args):
    out = subprocess.run(
        [sys.executable, "-m", "console", "--node", node, "--config", config, "--json", *args],
        capture_output=True, text=True, timeout=60,
    )
    if out.returncode != 0:
        raise SystemExit(f"console {' '.join(args)}: {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)

def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()

src = os.path.join(private, "src.bin")
with open(src, "wb") as f:
    f.write(os.urandom(3_000_000))
os.makedirs(os.path.join(private, "dir", "sub"))
for i, rel in enumerate(["dir/a.txt", "dir/sub/b.txt"]):
    with open(os.path.join(private, rel), "w") as f:
        f.write(f"item {i}\n")
report = {"src": sha(src)}
report["put"] = console("put", src, "private/src.bin")
report["put_dir"] = console("put-dir", os.path.join(private, "dir"), "items")
with open(src, "ab") as f:
    f.write(b"second version\n")
report["src2"] = sha(src)
report["put2"] = console("put", src, "private/src.bin")
report["get"] = console("get", "private/src.bin", os.path.join(private, "got.bin"))
report["got"] = sha(os.path.join(private, "got.bin"))
report["versions"] = console("get-versions", "private/src.bin", "2", os.path.join(private, "v.txt"))
report["v_text_head"] = [
    line.decode() for line in open(os.path.join(private, "v.txt"), "rb").read().split(b"\n")
    if line.startswith(b"=====")
]
job = console("C4", "submit-job", "noop", "items/*")
deadline = time.time() + 60
while console("C4", "status", job["job_id"])["state"] != "done":
    if time.time() > deadline:
        raise SystemExit("the job did not finish")
    time.sleep(0.5)
report["output"] = console("C4", "get-output", job["job_id"], os.path.join(private, "out.jsonl"))
report["output_lines"] = [json.loads(l) for l in open(os.path.join(private, "out.jsonl"))]
# The plots of the job: drawn by the console, written on its own disk.
report["plot"] = console("plot", job["job_id"], os.path.join(private, "plots"))
report["png_heads"] = [
    open(os.path.join(private, "plots", n), "rb").read(8).hex()
    for n in ("busy.png", "throughput.png")
]
bad = subprocess.run(
    [sys.executable, "-m", "console", "--node", node, "--config", config, "plot", "job-99",
     os.path.join(private, "nowhere")],
    capture_output=True, text=True, timeout=60,
)
report["plot_unknown"] = [bad.returncode, bad.stderr.strip().splitlines()]
report["private_files"] = sorted(
    os.path.relpath(os.path.join(d, f), private) for d, _, fs in os.walk(private) for f in fs
)
print(json.dumps(report))
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_console_in_its_own_mount_namespace_puts_and_gets_its_own_files(
    tmp_path: Path,
) -> None:
    unshare = shutil.which("unshare")
    assert unshare is not None, "util-linux's unshare is needed for this test"
    private = tmp_path / "private"
    private.mkdir()
    script = tmp_path / "console_side.py"
    script.write_text(NAMESPACE_SCRIPT)
    with LocalCluster(4, cluster={"transfer": "tcp"}) as c:
        c.wait_converged(timeout=30)
        node = c.node("H2").addr
        shell = (
            f"mount -t tmpfs -o size=64m console-private {private} && "
            f"exec {sys.executable} {script} {private} {c.config_path} {node}"
        )
        done = subprocess.run(
            [unshare, "--mount", "--propagation", "private", "sh", "-c", shell],
            cwd=REPO_ROOT,
            env=_child_env(),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])

        # Nothing the console made or fetched is visible outside its namespace.
        assert list(private.iterdir()) == []
        assert sorted(report["private_files"]) == sorted(
            [
                "src.bin",
                "dir/a.txt",
                "dir/sub/b.txt",
                "got.bin",
                "v.txt",
                "out.jsonl",
                "plots/busy.png",
                "plots/throughput.png",
            ]
        )
        # The put came from the console's file, the get landed on the console's disk.
        assert report["put"]["name"] == "private/src.bin" and len(report["put"]["replicas"]) >= 3
        assert report["put2"]["version"] == report["put"]["version"] + 1
        assert report["got"] == report["src2"]
        assert report["get"]["version"] == report["put2"]["version"]
        assert report["put_dir"]["files"] == ["items/a.txt", "items/sub/b.txt"]
        assert report["versions"]["versions"] == [
            report["put2"]["version"],
            report["put"]["version"],
        ]
        assert report["v_text_head"] == [
            f"===== private/src.bin version {v} =====" for v in report["versions"]["versions"]
        ]
        assert report["output"]["results"] == 2
        assert sorted(row["input"] for row in report["output_lines"]) == [
            "items/a.txt",
            "items/sub/b.txt",
        ]
        # plot: the console drew the job's two PNG files in its own directory.
        plot = report["plot"]
        assert plot["files"] == [f"{private}/plots/busy.png", f"{private}/plots/throughput.png"]
        assert plot["job_id"] == report["output"]["job_id"] and plot["queries"] == 2
        assert plot["batches"] >= 1 and plot["workers"]
        assert report["png_heads"] == ["89504e470d0a1a0a"] * 2
        code, lines = report["plot_unknown"]
        assert code == 1 and lines == ["error: no such job: job-99"]
        # And the cluster holds the console's bytes: read them back from outside.
        back = tmp_path / "back.bin"
        c.console("H4", "get", "private/src.bin", str(back))
        assert _sha(back) == report["src2"]


def test_a_node_refuses_a_request_that_names_a_local_path(tmp_path: Path) -> None:
    """A raw ConsoleRequest for put/get is refused; the node reads and writes nothing."""
    import trio

    from config.topology import load_config
    from net.messages import ConsoleReply, ConsoleRequest
    from net.rpc import call, frame_codec

    secret_file = random_file(tmp_path / "secret.bin", 1000)
    target = tmp_path / "written-by-node.bin"
    with LocalCluster(4, cluster={"transfer": "tcp"}) as c:
        c.wait_converged(timeout=30)
        config = load_config(str(c.config_path))
        frames = frame_codec(config.secret_bytes)
        addr = (c.node("H1").host, c.node("H1").port)
        c.console("H1", "put", str(secret_file), "probe/file")
        requests = [
            ConsoleRequest("put", (str(secret_file), "probe/stolen")),
            ConsoleRequest("put-dir", (str(tmp_path), "probe/dir")),
            ConsoleRequest("get", ("probe/file", str(target))),
            ConsoleRequest("get-versions", ("probe/file", "1", str(target))),
            ConsoleRequest("C4", ("get-output", "job-1", str(target))),
        ]
        for request in requests:
            reply = trio.run(call, addr, frames, request)
            assert isinstance(reply, ConsoleReply) and not reply.ok, request
            assert "never open a local path named in a request" in reply.error
            assert "\n" not in reply.error
        assert not target.exists()
        files = wait_for(lambda: c.console("H2", "ls-all", "probe/*")["files"], 5, "ls-all")
        assert files == ["probe/file"]
