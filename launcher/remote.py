"""What the launcher runs on each host: start, look at and stop processes by pid file.

The launcher sends this file's text over the SSH channel to the host's Python
(``python - SPEC``: the program on stdin, what to do as one JSON argument) and reads
one JSON line back on stdout.  It is sent rather than imported on the host, so that a
host whose checkout is older than the launcher's still runs the launcher's version.
It uses only the standard library and names no host: everything comes in SPEC.

SPEC: ``{"action": "prepare" | "start" | "status" | "stop", "dirs": [...],
"procs": [{"name", "argv", "cwd", "log", "pid_file"}], "env": {...}, "grace": S,
"tail": N}``.  Paths may start with ``~/`` (this user's home here).

A pid file holds one number.  A process counts as the one a pid file names only if
that pid is alive (not a zombie) and its command line is exactly the argv that
started it: a pid reused by another program after a reboot is not mistaken for a
node, and is never signalled.  Each process leads a session of its own (setsid), so
``stop`` signals its whole process group (a node's inference workers too): TERM, then
KILL after ``grace`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

# How long start watches what it started: a process that dies at once (a bad
# interpreter, a port in use, an import error) is reported with its log right away.
START_WATCH = 0.5


def expand(path: str) -> str:
    """``~`` and ``~/...`` are this user's home; anything else is as given."""
    return os.path.expanduser(path) if path == "~" or path.startswith("~/") else path


def read_pid(pid_file: str) -> int | None:
    """The pid a pid file holds, or None when there is none or it is not a number."""
    try:
        with open(pid_file) as f:
            text = f.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def cmdline(pid: int) -> list[str] | None:
    """The command line of a live process, or None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # The state follows the command name in parentheses, which may hold anything.
        if stat[stat.rindex(b")") + 2 :].startswith(b"Z"):
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
        return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]
    except (OSError, ValueError):
        pass
    if os.path.isdir("/proc"):
        return None  # Linux: no /proc entry means no process
    # Elsewhere (BSD, macOS): ask ps for the state and the arguments.
    out = subprocess.run(
        ["ps", "-o", "state=", "-o", "args=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not out or out.startswith("Z"):
        return None
    return out.split(None, 1)[1].split() if " " in out else []


def matches(found: list[str] | None, argv: list[str]) -> bool:
    """Whether a process's command line is the one ``argv`` started."""
    if found is None:
        return False
    return found == argv or " ".join(found) == " ".join(argv)


def running(proc: dict[str, Any]) -> int | None:
    """The pid of ``proc`` if the process its pid file names is alive and is ``proc``."""
    pid = read_pid(expand(proc["pid_file"]))
    if pid is None:
        return None
    return pid if matches(cmdline(pid), [expand(a) for a in proc["argv"]]) else None


def tail(path: str, lines: int) -> list[str]:
    """The last ``lines`` lines of a log file (at most 16 KiB of it)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:] if lines > 0 else []


def write_pid(pid_file: str, pid: int) -> None:
    tmp = f"{pid_file}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n")
    os.replace(tmp, pid_file)


def prepare(spec: dict[str, Any]) -> dict[str, Any]:
    for d in spec.get("dirs", []):
        os.makedirs(expand(d), mode=0o700, exist_ok=True)
    return {"home": os.path.expanduser("~"), "python": sys.version.split()[0]}


def start(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(spec.get("env", {}))
    results: dict[str, dict[str, Any]] = {}
    started: dict[str, subprocess.Popen[bytes]] = {}
    for proc in spec["procs"]:
        name = proc["name"]
        pid = running(proc)
        if pid is not None:
            results[name] = {"state": "running", "pid": pid}
            continue
        log = expand(proc["log"])
        pid_file = expand(proc["pid_file"])
        for d in (os.path.dirname(log), os.path.dirname(pid_file)):
            os.makedirs(d, mode=0o700, exist_ok=True)
        try:
            with open(log, "ab") as out:
                out.write(f"--- launcher: starting {name} at {time.ctime()}\n".encode())
                out.flush()
                child = subprocess.Popen(
                    [expand(a) for a in proc["argv"]],
                    cwd=expand(proc["cwd"]),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        except OSError as e:
            results[name] = {"state": "failed", "reason": f"cannot start: {e.strerror or e}"}
            continue
        write_pid(pid_file, child.pid)
        started[name] = child
        results[name] = {"state": "started", "pid": child.pid}
    deadline = time.monotonic() + START_WATCH
    while started and time.monotonic() < deadline:
        time.sleep(0.05)
        for name, child in list(started.items()):
            code = child.poll()
            if code is not None:
                proc = next(p for p in spec["procs"] if p["name"] == name)
                results[name] = {
                    "state": "exited",
                    "pid": child.pid,
                    "code": code,
                    "log_tail": tail(expand(proc["log"]), spec.get("tail", 20)),
                }
                del started[name]
    return {"procs": results}


def status(spec: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    for proc in spec["procs"]:
        pid = running(proc)
        log = expand(proc["log"])
        if pid is not None:
            results[proc["name"]] = {"state": "running", "pid": pid, "log": log}
        else:
            results[proc["name"]] = {
                "state": "stopped",
                "pid": read_pid(expand(proc["pid_file"])),
                "log": log,
                "log_tail": tail(log, spec.get("tail", 0)),
            }
    return {"procs": results}


def _signal(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)  # the process and whatever it started
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop(spec: dict[str, Any]) -> dict[str, Any]:
    grace = float(spec.get("grace", 10.0))
    results: dict[str, dict[str, Any]] = {}
    live: dict[str, tuple[int, list[str]]] = {}
    for proc in spec["procs"]:
        pid = running(proc)
        if pid is None:
            results[proc["name"]] = {"state": "not running"}
            with_pid = read_pid(expand(proc["pid_file"]))
            if with_pid is not None:
                results[proc["name"]]["pid"] = with_pid
            continue
        argv = [expand(a) for a in proc["argv"]]
        live[proc["name"]] = (pid, argv)
        try:
            _signal(pid, signal.SIGTERM)
        except PermissionError as e:
            results[proc["name"]] = {"state": "failed", "pid": pid, "reason": str(e)}
            del live[proc["name"]]
    began = time.monotonic()
    while live and time.monotonic() - began < grace:
        for name, (pid, argv) in list(live.items()):
            if not matches(cmdline(pid), argv):
                seconds = round(time.monotonic() - began, 2)
                results[name] = {"state": "stopped", "pid": pid, "seconds": seconds}
                del live[name]
        if live:
            time.sleep(0.05)
    for name, (pid, _argv) in live.items():
        _signal(pid, signal.SIGKILL)
        results[name] = {"state": "killed", "pid": pid, "seconds": round(grace, 2)}
    for proc in spec["procs"]:
        if results[proc["name"]]["state"] in ("stopped", "killed", "not running"):
            with contextlib.suppress(OSError):
                os.unlink(expand(proc["pid_file"]))
    return {"procs": results}


ACTIONS = {"prepare": prepare, "start": start, "status": status, "stop": stop}


def main(argv: list[str]) -> int:
    try:
        spec = json.loads(argv[1])
        result = ACTIONS[spec["action"]](spec)
    except Exception as e:  # one line back to the launcher, never a traceback
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
