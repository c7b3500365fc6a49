"""``python -m launcher up|status|down --config FILE``: a room of machines from one.

Exit status: 0 when every process is up (``up``), running (``status``) or stopped
(``down``); 1 when any is not (the report says which and why); 2 for a bad cluster
file or option, or an operator key that cannot be used.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from config.topology import ConfigError, check_secret, config_from_dict
from launcher.plan import (
    DEFAULT_RUN_ROOT,
    Login,
    Options,
    Plan,
    PlanError,
    Proc,
    Row,
    check_config_for_launch,
    cluster_name,
    joined,
    make_plan,
    render_table,
    report_json,
    report_ok,
)
from launcher.ssh import Host, LaunchError, load_key

REPO_ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LOG_TAIL = 20  # lines of a failed process's log in the report
POLL = 0.3  # seconds between looks while waiting for nodes
LIVENESS_EVERY = 2.0  # seconds between pid checks over SSH while waiting (a Python run each)
T = TypeVar("T")

DESCRIPTION = """\
Start, inspect and stop a whole cluster over SSH from this machine.

  up      log in to every host of the cluster file, upload the cluster file (and
          its secret_file), start the introducer, then every node, detached; wait
          until each node answers and is a member; print who came up.  A process
          already running is reported, not started twice.
  status  which processes run (pid alive, port answering, member), and their logs.
  down    stop every process the launcher started: TERM, then KILL after --grace.

Each host needs: this repository at --repo with its Python at --python (default:
the same paths as here), an sshd that accepts the operator key (--identity, default
[ssh] key_file) for --user (default [ssh] user), and its host key in --known-hosts
(default [ssh] known_hosts; add it with ssh-keyscan and check the fingerprint).
On each host the launcher writes to --run-dir (default ~/.idunno/CLUSTER, CLUSTER
the cluster file's name without .toml): cluster.toml, and per process (NAME: a node's
name, or introducer) logs/NAME.log, pids/NAME.pid and data/NAME/.  See the README,
"Running on a room of machines".
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m launcher",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 all up/running/stopped, 1 some not (see the report), "
        "2 bad cluster file, option or key.",
    )
    p.add_argument("command", choices=("up", "status", "down"))
    p.add_argument("--config", required=True, metavar="FILE", help="the TOML cluster file")
    p.add_argument(
        "--repo",
        metavar="DIR",
        default=str(REPO_ROOT),
        help="this repository on every host (default: %(default)s)",
    )
    p.add_argument(
        "--python",
        metavar="PATH",
        default=sys.executable,
        help="the Python on every host (default: %(default)s)",
    )
    p.add_argument("--identity", metavar="KEY", help="operator's SSH key (default: [ssh] key_file)")
    p.add_argument(
        "--known-hosts", metavar="FILE", help="host keys to check (default: [ssh] known_hosts)"
    )
    p.add_argument("--user", metavar="U", help="login name on the hosts (default: [ssh] user)")
    p.add_argument(
        "--run-dir", metavar="DIR", help=f"on every host (default: {DEFAULT_RUN_ROOT}/CLUSTER)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="up: seconds to wait for every node (default: %(default)g)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="S",
        help="down: seconds between TERM and KILL (default: %(default)g)",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=16,
        metavar="N",
        help="hosts handled at once (default: %(default)d)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one line of JSON")
    return p


def load(path: str) -> tuple[Any, dict[str, Any]]:
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read cluster file: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    config = config_from_dict(raw, p.parent, os.environ)
    check_config_for_launch(config)
    check_secret(config)
    return config, raw


def options_from(args: argparse.Namespace, config: Any) -> Options:
    return Options(
        repo=args.repo,
        python=args.python,
        identity=os.path.expanduser(args.identity or config.ssh.key_file),
        known_hosts=os.path.expanduser(args.known_hosts or config.ssh.known_hosts),
        user=args.user or config.ssh.user,
        run_dir=args.run_dir or f"{DEFAULT_RUN_ROOT}/{cluster_name(args.config)}",
        timeout=args.timeout,
        grace=args.grace,
        parallel=args.parallel,
    )


class Progress:
    """Lines on stderr while the command runs, each with the seconds since it began."""

    def __init__(self, began: float, quiet: bool = False) -> None:
        self.began = began
        self.quiet = quiet

    def __call__(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.began:6.1f} s] {text}", file=sys.stderr, flush=True)


def parallel(fn: Callable[[Login], T], logins: Iterable[Login], workers: int) -> dict[Login, T]:
    logins = list(logins)
    if not logins:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(logins))) as pool:
        return dict(zip(logins, pool.map(fn, logins), strict=True))


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def members(proc: Proc, config_path: str) -> set[str] | None:
    """The names ``proc`` lists as alive members (``list_mem``), or None if it does not say."""
    env = {k: v for k, v in os.environ.items() if k != "IDUNNO_SECRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "console", "--node", f"{proc.host}:{proc.port}"]
    argv += ["--config", config_path, "--json", "--timeout", "5", "list_mem"]
    try:
        done = subprocess.run(
            argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=15, check=False
        )
        data = json.loads(done.stdout) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {m["name"] for m in data.get("members", []) if m.get("status") == "alive"}


class Session:
    """The SSH connections of one command, opened in parallel and closed at the end."""

    def __init__(self, plan: Plan, progress: Progress) -> None:
        self.plan = plan
        self.progress = progress
        self.hosts: dict[Login, Host] = {}
        self.errors: dict[Login, str] = {}

    def open(self, logins: Sequence[Login], *, prepare: bool) -> None:
        opts = self.plan.options
        pkey = load_key(opts.identity)  # LaunchError: the whole command cannot run

        def one(login: Login) -> Host | str:
            try:
                host = Host(
                    login,
                    user=opts.user,
                    pkey=pkey,
                    identity=opts.identity,
                    known_hosts=opts.known_hosts,
                    repo=opts.repo,
                    python=opts.python,
                )
            except LaunchError as e:
                return str(e)
            try:
                if prepare:  # status and down need neither (each run checks the host)
                    host.run(self.plan.remote_spec("prepare", []))
                    for item in self.plan.uploads:
                        host.upload(item)
            except LaunchError as e:
                host.close()
                return str(e)
            return host

        for login, got in parallel(one, logins, opts.parallel).items():
            if isinstance(got, str):
                self.errors[login] = got
                self.progress(f"{login}: {got}")
            else:
                self.hosts[login] = got

    def close(self) -> None:
        for host in self.hosts.values():
            host.close()

    def each(
        self, action: str, procs: Sequence[Proc], tail: int = 0
    ) -> dict[str, dict[str, Any] | str]:
        """``action`` on each host of ``procs`` at once: each process's answer, or why not."""
        logins = [login for login in dict.fromkeys(p.login for p in procs)]

        def one(login: Login) -> dict[str, Any] | str:
            if login in self.errors:
                return self.errors[login]
            try:
                spec = self.plan.remote_spec(action, self.plan.on(login, procs), tail)
                return dict(self.hosts[login].run(spec, timeout=self.plan.options.grace + 60))
            except LaunchError as e:
                return str(e)

        out: dict[str, dict[str, Any] | str] = {}
        for login, answer in parallel(one, logins, self.plan.options.parallel).items():
            for p in self.plan.on(login, procs):
                out[p.name] = answer if isinstance(answer, str) else answer["procs"][p.name]
        return out


# --- up --------------------------------------------------------------------------------


def _failed(proc: Proc, reason: str, answer: dict[str, Any] | None = None) -> Row:
    answer = answer or {}
    return Row.of(
        proc,
        "failed",
        pid=answer.get("pid"),
        reason=reason,
        log=proc.log,
        log_tail=list(answer.get("log_tail", [])),
    )


def _exited(proc: Proc, answer: dict[str, Any], what: str = "exited") -> Row:
    """A process that died: the reason ends with its log's last line (its error, as a rule)."""
    last = next((line.strip() for line in reversed(answer.get("log_tail", [])) if line.strip()), "")
    if len(last) > 200:
        last = last[:197] + "..."
    return _failed(proc, f"{what}: {last}" if last else what, answer)


def _started(proc: Proc, answer: dict[str, Any] | str) -> Row | None:
    """The row for a start that already settled (None: it is starting)."""
    if isinstance(answer, str):
        return _failed(proc, answer)
    if answer["state"] == "running":
        return Row.of(proc, "already running", pid=answer["pid"], log=proc.log)
    if answer["state"] == "exited":
        return _exited(proc, answer, f"exited at once with status {answer['code']}")
    if answer["state"] == "failed":
        return _failed(proc, answer["reason"])
    return None


def up(plan: Plan, config_path: str, progress: Progress) -> list[Row]:
    session = Session(plan, progress)
    try:
        session.open(plan.logins, prepare=True)
        rows: dict[str, Row] = {}
        intro = plan.introducer
        answer = session.each("start", [intro])[intro.name]
        row = _started(intro, answer)
        if row is None:
            pid = answer["pid"] if isinstance(answer, dict) else None
            progress(f"introducer started on {intro.host} (pid {pid})")
            row = wait_introducer(session, intro, pid, time.monotonic() + plan.options.timeout)
            row.seconds = round(time.monotonic() - progress.began, 2)
        rows[intro.name] = row
        if intro.login not in session.errors:
            progress(f"introducer: {row.state} {row.reason}".rstrip())
        if row.state == "failed":
            for p in plan.nodes:
                rows[p.name] = _failed(p, "not started: the introducer is not up")
            return [rows[p.name] for p in plan.procs]

        answers = session.each("start", plan.nodes)
        pending: dict[str, tuple[Proc, int]] = {}
        for p in plan.nodes:
            settled = _started(p, answers[p.name])
            if settled is None:
                pending[p.name] = (p, int(answers[p.name]["pid"]))  # type: ignore[index]
            else:
                rows[p.name] = settled
                if p.login not in session.errors:  # those were said as the logins failed
                    progress(f"{p.name}: {settled.state} {settled.reason}".rstrip())
        if pending:
            progress(f"started {len(pending)} node(s); waiting for them to answer and join")
        rows.update(wait_nodes(session, config_path, pending, rows, progress))
        return [rows[p.name] for p in plan.procs]
    finally:
        session.close()


def wait_introducer(session: Session, intro: Proc, pid: int | None, deadline: float) -> Row:
    last_check = time.monotonic()
    while time.monotonic() < deadline:
        if port_answers(intro.host, intro.port):
            return Row.of(intro, "up", pid=pid, log=intro.log)
        if time.monotonic() - last_check >= LIVENESS_EVERY:
            last_check = time.monotonic()
            state = session.each("status", [intro], LOG_TAIL)[intro.name]
            if isinstance(state, str):
                return _failed(intro, state)
            if state["state"] != "running":
                return _exited(intro, {**state, "pid": pid})
        time.sleep(POLL)
    state = session.each("status", [intro], LOG_TAIL)[intro.name]
    tail = state if isinstance(state, dict) else None
    return _failed(intro, f"port {intro.port} did not answer in time", tail)


def wait_nodes(
    session: Session,
    config_path: str,
    pending: dict[str, tuple[Proc, int]],
    rows: dict[str, Row],
    progress: Progress,
) -> dict[str, Row]:
    """Wait until each pending node answers on its port and another member lists it."""
    plan = session.plan
    began = progress.began
    deadline = time.monotonic() + plan.options.timeout
    done: dict[str, Row] = {}
    good = {n for n, r in rows.items() if r.state in ("up", "already running")} - {"introducer"}
    last_check = time.monotonic()
    answering: set[str] = set()
    single = len(plan.nodes) == 1  # then its own list is the whole cluster
    rounds = 0
    while pending and time.monotonic() < deadline:
        if time.monotonic() - last_check >= LIVENESS_EVERY:
            last_check = time.monotonic()
            states = session.each("status", [p for p, _ in pending.values()], LOG_TAIL)
            for name, state in states.items():
                proc, pid = pending[name]
                if isinstance(state, str):
                    done[name] = _failed(proc, state)
                elif state["state"] != "running":
                    done[name] = _exited(proc, {**state, "pid": pid})
                else:
                    continue
                progress(f"{name}: failed - {done[name].reason}")
                del pending[name]
        for name, (proc, _pid) in pending.items():
            if name not in answering and port_answers(proc.host, proc.port):
                answering.add(name)
        # One list_mem a round (a console is a Python process: cheap on a quiet machine,
        # not on a busy one), from each answering node and the members in turn.
        candidates = [pending[n][0] for n in pending if n in answering]
        candidates += [p for p in plan.nodes if p.name in good]
        views: dict[str, set[str] | None] = {}
        if candidates:
            asked = candidates[rounds % len(candidates)]
            views[asked.name] = members(asked, config_path)
            rounds += 1
        for name in [n for n in pending if n in answering]:
            proc, pid = pending[name]
            if joined(name, views, single):
                seconds = round(time.monotonic() - began, 2)
                done[name] = Row.of(proc, "up", pid=pid, log=proc.log, seconds=seconds)
                good.add(name)
                del pending[name]
                progress(f"{name}: up ({len(good)} of {len(plan.nodes)})")
        if pending:
            time.sleep(POLL)
    if pending:
        states = session.each("status", [p for p, _ in pending.values()], LOG_TAIL)
        for name, (proc, pid) in pending.items():
            why = "not a member" if name in answering else f"port {proc.port} did not answer"
            state = states[name]
            tail = {**state, "pid": pid} if isinstance(state, dict) else None
            done[name] = _failed(proc, f"{why} after {plan.options.timeout:g} s", tail)
    return done


# --- status and down -------------------------------------------------------------------


def status(plan: Plan, config_path: str, progress: Progress) -> list[Row]:
    session = Session(plan, progress)
    try:
        session.open(plan.logins, prepare=False)
        states = session.each("status", plan.procs)
    finally:
        session.close()
    rows: list[Row] = []
    alive = [p for p in plan.procs if isinstance(states[p.name], dict)]
    alive = [p for p in alive if states[p.name]["state"] == "running"]  # type: ignore[index]
    answering = {p.name for p in alive if port_answers(p.host, p.port)}
    listed: set[str] | None = None
    for p in plan.nodes:
        if p.name in answering:
            listed = members(p, config_path)
            if listed is not None:
                break
    for p in plan.procs:
        state = states[p.name]
        if isinstance(state, str):
            rows.append(_failed(p, state))
            continue
        row = Row.of(p, state["state"], pid=state.get("pid"), log=state.get("log", p.log))
        if row.state == "stopped":
            row.pid = None  # a stale pid file's number is no process
        if row.state == "running":
            if p.name not in answering:
                row.reason = f"port {p.port} not answering"
            elif p.kind == "node" and listed is not None and p.name not in listed:
                row.reason = "not a member"
        rows.append(row)
    return rows


def down(plan: Plan, config_path: str, progress: Progress) -> list[Row]:
    session = Session(plan, progress)
    try:
        session.open(plan.logins, prepare=False)
        # All at once: each node leaves politely on TERM, which needs no introducer.
        states = session.each("stop", plan.procs)
    finally:
        session.close()
    rows = []
    for p in plan.procs:
        state = states[p.name]
        if isinstance(state, str):
            rows.append(_failed(p, state))
            continue
        rows.append(
            Row.of(
                p,
                state["state"],
                pid=state.get("pid"),
                reason=state.get("reason", ""),
                seconds=state.get("seconds"),
            )
        )
        progress(f"{p.name}: {state['state']}")
    return rows


COMMANDS: dict[str, Callable[[Plan, str, Progress], list[Row]]] = {
    "up": up,
    "status": status,
    "down": down,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    began = time.monotonic()
    progress = Progress(began)
    try:
        config, raw = load(args.config)
        plan = make_plan(config, raw, args.config, options_from(args, config))
        rows = COMMANDS[args.command](plan, args.config, progress)
    except (ConfigError, PlanError, LaunchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    seconds = time.monotonic() - began
    if args.json:
        print(json.dumps(report_json(args.command, rows, seconds)))
    else:
        print(render_table(args.command, rows, seconds))
    return EXIT_OK if report_ok(args.command, rows) else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
